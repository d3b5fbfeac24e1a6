"""Outages of shared services cost the customer nothing: a fleet under an S3 stop spends no retry."""

from __future__ import annotations

import psycopg
import pytest

from modelkit.samples import make_garment, to_bytes
from producer import register_image
from producer.accounts import create_user
from storage import from_url
from tests.infra.s3 import S3Server, s3_bucket, s3_env, s3_server
from tests.support.fleet import Env
from tests.support.wait import wait_for
from tests.support.workload import LIMITS, Workload

__all__ = ["s3_bucket", "s3_env", "s3_server"]


class S3Workload(Workload):
    """The harness's workload with its images in the bucket the fleet reads."""

    def __init__(self, conn: psycopg.Connection, url: str) -> None:
        self.conn = conn
        self.storage = from_url(url)  # type: ignore[assignment]
        self.user = create_user(conn)
        self.garment = register_image(conn, self.storage, to_bytes(make_garment(seed=3)), owner_id=self.user,
                                      owner_type="user", image_type="cloth", limits=LIMITS).id
        self._person = None


def on_storage(conn: psycopg.Connection, url: str) -> Workload:
    """A workload whose images live at ``url``."""
    return S3Workload(conn, url)


@pytest.mark.slow
def test_an_s3_stop_under_a_fleet_charges_no_retry_and_loses_nothing(env: Env, s3_server: S3Server,
                                                                     s3_bucket: str) -> None:
    # Regression (issue 26, defect 1): a 10 s S3 stop charged 618-938 retries per 1,500 conversions.
    url = f"s3://{s3_bucket}/fleet"
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        work = on_storage(conn, url)
        ids = work.submit(24, style="slow", max_retries=1)
        env.start_fleet(processes=1, threads=2, STAYLER_STORAGE_URL=url, STAYLER_FAILPOINTS="sleep=slow:0.4",
                        **s3_server.env())
        wait_for(lambda: (conn.execute("SELECT count(*) FROM conversions WHERE status = 'completed'").fetchone()
                          or (0,))[0] >= 2, 60, "the first results", env)
        with s3_server.paused(4.0):
            pass
        wait_for(lambda: work.all_terminal(ids), 120, "every conversion to end", env)
        statuses = set(work.statuses(ids).values())
        retries = conn.execute("SELECT coalesce(sum(retry_count), 0) FROM conversion_jobs "
                               "WHERE conversion_id = ANY(%s)", (ids,)).fetchone()
        released = conn.execute("SELECT count(*) FROM conversion_job_attempts WHERE outcome = 'released'").fetchone()
        logs = "\n".join(p.read_text(errors="replace") for p in sorted(env.log_dir.glob("fleet-*.log")))
    assert statuses == {"completed"}, logs[-8000:]
    assert retries == (0,), logs[-8000:]
    # The stop was felt (jobs handed back, the breaker opened and healed), not slept through.
    assert released is not None and released[0] >= 1, logs[-8000:]
    assert "shared service down" in logs and "shared service back" in logs
