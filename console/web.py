"""The console's routes under ``/console``: login, overview (and its polled fragment), conversions,
their detail and images, and the operator's POST-only, CSRF-checked, audited actions."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData
from starlette.staticfiles import StaticFiles

from api.context import ApiContext
from api.results import thumbnail_key_of
from console import access, actions, data, fairness
from console.access import Session
from console.chart import throughput_svg
from console.security import ConsoleHeadersMiddleware
from schema.errors import ERROR_TYPES, NEVER_RETRIED
from schema.statuses import ConversionStatus
from storage import StorageError, thumbnail_key

HERE = Path(__file__).resolve().parent
COOKIE = "stayler_console"
PREFIX = "/console"
#: Seconds between refreshes of the overview's fragment.
REFRESH_S = 5

templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if abs(seconds) < 120:
        return f"{seconds:.0f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


templates.filters["when"] = _when
templates.filters["age"] = _age
templates.filters["short"] = lambda value: str(value)[:8] if value else "—"

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def render(name: str, request: Request, session: Session | None, status_code: int = 200,
           **values: Any) -> HTMLResponse:
    """A page or fragment from ``templates/``."""
    html = templates.get_template(name).render(session=session, prefix=PREFIX, refresh_s=REFRESH_S,
                                               message=request.query_params.get("msg", ""),
                                               never_retried=NEVER_RETRIED, **values)
    return HTMLResponse(html, status_code=status_code)


async def current_session(request: Request) -> Session | None:
    """The request's session, from its cookie, or None."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    return await _ctx(request).db.run(access.session, token)


def _to_login() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/login", status_code=303)


