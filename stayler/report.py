"""Human-readable reports printed by the CLI."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from schema.migrate import migration_status


def print_db_status(database_url: str, console: Console | None = None) -> None:
    """Print applied and pending migrations and the row count of every product table."""
    console = console or Console()
    status = migration_status(database_url)
    migrations = Table(title="Migrations")
    migrations.add_column("migration")
    migrations.add_column("applied at")
    for mig_id, applied_at in status.applied:
        migrations.add_row(mig_id, str(applied_at))
    for mig_id in status.pending:
        migrations.add_row(mig_id, "[yellow]pending[/yellow]")
    console.print(migrations)
    counts = Table(title="Tables")
    counts.add_column("table")
    counts.add_column("rows", justify="right")
    for table, count in sorted(status.table_counts.items()):
        counts.add_row(table, f"{count:,}")
    console.print(counts)
