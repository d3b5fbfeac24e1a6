"""The console's fair-share page (``/console/fairness``): the owners with the largest backlog, what
each has processing against its cap, who the cap holds back now, and the per-plan totals."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from psycopg.rows import dict_row

from schema.queries import Q

router = APIRouter(prefix="/console", include_in_schema=False)
#: Owners listed (the largest backlogs).
TOP = 25


def read_fairness(conn: Any, top: int = TOP) -> dict[str, Any]:
    """The page's rows: the top backlogs, plans and weights, per-plan totals."""
    with conn.cursor(row_factory=dict_row) as cur:
        owners = cur.execute(Q.fair_owner_list_backlog, {"limit": top}).fetchall()
        plans = cur.execute(Q.fair_plan_get_stats).fetchall()
        settings = cur.execute(Q.fair_plan_list).fetchall()
    weights = {row["plan"]: row for row in settings}
    for row in plans:
        row.update({k: weights.get(row["plan"], {}).get(k) for k in ("weight", "band", "max_processing")})
    return {"owners": owners, "plans": plans}


@router.get("/fairness")
async def fairness(request: Request) -> Response:
    """Largest backlogs and throttled owners (any console role may read it)."""
    from console.web import _ctx, _to_login, current_session, render

    session = await current_session(request)
    if session is None:
        return _to_login()
    values = await _ctx(request).db.run(read_fairness)
    return render("fairness.html", request, session, **values)
