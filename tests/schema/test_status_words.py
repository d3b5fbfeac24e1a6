"""Production Python compares with the status enums of ``schema.statuses``, never with a bare word.

SQL text keeps its literals (it is checked against the CHECK constraints through the enums); dict
keys and labels named like a status are not comparisons and are not looked at.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from api.schemas import ConversionStatus as ApiConversionStatus
from schema.statuses import TERMINAL, ConversionStatus, JobStatus

ROOT = Path(__file__).resolve().parents[2]
WORDS = {s.value for s in ConversionStatus} | {s.value for s in JobStatus}
#: Packages that run in production (tests, benchmarks and docs examples may spell words out).
PRODUCTION = ("api", "broker", "console", "core", "imaging", "leader", "models", "modelkit", "producer",
              "schema", "stayler", "storage", "worker")
#: Comparisons with a word that is not a status, with the reason.
NOT_A_STATUS = {
    ("worker/batch.py", "outcome == 'completed'"): "a CompletionOutcome of the queue door",
    ("schema/errors.py", "code != 'cancelled'"): "the error type 'cancelled'",
    ("stayler/client.py", None): "the client imports only httpx and the standard library",
}


def _bare_comparisons(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        consts = [o for o in operands if isinstance(o, ast.Constant)]
        consts += [e for o in operands if isinstance(o, ast.Tuple | ast.List | ast.Set) for e in o.elts
                   if isinstance(e, ast.Constant)]
        if any(c.value in WORDS for c in consts):
            found.append(ast.unparse(node))
    return found


def test_no_bare_status_word_is_compared_in_production_code() -> None:
    bad = []
    scanned = 0
    for package in PRODUCTION:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            scanned += 1
            if (rel, None) in NOT_A_STATUS:
                continue
            bad += [f"{rel}: {c}" for c in _bare_comparisons(path) if (rel, c) not in NOT_A_STATUS]
    assert scanned > 50
    assert bad == []


def test_the_api_status_literal_is_the_enum() -> None:
    """api.schemas spells the words once more for the OpenAPI document (a Literal): the same list."""
    assert set(get_args(ApiConversionStatus)) == {s.value for s in ConversionStatus}


def test_terminal_holds_the_enum_members() -> None:
    assert {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED} == TERMINAL
