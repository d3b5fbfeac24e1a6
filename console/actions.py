"""The operator's actions, each one call of an audited SQL function (so each writes operator_actions)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg

from console.access import Session
from schema.queries import Q
from schema.statuses import ConversionStatus

#: Most conversions one bulk action touches (a bulk retry by filter says when it stopped there).
BULK_LIMIT = 1000


@dataclass
class Outcome:
    """What a (bulk) action did: per-conversion successes and refusals."""

    done: list[uuid.UUID] = field(default_factory=list)
    refused: dict[uuid.UUID, str] = field(default_factory=dict)
    created: list[uuid.UUID] = field(default_factory=list)

    def summary(self, verb: str) -> str:
        """One line for the page."""
        text = f"{verb} {len(self.done)}"
        if self.refused:
            reasons = sorted(set(self.refused.values()))
            text += f"; refused {len(self.refused)} ({'; '.join(reasons[:3])})"
        return text


def _refusal(exc: psycopg.Error) -> str:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return message[:200]


def cancel(conn: psycopg.Connection, session: Session, ids: list[uuid.UUID], reason: str) -> Outcome:
    """``operator_cancel_conversion`` for each conversion (its own transaction each)."""
    outcome = Outcome()
    for conversion_id in ids[:BULK_LIMIT]:
        try:
            row = conn.execute(Q.operator_cancel_conversion, {"conversion_id": conversion_id,
                                                           "operator": session.operator, "reason": reason}).fetchone()
        except psycopg.Error as exc:
            outcome.refused[conversion_id] = _refusal(exc)
            continue
        status = row[0] if row else None
        if status == ConversionStatus.CANCELLED:
            outcome.done.append(conversion_id)
        elif status is None:
            outcome.refused[conversion_id] = "no such conversion"
        else:
            outcome.refused[conversion_id] = f"already {status}"
    return outcome


def retry(conn: psycopg.Connection, session: Session, ids: list[uuid.UUID], reason: str) -> Outcome:
    """``operator_retry_conversion`` for each failed conversion: a new conversion linked to it."""
    outcome = Outcome()
    for conversion_id in ids[:BULK_LIMIT]:
        try:
            row = conn.execute(Q.operator_retry_conversion, {"id": conversion_id, "operator": session.operator,
                                                          "reason": reason}).fetchone()
        except psycopg.Error as exc:
            outcome.refused[conversion_id] = _refusal(exc)
            continue
        if row is None or row[0] is None:  # audited by the function: not failed, or no such conversion
            outcome.refused[conversion_id] = "not failed, or no such conversion"
            continue
        outcome.done.append(conversion_id)
        outcome.created.append(row[0])
    return outcome


def set_dispatch_paused(conn: psycopg.Connection, session: Session, paused: bool, reason: str) -> bool:
    """Pause or resume the leader's dispatch, audited."""
    row = conn.execute(Q.operator_set_dispatch_paused, {"paused": paused, "operator": session.operator,
                                                       "reason": reason}).fetchone()
    return bool(row and row[0])
