"""Access rules, the same through every producer interface: the Python API, the CLI, plain SQL.

A user converts only with their own person photo and with their own or a public garment; a vendor
the same with the vendor's images. Nobody reaches another owner's private image, and nobody cancels
another owner's conversion.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from core.settings import get_settings
from modelkit.samples import make_garment, make_person, to_bytes
from producer import ProducerError, cancel, register_image, submit
from producer.images import ImageLimits
from schema.queries import Q
from stayler.cli import main
from storage import LocalStorage
from tests.support.factories import make_conversion, make_image, make_user, make_vendor


@dataclass
class World:
    """Two users and two vendors with private and public images."""

    alice: uuid.UUID
    bob: uuid.UUID
    shop: uuid.UUID
    other_shop: uuid.UUID
    img: dict[str, uuid.UUID]


@pytest.fixture
def world(db: psycopg.Connection) -> World:
    alice, bob = make_user(db), make_user(db)
    shop, other = make_vendor(db), make_vendor(db)
    img = {
        "alice_person": make_image(db, alice, type_="user"),
        "alice_public_person": make_image(db, alice, type_="user", is_public=True),
        "alice_garment": make_image(db, alice, type_="cloth"),
        "alice_public_garment": make_image(db, alice, type_="cloth", is_public=True),
        "bob_person": make_image(db, bob, type_="user"),
        "shop_person": make_image(db, shop, owner_type="vendor", type_="user"),
        "shop_garment": make_image(db, shop, owner_type="vendor", type_="cloth"),
        "shop_public_garment": make_image(db, shop, owner_type="vendor", type_="cloth", is_public=True),
        "other_garment": make_image(db, other, owner_type="vendor", type_="cloth"),
        "other_public_garment": make_image(db, other, owner_type="vendor", type_="cloth", is_public=True),
    }
    return World(alice, bob, shop, other, img)


# (owner kind, owner name, person image, garment image, allowed)
MATRIX = [
    ("user", "alice", "alice_person", "alice_garment", True),
    ("user", "alice", "alice_person", "alice_public_garment", True),
    ("user", "alice", "alice_person", "shop_public_garment", True),   # public vendor garment: anyone
    ("user", "bob", "bob_person", "alice_public_garment", True),      # public user garment: anyone
    ("user", "bob", "alice_person", "alice_public_garment", False),   # another user's person photo
    ("user", "bob", "alice_public_person", "alice_public_garment", False),  # person photos are never shared
    ("user", "bob", "bob_person", "alice_garment", False),            # another user's private garment
    ("user", "alice", "alice_person", "shop_garment", False),         # a vendor's private garment
    ("user", "alice", "shop_person", "alice_garment", False),         # a vendor's person photo
    ("vendor", "shop", "shop_person", "shop_garment", True),
    ("vendor", "shop", "shop_person", "other_public_garment", True),
    ("vendor", "shop", "shop_person", "alice_public_garment", True),
    ("vendor", "shop", "shop_person", "other_garment", False),        # another vendor's private garment
    ("vendor", "shop", "alice_person", "shop_garment", False),        # a user's person photo
    ("vendor", "shop", "shop_person", "alice_garment", False),        # a user's private garment
    ("vendor", "other_shop", "shop_person", "other_garment", False),  # another vendor's person photo
    ("user", "alice", "alice_garment", "alice_garment", False),       # wrong type: garment as person
]
IDS = [f"{kind}:{who}:{p}+{g}:{'ok' if ok else 'refused'}" for kind, who, p, g, ok in MATRIX]

Attempt = Callable[[World, str, str, str, str], "uuid.UUID | str"]


def _owner(world: World, kind: str, who: str) -> dict[str, Any]:
    owner = getattr(world, who)
    return {"user_id": owner if kind == "user" else None, "vendor_id": owner if kind == "vendor" else None}


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("STAYLER_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``stayler ARGS`` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("kind", "who", "person", "garment", "allowed"), MATRIX, ids=IDS)
def test_python_producer(db: psycopg.Connection, world: World, kind: str, who: str, person: str, garment: str,
                         allowed: bool) -> None:
    call = lambda: submit(db, user_image_id=world.img[person], cloth_image_id=world.img[garment],  # noqa: E731
                          **_owner(world, kind, who))
    if allowed:
        assert isinstance(call(), uuid.UUID)
        return
    with pytest.raises(ProducerError) as info:
        call()
    assert info.value.code in ("image_not_accessible", "image_wrong_type"), str(info.value)
    assert db.execute("SELECT count(*) FROM conversions").fetchone() == (0,)


@pytest.mark.parametrize(("kind", "who", "person", "garment", "allowed"), MATRIX, ids=IDS)
def test_plain_sql(db: psycopg.Connection, world: World, kind: str, who: str, person: str, garment: str,
                   allowed: bool) -> None:
    owner = _owner(world, kind, who)
    sql = ("SELECT create_conversion(user_id := %s, vendor_id := %s, user_image_id := %s, cloth_image_id := %s)")
    args = (owner["user_id"], owner["vendor_id"], world.img[person], world.img[garment])
    if allowed:
        assert db.execute(sql, args).fetchone() is not None
        return
    with pytest.raises(psycopg.Error) as info:
        db.execute(sql, args)
    assert info.value.sqlstate in ("SA012", "SA011"), info.value
    assert db.execute("SELECT count(*) FROM conversions").fetchone() == (0,)


@pytest.mark.parametrize(("kind", "who", "person", "garment", "allowed"), MATRIX, ids=IDS)
def test_cli(db: psycopg.Connection, world: World, cli_env: None, capsys: pytest.CaptureFixture[str], kind: str,
             who: str, person: str, garment: str, allowed: bool) -> None:
    code, out, err = run_cli(capsys, "submit", f"--{kind}-id", str(getattr(world, who)),
                             "--person", str(world.img[person]), "--garment", str(world.img[garment]))
    if allowed:
        assert code == 0, err
        uuid.UUID(out.strip())
        return
    assert code == 2, (out, err)
    assert err.startswith("stayler: error: creating the conversion: ") and "Traceback" not in err
    assert ("image_not_accessible" in err) or ("image_wrong_type" in err)
    assert db.execute("SELECT count(*) FROM conversions").fetchone() == (0,)


def test_only_the_owner_cancels(db: psycopg.Connection, world: World, cli_env: None,
                                capsys: pytest.CaptureFixture[str]) -> None:
    cid = submit(db, user_id=world.alice, user_image_id=world.img["alice_person"],
                 cloth_image_id=world.img["alice_garment"])
    with pytest.raises(ProducerError) as info:
        cancel(db, cid, user_id=world.bob)
    assert info.value.code == "not_owner"
    with pytest.raises(ProducerError):
        cancel(db, cid, vendor_id=world.shop)
    code, _, err = run_cli(capsys, "cancel", str(cid), "--user-id", str(world.bob))
    assert code == 2 and "belongs to someone else" in err
    assert db.execute("SELECT status FROM conversions WHERE id = %s", (cid,)).fetchone() == ("pending",)
    assert cancel(db, cid, user_id=world.alice) == "cancelled"


def test_unknown_owner_and_unknown_image_are_refused_not_created(db: psycopg.Connection, world: World) -> None:
    with pytest.raises(ProducerError) as info:
        submit(db, user_id=uuid.uuid4(), user_image_id=world.img["alice_person"],
               cloth_image_id=world.img["alice_garment"])
    assert info.value.code == "owner_not_found"
    with pytest.raises(ProducerError) as info:
        submit(db, user_id=world.alice, user_image_id=uuid.uuid4(), cloth_image_id=world.img["alice_garment"])
    assert info.value.code == "image_not_found"
    with pytest.raises(ProducerError) as info:
        submit(db, user_id=world.alice, vendor_id=world.shop, user_image_id=world.img["alice_person"],
               cloth_image_id=world.img["alice_garment"])
    assert info.value.code in ("owner_ambiguous", "owner_required")


# Database roles (0120): the access matrix, run as the roles themselves, not as a superuser

DENIED = "42501"  # insufficient_privilege


@contextmanager
def as_role(db_url: str, role: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection whose privileges are those of ``role`` (SET ROLE from the test login)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        yield conn


def _denied(conn: psycopg.Connection, statement: str, params: Sequence[Any] = ()) -> None:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement, params)
    assert info.value.sqlstate == DENIED, info.value


REGISTER = ("SELECT register_image(owner_id := %s, owner_type := 'user', type := %s, mime_type := 'image/jpeg', "
            "file_size := 1000)")


def test_producer_role_executes_producer_functions_and_nothing_else(db: psycopg.Connection, db_url: str,
                                                                    world: World) -> None:
    """Defect 7: a plain-SQL client could write any table directly; the rules protected nothing."""
    with as_role(db_url, "stayler_producer") as producer:
        person = producer.execute(REGISTER, (world.alice, "user")).fetchone()[0]  # type: ignore[index]
        garment = producer.execute(REGISTER, (world.alice, "cloth")).fetchone()[0]  # type: ignore[index]
        cid = producer.execute("SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s)",
                               (world.alice, person, garment)).fetchone()[0]  # type: ignore[index]
        _denied(producer, "INSERT INTO images (owner_id, owner_type, file_path, file_name, original_url, file_size, "
                          "mime_type, type) VALUES (%s, 'user', 'x', 'x', 'x', 1, 'image/jpeg', 'user')",
                (world.bob,))
        _denied(producer, "SELECT file_path FROM images")
        _denied(producer, "SELECT * FROM conversions")
        _denied(producer, "UPDATE conversion_jobs SET priority = 100")
        _denied(producer, "SELECT update_conversion_status(%s, 'failed')", (cid,))
        _denied(producer, "SELECT operator_cancel_conversion(%s, 'me', 'because')", (cid,))
        _denied(producer, "SELECT prune_finished_jobs(interval '1 second', 10)")
        _denied(producer, "SELECT * FROM get_conversion_stats()")
        with pytest.raises(psycopg.Error) as info:
            producer.execute("SELECT cancel_conversion(%s, user_id := %s)", (cid, world.bob))
        assert info.value.sqlstate == "SA024"
        assert producer.execute("SELECT cancel_conversion(%s, user_id := %s)", (cid, world.alice)
                                ).fetchone() == ("cancelled",)


def test_worker_role_runs_the_queue(db: psycopg.Connection, db_url: str, world: World) -> None:
    """The worker's plain statements (claim, renew, registry) and the queue functions, as stayler_worker."""
    cid = submit(db, user_id=world.alice, user_image_id=world.img["alice_person"],
                 cloth_image_id=world.img["alice_garment"])
    [claim_name] = [n for n in Q.names() if n.startswith("job_claim")]
    claim_sql: LiteralString = getattr(Q, claim_name)
    params = {"limit": 4, "worker_id": "w-roles", "claim_token": uuid.uuid4(), "allow_suspect": True}
    with as_role(db_url, "stayler_worker") as worker:
        worker.execute(Q.worker_register, {"id": "w-roles", "hostname": "h", "pid": 1, "concurrency": 1,
                                           "model_name": "m", "model_version": "1"})
        with worker.cursor(row_factory=dict_row) as cur:
            [claimed] = cur.execute(claim_sql, params).fetchall()
        assert claimed["conversion_id"] == cid
        job, attempt = claimed["job_id"], claimed["attempt"]
        assert worker.execute(Q.jobs_heartbeat, {"job_ids": [job], "attempts": [attempt]}).fetchall() == [(job,)]
        key = f"results/{cid}/a{attempt}.jpg"
        items = [{"job_id": str(job), "attempt": attempt, "file_path": key, "file_name": "a.jpg",
                  "original_url": key, "thumbnail_url": None, "file_size": 10, "mime_type": "image/jpeg",
                  "width": 1, "height": 1, "processing_time_ms": 5, "ai_model_version": "m"}]
        [(done, result)] = worker.execute(Q.jobs_complete, {"items": json.dumps(items)}).fetchall()
        assert done == job and result is not None
        _denied(worker, "SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s)",
                (world.alice, world.img["alice_person"], world.img["alice_garment"]))
        _denied(worker, "DELETE FROM conversions")
        _denied(worker, "SELECT email FROM users")
        _denied(worker, "SELECT operator_cancel_conversion(%s, 'me', 'because')", (cid,))
    assert db.execute("SELECT status FROM conversions WHERE id = %s", (cid,)).fetchone() == ("completed",)


