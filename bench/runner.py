"""Run benchmarks, then write ``<out>/<timestamp>/results.md`` and ``chart.png`` and print the table."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.common import FULL, SMOKE, Row, Services, Sizes, services
from core.settings import Settings

BenchFn = Callable[[Services, Sizes], list[Row]]


def benchmarks() -> dict[str, BenchFn]:
    """Name → entry point, in the order ``all`` runs them."""
    from bench.api import run as api
    from bench.boundary import run as boundary
    from bench.enqueue import run as enqueue
    from bench.erasure import run as erasure
    from bench.fairness import run as fairness
    from bench.idle import run as idle
    from bench.inference import run as inference
    from bench.latency import run as latency
    from bench.memory import run as memory
    from bench.profile import run as profile
    from bench.queue import run as queue
    from bench.scale import run as scale

    return {"queue": queue, "inference": inference, "latency": latency, "scale": scale, "memory": memory,
            "enqueue": enqueue, "api": api, "profile": profile, "idle": idle, "fairness": fairness,
            "boundary": boundary, "erasure": erasure}


def fmt_value(value: float | None) -> str:
    """A number for the table: thousands separators, precision by magnitude."""
    if value is None:
        return "n/a"
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: Sequence[Row]) -> str:
    """The results as a markdown table."""
    lines = ["| benchmark | case | result | unit | ratio | target | verdict | notes |",
             "|---|---|---:|---|---:|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}× {r.ratio_of}" if r.ratio is not None else ""
        lines.append(f"| {r.benchmark} | {r.case} | {fmt_value(r.value)} | {r.unit} | {ratio} | {r.target} | "
                     f"{r.verdict()} | {r.note} |")
    return "\n".join(lines)


def made_with(command: str, started: float) -> str:
    """The line naming the command, date, wall time, machine and versions of a run."""
    return (f"Made by `{command}` on {dt.datetime.now().strftime('%Y-%m-%d at %H:%M')} (wall time "
            f"{time.monotonic() - started:.0f} s) on {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{_versions()}.")


def write_results(rows: Sequence[Row], out_dir: Path, command: str, started: float, smoke: bool) -> Path:
    """Write results.md and chart.png under a new timestamped folder of ``out_dir``; returns it."""
    from bench.chart import draw_chart

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = out_dir / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = out_dir / f"{stamp}-{n}"
    folder.mkdir(parents=True)
    head = [
        f"# Benchmark results{' (smoke sizes: not meaningful numbers)' if smoke else ''}",
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}, wall time {time.monotonic() - started:.0f} s",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{_versions()}",
        "",
        "",
    ]
    (folder / "results.md").write_text("\n".join(head) + table(rows) + "\n")
    draw_chart(rows, folder / "chart.png")
    return folder


def _versions() -> str:
    parts = []
    for mod in ("onnxruntime", "psycopg", "dramatiq", "pgqueuer"):
        try:
            from importlib.metadata import version

            parts.append(f"{mod} {version(mod)}")
        except Exception:
            parts.append(f"{mod} absent")
    return ", ".join(parts)


def run(names: Sequence[str], *, smoke: bool = False, out_dir: Path = Path("bench-results"),
        settings: Settings | None = None, command: str = "stayler bench", sizes: Sizes | None = None,
        publish_docs: bool = False) -> Path:
    """Run the named benchmarks (in :func:`benchmarks` order); a failing one gets an error row.

    With ``publish_docs`` (never at smoke sizes) the tables are also written into the generated
    blocks of docs/benchmarks.md (:mod:`bench.publish`): the whole table when every
    benchmark ran, the per-stage CPU table when the profile ran.
    """
    settings = settings or Settings()
    sizes = sizes or (SMOKE if smoke else FULL)
    started = time.monotonic()
    registry = benchmarks()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="stayler-bench-") as tmp, services(settings, Path(tmp)) as svc:
        for name in registry:
            if name not in names:
                continue
            t0 = time.monotonic()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            try:
                rows.extend(registry[name](svc, sizes))
            except Exception as exc:
                traceback.print_exc()
                rows.append(Row(name, "error", None, "", note=f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
            print(f"bench: {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    folder = write_results(rows, out_dir, command, started, smoke)
    print(table(rows))
    print(f"\nwrote {folder / 'results.md'} and {folder / 'chart.png'}")
    if publish_docs and not smoke:
        from bench.publish import publish

        changed = publish(rows, made_with(command, started), table(rows), full_run=set(registry) <= set(names),
                          chart=folder / "chart.png")
        for path in changed:
            print(f"updated {path}")
    return folder
