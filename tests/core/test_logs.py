"""core.logs: JSON lines carry the bound ids."""

from __future__ import annotations

import json
import logging

import pytest

from core import logs


def test_json_logs_carry_bound_ids(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    try:
        with logs.bound(conversion_id="c1", job_id="j1"):
            logging.getLogger("t").info("hello", extra={"attempt": 2})
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (line["msg"], line["conversion_id"], line["job_id"], line["attempt"]) == ("hello", "c1", "j1", 2)
    finally:
        logs.configure("WARNING", "text")