def test_operator_ro_reads_and_admin_cancels_with_an_audit_row(db: psycopg.Connection, db_url: str,
                                                               world: World) -> None:
    cid = submit(db, user_id=world.alice, user_image_id=world.img["alice_person"],
                 cloth_image_id=world.img["alice_garment"])
    with as_role(db_url, "stayler_operator_ro") as reader:
        assert reader.execute("SELECT count(*) FROM conversions").fetchone() == (1,)
        assert reader.execute("SELECT total_count FROM get_conversion_stats()").fetchone() == (1,)
        _denied(reader, "UPDATE conversions SET style_name = 'x'")
        _denied(reader, "SELECT operator_cancel_conversion(%s, 'me', 'because')", (cid,))
        _denied(reader, "SELECT cancel_conversion(%s, user_id := %s)", (cid, world.alice))
    with as_role(db_url, "stayler_admin") as admin:
        assert admin.execute("SELECT operator_cancel_conversion(%s, 'ops', 'ticket 9')", (cid,)
                             ).fetchone() == ("cancelled",)
    assert db.execute("SELECT operator, reason FROM operator_actions WHERE conversion_id = %s", (cid,)
                      ).fetchall() == [("ops", "ticket 9")]


def test_no_function_is_executable_by_public_and_definers_pin_search_path(db: psycopg.Connection) -> None:
    public_exec = db.execute(
        """SELECT p.oid::regprocedure::text FROM pg_proc p
            WHERE p.pronamespace = 'public'::regnamespace
              AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                                WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))""").fetchall()
    assert public_exec == []
    definers = db.execute(
        """SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p
            WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef""").fetchall()
    assert {name.split("(")[0] for name, _ in definers} >= {
        "create_conversion", "register_image", "record_image_usage", "cancel_conversion",
        "update_conversion_status", "operator_cancel_conversion"}
    assert all(config and "search_path=public, pg_temp" in config for _, config in definers), definers