def _same_origin(request: Request) -> bool:
    """A POST must come from this origin (when the browser says where it comes from)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _back(form: FormData, message: str) -> RedirectResponse:
    target = str(form.get("return_to") or f"{PREFIX}/")
    if not target.startswith(PREFIX + "/") or "//" in target or "\\" in target:
        target = f"{PREFIX}/"
    joiner = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{joiner}{urlencode({'msg': message})}", status_code=303)


async def _action_form(request: Request) -> tuple[Session | None, FormData, Response | None]:
    """The session and form of an action POST, or the response that refuses it."""
    session = await current_session(request)
    form = await request.form()
    if session is None:
        return None, form, _to_login()
    if not _same_origin(request) or not session.csrf_ok(str(form.get("csrf_token") or "")):
        return session, form, render("error.html", request, session, 403,
                                     title="Refused", detail="The form's security token is missing or stale; "
                                     "reload the page and try again.")
    if not session.can_act:
        return session, form, render("error.html", request, session, 403, title="Read-only",
                                     detail="This login may look but not act (console role: viewer).")
    return session, form, None


def _reason(form: FormData) -> str:
    return str(form.get("reason") or "").strip()[:500]


def _ids(form: FormData) -> list[uuid.UUID]:
    ids = []
    for value in form.getlist("ids"):
        try:
            ids.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    return list(dict.fromkeys(ids))


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The login form."""
    return render("login.html", request, None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Exchange a pasted API key (with a console grant) for a session cookie."""
    form = await request.form()
    if not _same_origin(request):
        return render("login.html", request, None, 403, error="This form must be sent from this page.")
    ctx = _ctx(request)
    token = await ctx.db.run(access.login, str(form.get("key") or ""), ctx.settings.console_session_ttl_s)
    if token is None:
        return render("login.html", request, None, 401,
                      error="That key is unknown, revoked, or has no console access.")
    response = RedirectResponse(f"{PREFIX}/", status_code=303)
    response.set_cookie(COOKIE, token, max_age=int(ctx.settings.console_session_ttl_s), path=PREFIX,
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (CSRF-checked like every other form)."""
    session = await current_session(request)
    form = await request.form()
    token = request.cookies.get(COOKIE)
    if session is not None and token and session.csrf_ok(str(form.get("csrf_token") or "")):
        await _ctx(request).db.run(access.logout, token)
    response = _to_login()
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


async def _overview_values(request: Request) -> dict[str, Any]:
    ctx = _ctx(request)
    values = await ctx.db.run(data.overview, ctx.settings.rescue_after_s)
    values["chart"] = throughput_svg(values["throughput"], datetime.now(UTC))
    values["completed_hour"] = sum(int(r["completed"]) for r in values["throughput"])
    values["failed_hour"] = sum(int(r["failed"]) for r in values["throughput"])
    values["now"] = datetime.now(UTC)
    return values


@router.get("/")
async def overview(request: Request) -> Response:
    """The overview page; its body refreshes itself from :func:`overview_fragment`."""
    session = await current_session(request)
    if session is None:
        return _to_login()
    return render("overview.html", request, session, **await _overview_values(request))


@router.get("/fragments/overview")
async def overview_fragment(request: Request) -> Response:
    """The overview's body alone, polled by console.js."""
    session = await current_session(request)
    if session is None:
        return Response(status_code=401)
    return render("_overview.html", request, session, **await _overview_values(request))


@router.get("/conversions")
async def conversions(request: Request) -> Response:
    """The filtered, keyset-paginated list."""
    session = await current_session(request)
    if session is None:
        return _to_login()
    q = request.query_params
    filters = data.Filters(status=q.get("status", ""), error_type=q.get("error_type", ""),
                           owner=q.get("owner", "").strip(), model_version=q.get("model_version", "").strip(),
                           since=q.get("since", ""), until=q.get("until", ""))
    if filters.status and filters.status not in {s.value for s in ConversionStatus}:
        filters.problems.append("unknown status")
        filters.status = ""

    def read(conn: Any) -> tuple[list[dict[str, Any]], str | None, list[str]]:
        rows, next_cursor = data.conversion_page(conn, filters, q.get("cursor"))
        return rows, next_cursor, data.model_versions(conn)

    rows, next_cursor, versions = await _ctx(request).db.run(read)
    query = filters.query()
    return render("conversions.html", request, session, rows=rows, filters=filters, query=query,
                  next_url=f"{PREFIX}/conversions?{urlencode({**query, 'cursor': next_cursor})}"
                  if next_cursor else None,
                  return_to=f"{PREFIX}/conversions" + (f"?{urlencode(query)}" if query else ""),
                  statuses=[s.value for s in ConversionStatus], error_types=list(ERROR_TYPES), versions=versions)


@router.get("/conversions/{conversion_id}")
async def conversion(request: Request, conversion_id: uuid.UUID) -> Response:
    """One conversion: images, attempts, metrics, usage, audit trail, retries."""
    session = await current_session(request)
    if session is None:
        return _to_login()
    detail = await _ctx(request).db.run(data.conversion_detail, conversion_id)
    if detail is None:
        return render("error.html", request, session, 404, title="Not found",
                      detail=f"There is no conversion {conversion_id}.")
    return render("conversion.html", request, session, **detail,
                  return_to=f"{PREFIX}/conversions/{conversion_id}")


@router.get("/images/{image_id}")
async def image(request: Request, image_id: uuid.UUID) -> Response:
    """An image's thumbnail (person, garment or result), streamed from storage."""
    session = await current_session(request)
    if session is None:
        return Response(status_code=401)
    ctx = _ctx(request)
    row = await ctx.db.run(data.image_key, image_id)
    if row is None:
        return Response(status_code=404)
    try:
        if row["type"] == "result":  # results/<conversion id>/a<attempt>.<ext>, its thumbnail beside it
            key = thumbnail_key_of({"id": uuid.UUID(str(row["file_path"]).split("/")[1]),
                                    "result_key": row["file_path"], "result_attempt": row["attempt"],
                                    "result_mime_type": row["mime_type"]})
        else:
            key = thumbnail_key(image_id)
        body = await asyncio.to_thread(ctx.storage.get, key or "")
    except (FileNotFoundError, ValueError, IndexError, OSError, StorageError):
        return Response(status_code=404)
    return Response(body, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


@router.post("/actions/cancel")
async def cancel(request: Request) -> Response:
    """Cancel the selected conversions through operator_cancel_conversion()."""
    session, form, refused = await _action_form(request)
    if refused is not None or session is None:
        return refused or _to_login()
    if not _reason(form):
        return _back(form, "a reason is required")
    outcome = await _ctx(request).db.run(actions.cancel, session, _ids(form), _reason(form))
    return _back(form, outcome.summary("cancelled"))


@router.post("/actions/retry")
async def retry(request: Request) -> Response:
    """Retry the selected failed conversions through operator_retry_conversion()."""
    session, form, refused = await _action_form(request)
    if refused is not None or session is None:
        return refused or _to_login()
    if not _reason(form):
        return _back(form, "a reason is required")
    outcome = await _ctx(request).db.run(actions.retry, session, _ids(form), _reason(form))
    return _back(form, outcome.summary("retried"))


@router.post("/actions/retry-matching")
async def retry_matching(request: Request) -> Response:
    """Retry every failed conversion the list's filters match (at most actions.BULK_LIMIT per submit)."""
    session, form, refused = await _action_form(request)
    if refused is not None or session is None:
        return refused or _to_login()
    if not _reason(form):
        return _back(form, "a reason is required")
    filters = data.Filters(status=ConversionStatus.FAILED, error_type=str(form.get("error_type") or ""),
                           owner=str(form.get("owner") or "").strip(),
                           model_version=str(form.get("model_version") or "").strip(),
                           since=str(form.get("since") or ""), until=str(form.get("until") or ""))
    confirmed = str(form.get("confirm") or "").isdigit()

    def work(conn: Any) -> tuple[list[uuid.UUID], actions.Outcome | None]:
        ids = data.conversion_ids(conn, filters, actions.BULK_LIMIT)
        if filters.problems or not confirmed:  # a filter it cannot read is never "no filter"
            return ids, None
        return ids, actions.retry(conn, session, ids, _reason(form))

    ids, outcome = await _ctx(request).db.run(work)
    if filters.problems:
        return render("error.html", request, session, 400, title="Filter not understood",
                      detail="Nothing was retried: " + "; ".join(filters.problems) + ".")
    if outcome is None:  # first submit: say what it will touch and ask once more
        return render("confirm.html", request, session, count=len(ids), capped=len(ids) >= actions.BULK_LIMIT,
                      filters=filters, query=filters.query(), reason=_reason(form),
                      return_to=str(form.get("return_to") or f"{PREFIX}/conversions"))
    text = outcome.summary("retried")
    if len(outcome.done) + len(outcome.refused) >= actions.BULK_LIMIT:
        text += f" (stopped at {actions.BULK_LIMIT}; submit again for more)"
    return _back(form, text)


@router.post("/actions/dispatch")
async def dispatch(request: Request) -> Response:
    """Pause or resume the fleet's dispatch through operator_set_dispatch_paused()."""
    session, form, refused = await _action_form(request)
    if refused is not None or session is None:
        return refused or _to_login()
    if not _reason(form):
        return _back(form, "a reason is required")
    paused = str(form.get("paused")) == "true"
    await _ctx(request).db.run(actions.set_dispatch_paused, session, paused, _reason(form))
    return _back(form, "dispatch paused" if paused else "dispatch resumed")


def mount_console(app: FastAPI) -> None:
    """Serve the console under ``/console`` of ``app`` (its pages, static files and headers)."""
    app.include_router(router)
    app.include_router(fairness.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_middleware(ConsoleHeadersMiddleware, prefix=PREFIX)
