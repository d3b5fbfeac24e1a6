"""The main job: start the services, migrate and show the schema status."""

from __future__ import annotations

import argparse

from schema.migrate import apply_migrations
from stayler.report import print_db_status
from stayler.services import database
from stayler.settings import Settings


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Start PostgreSQL (embedded unless DATABASE_URL is set), migrate, print the status."""
    with database(settings) as url:
        applied = apply_migrations(url)
        print(f"migrations applied now: {len(applied)}")
        print_db_status(url)
    return 0
