"""The SQL contract as a plain-SQL caller meets it (issue 11): each test reproduces a defect found at
commit a65d6a1 and fails on that schema.

* update_conversion_status(): result ownership, the attempt fence, a requeue is a retry;
* create_conversion(): the idempotency key is bound to its request;
* cancel_conversion(): the owner rule; operator_cancel_conversion(): the audited path;
* register_image() and the storage-key guard: no row points into another owner's space.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from schema.queries import Q
from storage.keys import input_key

from .conftest import Factory, refused

UPDATE = ("SELECT update_conversion_status(conversion_id := %(c)s, status := %(s)s, result_image_id := %(r)s, "
          "attempt := %(a)s)")


def _one(db: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def claim_by_worker(db: psycopg.Connection[Any], conv: uuid.UUID, worker: str = "w1") -> int:
    """What the queue's claim does to one conversion; returns the attempt now held."""
    attempt = _one(db, "UPDATE conversion_jobs SET status = 'processing', attempt = attempt + 1, worker_id = %s, "
                       "started_at = now(), heartbeat_at = now() WHERE conversion_id = %s RETURNING attempt",
                   (worker, conv))
    db.execute("UPDATE conversions SET status = 'processing' WHERE id = %s", (conv,))
    return int(attempt)


def result_for(make: Factory, owner: uuid.UUID, conv: uuid.UUID | None = None, owner_type: str = "user") -> uuid.UUID:
    """A result image of ``owner``; linked to ``conv`` as the queue's completion links it."""
    image = make.result_image(owner, owner_type)
    if conv is not None:
        make.conn.execute("UPDATE images SET metadata = jsonb_build_object('conversion_id', %s::text) WHERE id = %s",
                          (str(conv), image))
    return image


def statuses(db: psycopg.Connection[Any], conv: uuid.UUID) -> tuple[Any, ...]:
    row = db.execute("SELECT c.status, c.result_image_id, j.status, j.attempt, j.retry_count FROM conversions c "
                     "JOIN conversion_jobs j ON j.conversion_id = c.id WHERE c.id = %s", (conv,)).fetchone()
    assert row is not None
    return tuple(row)


# update_conversion_status


def test_a_result_image_of_another_owner_is_refused(db: psycopg.Connection[Any], make: Factory) -> None:
    """Defect 1: Bob's running conversion completed with Alice's private result."""
    alice, *_ = make.user_conversion()
    bob, _ui, _ci, bobs = make.user_conversion()
    attempt = claim_by_worker(db, bobs)
    alices_result = result_for(make, alice)
    with refused("SA012", "image_not_accessible: "):
        db.execute(UPDATE, {"c": bobs, "s": "completed", "r": alices_result, "a": attempt})
    assert statuses(db, bobs) == ("processing", None, "processing", attempt, 0)
    db.execute(UPDATE, {"c": bobs, "s": "completed", "r": result_for(make, bob, bobs), "a": attempt})
    assert statuses(db, bobs)[0] == "completed"


def test_a_result_image_of_another_conversion_is_refused(db: psycopg.Connection[Any], make: Factory) -> None:
    user, ui, ci, first = make.user_conversion()
    second = _one(db, "SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s)",
                  (user, ui, ci))
    for conv in (first, second):
        db.execute("SELECT update_conversion_status(%s, 'processing')", (conv,))
    firsts = result_for(make, user, first)
    with refused("SA012", "image_not_accessible: "):  # linked to the first conversion
        db.execute(UPDATE, {"c": second, "s": "completed", "r": firsts, "a": None})
    unlinked = result_for(make, user)
    db.execute(UPDATE, {"c": first, "s": "completed", "r": unlinked, "a": None})
    # first use links it, so it cannot complete a second conversion
    assert _one(db, "SELECT metadata ->> 'conversion_id' FROM images WHERE id = %s", (unlinked,)) == str(first)
    with refused("SA012", "image_not_accessible: "):
        db.execute(UPDATE, {"c": second, "s": "completed", "r": unlinked, "a": None})
    assert _one(db, "SELECT count(*) FROM conversions WHERE result_image_id = %s", (unlinked,)) == 1


