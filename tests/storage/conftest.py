"""Both storage backends behind one fixture, so every contract test runs against each."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import Storage, from_url
from tests.infra.s3 import S3Server, s3_bucket, s3_env, s3_server

__all__ = ["s3_bucket", "s3_env", "s3_server"]


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.services)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A fresh, empty store: a folder, or a bucket on the loopback S3 server (built by the factory)."""
    if request.param == "file":
        return from_url(f"file://{tmp_path / 'store'}")
    bucket = request.getfixturevalue("s3_bucket")
    return from_url(f"s3://{bucket}/tenant-a")


@pytest.fixture
def server(s3_server: S3Server) -> S3Server:
    """The loopback S3 server."""
    return s3_server


#: The lifecycle test that also runs on S3 in the default suite; every other lifecycle test runs on
#: S3 in ``make test-slow`` (their folder variants stay in the default suite).
LIFECYCLE_ON_S3_BY_DEFAULT = "test_deleting_a_conversion_leaves_nothing_of_it_and_touches_nothing_else"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the S3 variants of the lifecycle tests slow, but one."""
    for item in items:
        if (item.path.name == "test_lifecycle.py" and item.nodeid.endswith("[s3]")
                and getattr(item, "originalname", "") != LIFECYCLE_ON_S3_BY_DEFAULT):
            item.add_marker(pytest.mark.slow)
