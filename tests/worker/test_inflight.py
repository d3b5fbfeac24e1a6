"""worker.inflight: the registry of held claims marks lost ones (no services)."""

from __future__ import annotations

import uuid

from worker.inflight import HeldClaim, InFlight


def test_inflight_marks_lost_claims() -> None:
    registry = InFlight()
    a, b = uuid.uuid4(), uuid.uuid4()
    registry.add(HeldClaim(a, 1, 0.0))
    registry.add(HeldClaim(b, 1, 0.0))
    registry.mark_lost({b, uuid.uuid4()})
    assert (registry.is_lost(a), registry.is_lost(b), len(registry)) == (False, True, 2)
    registry.remove(a)
    assert registry.is_lost(a)  # no longer held counts as lost