def test_a_worker_held_job_completes_only_with_its_current_attempt(db: psycopg.Connection[Any],
                                                                    make: Factory) -> None:
    """Defect 1: a caller without the claim completed the conversion and fenced out the real worker."""
    user, _ui, _ci, conv = make.user_conversion()
    attempt = claim_by_worker(db, conv)
    result = result_for(make, user, conv)
    with refused("SA025", "attempt_not_held: "):
        db.execute(UPDATE, {"c": conv, "s": "completed", "r": result, "a": None})
    with refused("SA025", "attempt_not_held: "):
        db.execute(UPDATE, {"c": conv, "s": "completed", "r": result, "a": attempt + 1})
    with refused("SA025", "attempt_not_held: "):
        db.execute(UPDATE, {"c": conv, "s": "pending", "r": None, "a": None})
    assert statuses(db, conv) == ("processing", None, "processing", attempt, 0)
    db.execute(UPDATE, {"c": conv, "s": "completed", "r": result, "a": attempt})
    assert statuses(db, conv) == ("completed", result, "completed", attempt, 0)
    db.execute(UPDATE, {"c": conv, "s": "completed", "r": result, "a": attempt})  # redelivery: no-op
    assert _one(db, "SELECT count(*) FROM conversion_metrics WHERE conversion_id = %s", (conv,)) == 1


def test_failing_a_worker_held_job_needs_no_attempt(db: psycopg.Connection[Any], make: Factory) -> None:
    """job_fail and jobs_rescue fail a job through update_conversion_status() without an attempt."""
    _user, _ui, _ci, conv = make.user_conversion()
    claim_by_worker(db, conv)
    db.execute("SELECT update_conversion_status(%s, 'failed', error_type := 'worker_lost')", (conv,))
    assert statuses(db, conv)[0] == "failed"


def test_an_old_attempt_cannot_fail_the_new_one(db: psycopg.Connection[Any], make: Factory) -> None:
    _user, _ui, _ci, conv = make.user_conversion()
    first = claim_by_worker(db, conv)
    db.execute(UPDATE, {"c": conv, "s": "pending", "r": None, "a": first})
    second = claim_by_worker(db, conv, "w2")
    with refused("SA025", "attempt_not_held: "):
        db.execute(UPDATE, {"c": conv, "s": "failed", "r": None, "a": first})
    assert statuses(db, conv) == ("processing", None, "processing", second, 1)


def test_a_requeue_counts_as_a_retry(db: psycopg.Connection[Any], make: Factory) -> None:
    """Defect 1: processing -> pending five times reached attempt 5 with retry_count 0, max_retries 0."""
    user, vendor = make.user(), make.vendor()
    ui, ci = make.image(user), make.image(vendor, "vendor", "cloth", is_public=True)
    conv = _one(db, "SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s, "
                    "max_retries := 2)", (user, ui, ci))
    for n in (1, 2):
        db.execute("SELECT update_conversion_status(%s, 'processing')", (conv,))
        db.execute("SELECT update_conversion_status(%s, 'pending')", (conv,))
        assert statuses(db, conv) == ("pending", None, "queued", n, n)
    db.execute("SELECT update_conversion_status(%s, 'processing')", (conv,))
    with refused("SA021", "invalid_status_transition: "):
        db.execute("SELECT update_conversion_status(%s, 'pending')", (conv,))
    assert statuses(db, conv) == ("processing", None, "processing", 3, 2)
    db.execute("SELECT update_conversion_status(%s, 'failed')", (conv,))


