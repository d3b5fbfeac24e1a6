"""Access rules, the same through every producer interface: the Python API, the CLI, plain SQL.

A user converts only with their own person photo and with their own or a public garment; a vendor
the same with the vendor's images. Nobody reaches another owner's private image, and nobody cancels
another owner's conversion.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from core.settings import get_settings
from producer import ProducerError, cancel, submit
from stayler.cli import main
from tests.factories import make_image, make_user, make_vendor


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
