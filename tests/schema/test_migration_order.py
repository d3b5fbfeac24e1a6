"""Migrations are numbered in sequence and the list only grows at its end.

yoyo records each applied migration by its file name (``_yoyo_migration``), so a renamed or
renumbered file would apply again on every database that already has it: the files keep their
names, and ``schema/migrations/ORDER`` (append only) records the order. No database needed.
"""

from __future__ import annotations

import itertools
import re

from schema.migrate import MIGRATIONS_DIR, migration_ids, migration_order

#: ORDER as it stood when the rule was introduced (issue 24). It stays a prefix of ORDER for ever:
#: a migration is never inserted before, renamed or removed from the ones already applied in the field.
HISTORY: tuple[str, ...] = (
    "0001_users_vendors", "0010_conversions_images_schema", "0020_job_queue", "0025_functions",
    "0030_queue_operations", "0040_metrics_indexes", "0050_jobs_complete_set_based",
    "0060_queue_for_real_networks", "0100_contract_functions", "0110_retention", "0120_roles",
    "0130_conversion_status_function", "0140_job_attempts", "0200_api", "0300_console",
    "0400_webhook_boundary", "0410_api_boundary", "0420_fair_share", "0430_outages", "0440_erasure",
    "0450_console_oncall", "0460_fair_unowned",
)


def _number(migration_id: str) -> int:
    match = re.fullmatch(r"(\d{4})_[a-z0-9_]+", migration_id)
    assert match, f"{migration_id}: not NNNN_lower_case_words"
    return int(match.group(1))


def test_order_lists_exactly_the_files_in_file_name_order() -> None:
    """yoyo and psql apply in file-name order: ORDER must say the same (a new file goes into ORDER too)."""
    assert migration_order() == migration_ids(), "append the new migration's id to schema/migrations/ORDER"


def test_numbers_are_strictly_increasing() -> None:
    numbers = [_number(i) for i in migration_order()]
    assert all(a < b for a, b in itertools.pairwise(numbers)), numbers


def test_the_list_only_grows_at_its_end() -> None:
    order = migration_order()
    assert tuple(order[: len(HISTORY)]) == HISTORY, "an applied migration was renamed, removed or preceded"


def test_every_migration_has_its_file_and_no_stray_sql() -> None:
    listed = set(migration_order())
    files = {p.stem for p in MIGRATIONS_DIR.glob("*.sql") if not p.name.endswith(".rollback.sql")}
    assert listed == files
