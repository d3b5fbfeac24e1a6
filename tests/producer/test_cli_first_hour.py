"""The CLI's answers to a new user's mistakes: one line naming the fix, no traceback, non-zero exit;
and ``stayler cancel`` telling the truth about a conversion that had already ended (issue 23)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from core.services import with_database
from core.settings import get_settings
from stayler.cli import main as cli
from stayler.commands import CANCEL_ALREADY_ENDED
from tests.queue.ops import claim_jobs, complete_jobs
from tests.support.factories import make_conversion, make_user
from worker.jobs import Completion


@pytest.fixture
def use_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Point the CLI's settings at a database URL for the test."""
    def use(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)
        get_settings.cache_clear()

    yield use
    get_settings.cache_clear()


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """A database no one has migrated."""
    name = f"stayler_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stayler: error:") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv", [["users", "add", "--email", "new@example.com"], ["apikeys", "list"],
                                  ["status", str(uuid.uuid4())], ["vendors", "add", "--name", "Acme"]])
def test_a_command_on_an_unmigrated_database_says_run_stayler_migrate(
        argv: list[str], empty_db_url: str, use_database, capsys: pytest.CaptureFixture[str]) -> None:
    use_database(empty_db_url)
    assert cli(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "run `stayler migrate`" in line


def test_a_duplicate_email_is_one_line_naming_it(db_url: str, use_database,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    use_database(db_url)
    assert cli(["users", "add", "--email", "twice@example.com"]) == 0
    capsys.readouterr()
    assert cli(["users", "add", "--email", "twice@example.com"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "twice@example.com already exists" in line and "users_email_key" not in line


@pytest.mark.parametrize("command", ["console", "revoke"])
def test_a_key_given_instead_of_its_id_is_never_printed_back(command: str, db_url: str, use_database,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    use_database(db_url)
    secret = "sk_stayler_" + uuid.uuid4().hex
    argv = ["apikeys", command, secret] + (["--role", "viewer"] if command == "console" else [])
    with pytest.raises(SystemExit) as stopped:
        cli(argv)
    out = capsys.readouterr()
    assert stopped.value.code == 2
    assert secret not in out.err and secret not in out.out and secret[len("sk_stayler_"):] not in out.err
    assert "stayler apikeys list" in out.err


def _completed(conn: psycopg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    user = make_user(conn)
    cid = make_conversion(conn, user_id=user)
    [claim] = claim_jobs(conn, "test-worker", 1)
    key = f"results/{cid}/a1.jpg"
    complete_jobs(conn, [Completion(claim=claim, file_path=key, file_name="a1.jpg", original_url=f"file:///{key}",
                                    thumbnail_url="file:///t.jpg", file_size=1, mime_type="image/jpeg", width=1,
                                    height=1, processing_time_ms=1, ai_model_version="test-1")])
    return user, cid


def test_cancel_exit_codes(db_url: str, db: psycopg.Connection, use_database,
                           capsys: pytest.CaptureFixture[str]) -> None:
    use_database(db_url)
    user = make_user(db)
    queued = make_conversion(db, user_id=user)
    assert cli(["cancel", str(queued), "--user-id", str(user)]) == 0
    assert capsys.readouterr().out.strip() == "cancelled"
    assert cli(["cancel", str(queued), "--user-id", str(user)]) == 0  # twice is fine, as in the API
    capsys.readouterr()

    owner, done = _completed(db)
    assert cli(["cancel", str(done), "--user-id", str(owner)]) == CANCEL_ALREADY_ENDED == 1
    out = capsys.readouterr()
    line = _one_error_line(out.err)
    assert "invalid_status_transition" in line and "completed" in line and out.out == ""
    assert cli(["cancel", str(done), "--operator", "anna", "--reason", "ticket 12"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "already ended: completed" in line
    [row] = json.loads(_out(capsys, ["status", str(done), "--json"]))
    assert row["status"] == "completed"

    assert cli(["cancel", str(done), "--user-id", str(make_user(db))]) == 2  # not the owner: refused, not 1
    assert "not_owner" in _one_error_line(capsys.readouterr().err)


def _out(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    assert cli(argv) == 0
    return capsys.readouterr().out


def test_status_json_keeps_numbers_as_numbers(db_url: str, db: psycopg.Connection, use_database,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    use_database(db_url)
    _, done = _completed(db)
    [row] = json.loads(_out(capsys, ["status", str(done), "--json"]))
    assert row["attempt"] == 1 and row["retry_count"] == 0 and row["max_retries"] == 3
    assert row["processing_time_ms"] == 1 and row["error_type"] is None
    stats = json.loads(_out(capsys, ["stats", "--json"]))
    assert stats["conversions"]["completed_count"] == 1 and stats["conversions"]["success_rate"] == 1.0


def test_status_prints_ids_and_paths_whole(db_url: str, db: psycopg.Connection, use_database,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    use_database(db_url)
    _, done = _completed(db)
    out = _out(capsys, ["status", str(done)])
    assert str(done) in out and f"results/{done}/a1.jpg" in out and "…" not in out


def test_status_wait_exits_3_when_a_conversion_has_not_ended(db_url: str, db: psycopg.Connection, use_database,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    use_database(db_url)
    queued = make_conversion(db)
    assert cli(["status", str(queued), "--wait", "0.2"]) == 3
    assert "still running" in capsys.readouterr().err


def test_images_add_json_keeps_numbers_as_numbers(db_url: str, db: psycopg.Connection, use_database,
                                                  monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STAYLER_STORAGE_DIR", str(tmp_path / "storage"))
    use_database(db_url)
    user = make_user(db)
    photo = Path(__file__).resolve().parents[1] / "data" / "photos" / "astronaut.jpg"
    record = json.loads(_out(capsys, ["images", "add", str(photo), "--user-id", str(user), "--type", "user",
                                      "--json"]))
    assert isinstance(record["width"], int) and isinstance(record["file_size"], int) and record["width"] > 0