def test_no_retries_means_no_requeue(db: psycopg.Connection[Any], make: Factory) -> None:
    _user, _ui, _ci, conv = make.user_conversion()
    db.execute("UPDATE conversion_jobs SET max_retries = 0 WHERE conversion_id = %s", (conv,))
    db.execute("SELECT update_conversion_status(%s, 'processing')", (conv,))
    with refused("SA021", "invalid_status_transition: "):
        db.execute("SELECT update_conversion_status(%s, 'pending')", (conv,))
    assert statuses(db, conv)[3:] == (1, 0)


# create_conversion: idempotency bound to the request

CREATE = ("SELECT create_conversion(user_id := %(u)s, user_image_id := %(ui)s, cloth_image_id := %(ci)s, "
          "style_name := %(style)s, metadata := %(meta)s::jsonb, idempotency_key := %(key)s)")


def test_the_same_key_with_another_payload_is_refused(db: psycopg.Connection[Any], make: Factory) -> None:
    """Defect 4: the same key with other images returned the old conversion."""
    user, ui, ci, _ = make.user_conversion()
    other_person = make.image(user)
    args = {"u": user, "ui": ui, "ci": ci, "style": "casual", "meta": json.dumps({"a": 1, "b": [1, 2]}),
            "key": "req-1"}
    first = _one(db, CREATE, args)
    # the same request, metadata keys in another order: the same conversion
    assert _one(db, CREATE, args | {"meta": json.dumps({"b": [1, 2], "a": 1})}) == first
    for change in ({"ui": other_person}, {"style": "formal"}, {"meta": json.dumps({"a": 2})}):
        with refused("SA023", "idempotency_key_mismatch: "):
            db.execute(CREATE, args | change)
    assert _one(db, "SELECT count(*) FROM conversions WHERE idempotency_key = 'req-1'") == 1


def test_the_same_key_with_an_image_the_caller_may_not_use_is_refused(db: psycopg.Connection[Any],
                                                                       make: Factory) -> None:
    """Defect 4: the same key with someone else's private image was "accepted"."""
    user, ui, ci, _ = make.user_conversion()
    stranger = make.user()
    strangers_person = make.image(stranger)
    args = {"u": user, "ui": ui, "ci": ci, "style": None, "meta": "{}", "key": "req-2"}
    _one(db, CREATE, args)
    with refused("SA012", "image_not_accessible: "):
        db.execute(CREATE, args | {"ui": strangers_person})


def test_rows_from_before_the_hash_keep_their_key(db: psycopg.Connection[Any], make: Factory) -> None:
    """A conversion created before 0100 (no request_hash) is matched by the backfilled hash."""
    user, ui, ci, _ = make.user_conversion()
    args = {"u": user, "ui": ui, "ci": ci, "style": None, "meta": "{}", "key": "old"}
    first = _one(db, CREATE, args)
    db.execute("UPDATE conversions SET request_hash = NULL WHERE id = %s", (first,))
    db.execute("""UPDATE conversions c SET request_hash = conversion_request_hash(c.user_id, c.vendor_id,
                      c.user_image_id, c.cloth_image_id, c.conversion_type, c.style_name, j.priority, j.max_retries,
                      c.metadata)
                    FROM conversion_jobs j WHERE j.conversion_id = c.id AND c.id = %s""", (first,))
    assert _one(db, CREATE, args) == first


# cancel: the owner rule and the operator's audited path


def test_cancel_needs_the_owner(db: psycopg.Connection[Any], make: Factory) -> None:
    """Defect 2: SELECT cancel_conversion(<anyone's id>) cancelled someone else's conversion."""
    alice, _ui, _ci, conv = make.user_conversion()
    bob, vendor = make.user(), make.vendor()
    with refused("SA001", "owner_required: "):
        db.execute("SELECT cancel_conversion(%s)", (conv,))
    with refused("SA024", "not_owner: "):
        db.execute("SELECT cancel_conversion(%s, user_id := %s)", (conv, bob))
    with refused("SA024", "not_owner: "):
        db.execute("SELECT cancel_conversion(%s, vendor_id := %s)", (conv, vendor))
    with refused("SA020", "conversion_not_found: "):
        db.execute("SELECT cancel_conversion(%s, user_id := %s)", (uuid.uuid4(), alice))
    assert statuses(db, conv)[0] == "pending"
    assert _one(db, "SELECT cancel_conversion(conversion_id := %s, user_id := %s)", (conv, alice)) == "cancelled"
    assert _one(db, "SELECT cancel_conversion(conversion_id := %s, user_id := %s)", (conv, alice)) == "cancelled"


