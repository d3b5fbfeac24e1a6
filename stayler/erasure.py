"""Handlers of ``stayler users erase``, ``stayler vendors erase`` and ``stayler storage audit``."""

from __future__ import annotations

import argparse
import sys
import uuid

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from core.settings import Settings
from producer.deletion import erase_owner, erase_preview
from stayler.commands import connection, err_console, storage_for
from stayler.storage_audit import audit


def _erase(kind: str, owner_id: uuid.UUID, yes: bool, settings: Settings) -> int:
    with connection(settings) as conn:
        if not yes:
            counts = erase_preview(conn, kind, owner_id)
            print(f"would erase {kind} {owner_id}:")
            for name, count in counts.items():
                print(f"  {name}: {count}")
            print("nothing was deleted; run again with --yes to erase", file=sys.stderr)
            return 1
        counts, swept = erase_owner(conn, storage_for(settings), kind, owner_id)
    deleted = {k: v for k, v in counts.items() if v}
    if not deleted:
        print(f"{kind} {owner_id}: nothing to erase (already erased or never existed)")
    else:
        print(f"erased {kind} {owner_id}: " + ", ".join(f"{k} {v}" for k, v in deleted.items()))
    print(f"objects deleted: {swept.deleted}" + (f", {swept.failed} left to the leader's orphans duty"
                                                 if swept.failed else ""))
    return 0


def cmd_users_erase(args: argparse.Namespace, settings: Settings) -> int:
    """stayler users erase --user-id U [--yes]"""
    return _erase("user", args.user_id, args.yes, settings)


def cmd_vendors_erase(args: argparse.Namespace, settings: Settings) -> int:
    """stayler vendors erase --vendor-id V [--yes]"""
    return _erase("vendor", args.vendor_id, args.yes, settings)


def cmd_storage_audit(args: argparse.Namespace, settings: Settings) -> int:
    """stayler storage audit [--fix]: exit 0 when nothing is wrong (or every orphan was removed), else 1."""
    storage = storage_for(settings)
    tasks: dict[str, TaskID] = {}
    with connection(settings) as conn, Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                                TimeElapsedColumn(), console=err_console, transient=True) as bar:
        def progress(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        report = audit(conn, storage, grace_s=settings.orphan_grace_s, fix=args.fix, progress=progress)
    for key in report.orphans:
        print(f"object without a row: {key}")
    for image_id, key in report.missing:
        print(f"row without its object: image {image_id}: {key}")
    print(f"{storage.describe()}: {report.objects} objects, {report.rows} image rows; {len(report.orphans)} objects "
          f"without a row, {len(report.missing)} missing objects, {report.recent} unclaimed objects younger than "
          f"STAYLER_ORPHAN_GRACE_S left alone")
    if report.fixed is not None:
        print(f"fixed: {report.fixed.deleted} objects deleted, {report.fixed.kept} claimed meanwhile (kept), "
              f"{report.fixed.failed} could not be deleted")
        return 0 if not report.fixed.failed and not report.missing else 1
    return 0 if not report.orphans and not report.missing else 1