def test_cli_cancel_needs_an_owner_or_an_operator(db: psycopg.Connection, world: World, cli_env: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Defect 2: `stayler cancel <id>` without --user-id cancelled someone else's conversion."""
    cid = submit(db, user_id=world.alice, user_image_id=world.img["alice_person"],
                 cloth_image_id=world.img["alice_garment"])
    code, _, err = run_cli(capsys, "cancel", str(cid))
    assert code == 2 and "--user-id" in err and "--operator" in err, err
    code, _, err = run_cli(capsys, "cancel", str(cid), "--operator", "ops-anna")
    assert code == 2 and "--reason" in err, err
    assert db.execute("SELECT status FROM conversions WHERE id = %s", (cid,)).fetchone() == ("pending",)
    code, out, err = run_cli(capsys, "cancel", str(cid), "--operator", "ops-anna", "--reason", "ticket 12")
    assert (code, out.strip()) == (0, "cancelled"), err
    assert db.execute("SELECT operator, reason FROM operator_actions").fetchall() == [("ops-anna", "ticket 12")]


def test_the_python_producer_runs_under_the_producer_role(db_url: str, world: World, tmp_path: Path) -> None:
    """The Python producer uses only producer functions, so a login granted stayler_producer suffices."""
    storage = LocalStorage(tmp_path / "storage")
    limits = ImageLimits(max_bytes=5_000_000, max_pixels=40_000_000, thumbnail_size=32)
    with as_role(db_url, "stayler_producer") as producer:
        person = register_image(producer, storage, to_bytes(make_person(64, 96).image), owner_id=world.alice,
                                owner_type="user", image_type="user", limits=limits)
        garment = register_image(producer, storage, to_bytes(make_garment(seed=2)), owner_id=world.alice,
                                 owner_type="user", image_type="cloth", limits=limits)
        cid = submit(producer, user_id=world.alice, user_image_id=person.id, cloth_image_id=garment.id,
                     idempotency_key="k1")
        assert submit(producer, user_id=world.alice, user_image_id=person.id, cloth_image_id=garment.id,
                      idempotency_key="k1") == cid
        with pytest.raises(ProducerError) as info:
            submit(producer, user_id=world.alice, user_image_id=person.id, cloth_image_id=garment.id,
                   style_name="other", idempotency_key="k1")
        assert info.value.code == "idempotency_key_mismatch"
        assert cancel(producer, cid, user_id=world.alice) == "cancelled"
    assert (tmp_path / "storage" / person.file_path).is_file()


def test_a_plain_sql_producer_reads_back_its_own_conversion_and_no_one_elses(db: psycopg.Connection,
                                                                             db_url: str) -> None:
    mine = make_conversion(db)
    owner = db.execute("SELECT user_id FROM conversions WHERE id = %s", (mine,)).fetchone()
    assert owner is not None
    theirs = make_conversion(db)
    with as_role(db_url, "stayler_producer") as conn:
        row = conn.execute("SELECT status, attempt, retry_count FROM get_conversion(%s, user_id := %s)",
                           (mine, owner[0])).fetchone()
        assert row == ("pending", 0, 0)
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT * FROM get_conversion(%s, user_id := %s)", (theirs, owner[0]))
        assert info.value.sqlstate == "SA024"
        _denied(conn, "SELECT status FROM conversions WHERE id = %s", (mine,))