def test_a_vendor_cancels_its_own_conversion(db: psycopg.Connection[Any], make: Factory) -> None:
    vendor = make.vendor()
    ui, ci = make.image(vendor, "vendor", "user"), make.image(vendor, "vendor", "cloth")
    conv = _one(db, "SELECT create_conversion(vendor_id := %s, user_image_id := %s, cloth_image_id := %s)",
                (vendor, ui, ci))
    claim_by_worker(db, conv)
    assert _one(db, "SELECT cancel_conversion(%s, vendor_id := %s)", (conv, vendor)) == "cancelled"
    conversion_status, _result, job_status, *_ = statuses(db, conv)
    assert (conversion_status, job_status) == ("cancelled", "cancelled")


def test_operator_cancel_is_audited(db: psycopg.Connection[Any], make: Factory) -> None:
    _user, _ui, _ci, conv = make.user_conversion()
    with refused("SA004", "argument_required: "):
        db.execute("SELECT operator_cancel_conversion(%s, 'ops-anna', '  ')", (conv,))
    ghost = uuid.uuid4()  # no such conversion: NULL, and the attempt is audited (a raise would roll it back)
    assert _one(db, "SELECT operator_cancel_conversion(%s, 'ops-anna', 'abuse report')", (ghost,)) is None
    assert _one(db, "SELECT operator_cancel_conversion(%s, 'ops-anna', 'abuse report 17')", (conv,)) == "cancelled"
    rows = db.execute("SELECT operator, db_user, action, conversion_id, reason, status_before, status_after, outcome "
                      "FROM operator_actions ORDER BY id").fetchall()
    assert rows == [("ops-anna", "postgres", "cancel", ghost, "abuse report", None, None, "not_found"),
                    ("ops-anna", "postgres", "cancel", conv, "abuse report 17", "pending", "cancelled", "cancelled")]
    assert _one(db, "SELECT error_message FROM conversions WHERE id = %s", (conv,)) == \
        "cancelled by operator ops-anna: abuse report 17"


# register_image and the storage-key guard

REGISTER = ("SELECT register_image(owner_id := %(o)s, owner_type := %(ot)s, type := %(t)s, "
            "mime_type := %(m)s, file_size := 1000, image_id := %(id)s, file_path := %(p)s)")


@pytest.mark.parametrize("mime", ["image/jpeg", "image/png", "image/webp"])
def test_the_sql_key_is_the_python_key(db: psycopg.Connection[Any], mime: str) -> None:
    image_id = uuid.uuid4()
    assert _one(db, "SELECT image_storage_key(%s, %s)", (image_id, mime)) == input_key(image_id, mime)


def test_register_image_derives_the_key_and_records_the_upload(db: psycopg.Connection[Any], make: Factory) -> None:
    user = make.user()
    image = _one(db, REGISTER, {"o": user, "ot": "user", "t": "user", "m": "image/png", "id": None, "p": None})
    row = db.execute("SELECT file_path, owner_id, type FROM images WHERE id = %s", (image,)).fetchone()
    assert row == (input_key(image, "image/png"), user, "user")
    assert db.execute("SELECT action, user_id FROM image_usage_history WHERE image_id = %s", (image,)
                      ).fetchall() == [("upload", user)]
    chosen = uuid.uuid4()
    key = input_key(chosen, "image/jpeg")
    assert _one(db, REGISTER, {"o": user, "ot": "user", "t": "cloth", "m": "image/jpeg", "id": chosen, "p": key}
                ) == chosen


def test_register_image_refuses_a_key_it_did_not_issue(db: psycopg.Connection[Any], make: Factory) -> None:
    """Defect 3: a producer pointed its own row at another user's private file."""
    victim, attacker = make.user(), make.user()
    victims = _one(db, REGISTER, {"o": victim, "ot": "user", "t": "user", "m": "image/jpeg", "id": None, "p": None})
    victims_key = input_key(victims, "image/jpeg")
    base = {"o": attacker, "ot": "user", "t": "user", "m": "image/jpeg", "id": None}
    for key in (victims_key, f"images/{uuid.uuid4()}.jpg", "../etc/passwd"):
        with refused("SA026", "invalid_storage_key: "):
            db.execute(REGISTER, base | {"p": key})
    with refused("SA005", "invalid_argument: "):  # result rows come from the queue only
        db.execute(REGISTER, base | {"t": "result", "p": None})
    with refused("SA003", "owner_not_found: "):
        db.execute(REGISTER, base | {"o": uuid.uuid4(), "p": None})
    assert _one(db, "SELECT count(*) FROM images WHERE owner_id = %s", (attacker,)) == 0


def test_a_row_cannot_point_into_another_owners_space(db: psycopg.Connection[Any], make: Factory) -> None:
    """Defect 3, whoever writes the row (admin tools, a worker in another language)."""
    victim, attacker = make.user(), make.user()
    victims = _one(db, REGISTER, {"o": victim, "ot": "user", "t": "user", "m": "image/jpeg", "id": None, "p": None})
    _v, _ui, _ci, victims_conv = make.user_conversion()
    insert = ("INSERT INTO images (owner_id, owner_type, file_path, file_name, original_url, file_size, mime_type, "
              "type) VALUES (%s, 'user', %s, 'x.jpg', 'x', 1, 'image/jpeg', %s)")
    for key, type_, sqlstate in [
        (input_key(victims, "image/jpeg"), "user", "SA026"),    # another image's key
        (f"thumbs/{victims.hex[:2]}/{victims}.jpg", "user", "SA026"),
        (f"results/{victims_conv}/a1.jpg", "result", "SA026"),  # another owner's conversion
        ("uploads/../images/x.jpg", "user", "SA026"),
        ("uploads//x.jpg", "user", "SA026"),
    ]:
        with refused(sqlstate, "invalid_storage_key: "):
            db.execute(insert, (attacker, key, type_))
    db.execute(insert, (attacker, "/uploads/attacker.jpg", "user"))  # the seed's example form
    with refused("23505"):  # two rows never share a file
        db.execute(insert, (attacker, "/uploads/attacker.jpg", "user"))


# Usage history counts conversions (schema/README.md, "Retention and growth")


def test_usage_history_counts_conversions_not_attempts(db: psycopg.Connection[Any], make: Factory) -> None:
    """Before: each claim wrote a 'convert' row, so usage counted attempts. The real claim, twice."""
    _user, _ui, _ci, conv = make.user_conversion()
    [claim_name] = [n for n in Q.names() if n.startswith("job_claim")]
    claim = getattr(Q, claim_name)
    for _ in range(2):
        params = {"limit": 1, "worker_id": "w1", "claim_token": uuid.uuid4(), "allow_suspect": True}
        [_row] = db.execute(claim, params).fetchall()
        attempt = db.execute("SELECT attempt FROM conversion_jobs WHERE conversion_id = %s", (conv,)).fetchone()
        assert attempt is not None
        db.execute(UPDATE, {"c": conv, "s": "pending", "r": None, "a": attempt[0]})
    assert _one(db, "SELECT count(*) FROM image_usage_history WHERE conversion_id = %s AND action = 'convert'",
                (conv,)) == 1
