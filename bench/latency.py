"""3. Latency: enqueue-to-completed p50/p95/p99 at a fixed arrival rate below capacity (open loop).

An open-loop generator submits one conversion through the Python producer at each scheduled
instant ``t0 + i / rate``, whether or not earlier ones finished (a late submit is sent at once and
the lag is reported, so slow service cannot hide latency: no coordinated omission). Latency is
``completed_at − created_at`` of each job, both stamped by PostgreSQL. The benchmark's model, 2
Dramatiq threads per worker process, claim batch 1. "Model time" is the bare end-to-end loop's time per image
for the same photo in a spawned process (see the inference benchmark); targets: p50 ≤ it + 10 ms,
p95 ≤ it + 20 ms, judged on the fleet as configured.

Three fleets alternate in blocks, so a host that gets busier weighs on all: the fleet as configured
(``STAYLER_WORKER_PROCESSES``, the cores split between them as intra-op threads), the same with
glibc's adaptive malloc thresholds (``core.malloc``), and one process given every core (the model's
time is the bare loop's with every core). Per
mode: the queue's part, the worker's stages (/metrics) and where the machine's CPU went during the
measured windows, per process and per worker thread (``bench.cpu_split``). Requests at 5/s each find
an idle machine, so the bare loop is also timed at the run's arrival cadence, idling by sleeping and,
alternately, by spinning: what that difference costs is the price of a halted CPU, not of the queue.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.common import Row, Services, Sizes, Workload, fleet, percentile, terminal_count, wait_terminal
from bench.cpu_split import CpuSnapshot, CpuSplit
from bench.inference import MODEL, bare_loop
from core.settings import Settings
from schema.statuses import JobStatus

NAME = "latency"
MODEL_STAGES = ("person", "decode", "preprocess", "inference", "postprocess", "encode")
OWN_STAGES = ("read", "store", "database")
BARE_IMAGES = 30  # back-to-back images of the bare loop; the model's time is their median
WARM_UP = 3  # conversions each fleet runs before its block is measured


@dataclass(frozen=True)
class Mode:
    """A fleet layout the run measures: worker processes and intra-op threads per process."""

    processes: int
    model_threads: int
    env: tuple[tuple[str, str], ...] = ()


def modes(settings: Settings, cores: int) -> dict[str, Mode]:
    """The fleet as configured (its processes, cores split between them), the same with glibc's adaptive
    malloc (``core.malloc``), and one process with every core."""
    configured = Mode(settings.worker_processes, settings.model_threads or max(1, cores // settings.worker_processes))
    layout = f"{configured.processes} process(es) × {configured.model_threads} intra-op thread(s)"
    modes = {f"as configured: {layout}": configured,
             f"{layout}, glibc's adaptive malloc (STAYLER_MALLOC_KEEP_MB=0)":
                 Mode(configured.processes, configured.model_threads, (("STAYLER_MALLOC_KEEP_MB", "0"),))}
    single = Mode(1, cores)
    if single != configured:
        modes[f"1 process × {cores} intra-op threads"] = single
    return modes


@dataclass
class _Measured:
    """One mode's conversions over its blocks."""

    latency: list[float] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)
    cpu: list[CpuSplit] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """Warm each fleet up, then submit at ``latency_rate_per_s``; the two modes alternate in blocks."""
    from modelkit.samples import make_garment, make_person, to_bytes
    from models.runner import available_cores

    threads = available_cores()
    work = svc.work_dir / "latency"
    pair = (to_bytes(make_person(*sizes.person_size, seed=5).image), to_bytes(make_garment(seed=3)))
    settings = Settings()
    bare = bare_loop([pair], max(BARE_IMAGES, int(sizes.latency_rate_per_s * 2)), threads,
                     cadence_s=1.0 / sizes.latency_rate_per_s, allow_spinning=settings.model_allow_spinning)
    blocks = max(1, sizes.latency_blocks)
    per_block = max(1, int(sizes.latency_rate_per_s * sizes.latency_seconds / (2 * blocks)))
    layouts = modes(settings, threads)
    measured = {label: _Measured() for label in layouts}
    with svc.fresh_database("lat") as url, psycopg.connect(url, autocommit=True) as conn:
        from producer import Waker

        load = Workload(conn, work / "storage", sizes.person_size)
        queue = svc.queue_name("lat")
        load.waker = Waker.from_url(svc.redis_url, queue)  # the producer wakes a worker itself after commit
        for _ in range(blocks):
            for label, mode in layouts.items():
                _block(conn, load, work, svc.redis_url, url, queue, mode, per_block, sizes.latency_rate_per_s,
                       measured[label])
    return [*_mode_rows(measured, bare, sizes, blocks), *_cold_rows(bare)]


def _block(conn: psycopg.Connection, load: Workload, work: Path, redis_url: str, url: str, queue: str,
           mode: Mode, count: int, rate: float, into: _Measured) -> None:
    """Boot a fleet laid out as ``mode``, warm it up, submit ``count`` conversions open loop, read them back."""
    with fleet(url, redis_url, queue, work, processes=mode.processes, threads=2, STAYLER_MODEL=MODEL,
               STAYLER_MODEL_THREADS=str(mode.model_threads), STAYLER_CLAIM_BATCH_SIZE="1", **dict(mode.env)) as flt:
        done = terminal_count(conn)
        for _ in range(WARM_UP * mode.processes):
            load.submit_one()
        wait_terminal(conn, done + WARM_UP * mode.processes, 120, flt, interval_s=0.05)
        time.sleep(0.5)
        workers = flt.worker_pids()
        before = CpuSnapshot.take(flt.proc.pid, workers)
        interval = 1.0 / rate
        ids = []
        t0 = time.perf_counter()
        for i in range(count):
            due = t0 + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            into.lags.append(max(0.0, time.perf_counter() - due))
            ids.append(load.submit_one())
        wait_terminal(conn, done + WARM_UP * mode.processes + count, 120 + count, flt, interval_s=0.05)
        into.cpu.append(CpuSplit.between(before, CpuSnapshot.take(flt.proc.pid, workers), count))
        into.stages.append(flt.stage_means_ms())
    rows = conn.execute(
        "SELECT extract(epoch FROM j.completed_at - j.created_at) * 1000, j.status, "
        "       extract(epoch FROM j.started_at - j.created_at) * 1000 "
        "FROM conversion_jobs j WHERE j.conversion_id = ANY(%s)", (ids,)).fetchall()
    into.latency += [float(r[0]) for r in rows if r[1] == JobStatus.COMPLETED]
    into.wait += [float(r[2]) for r in rows if r[1] == JobStatus.COMPLETED]


def _mode_rows(measured: dict[str, _Measured], bare: dict[str, float], sizes: Sizes, blocks: int) -> list[Row]:
    """Per mode: p50/p95/p99 against the model's time, the queue's part, the worker's split and the CPU."""
    model_ms, isolated_ms = bare["ms_e2e_median"], bare["ms_isolated"]
    rows = [Row(NAME, "model time (bare end-to-end loop back to back, median per image)", model_ms, "ms",
                note=f"mean {bare['ms_e2e']:.1f} ms")]
    for index, (label, m) in enumerate(measured.items()):
        lat, wait = m.latency, m.wait
        if not lat:
            rows.append(Row(NAME, f"[{label}] no conversion completed", 0.0, "", met=False))
            continue
        work_ms = [a - b for a, b in zip(lat, wait, strict=True)]
        p50, p95, p99 = (percentile(lat, q) for q in (0.5, 0.95, 0.99))
        first = index == 0  # the targets are judged on the fleet as configured
        note = (f"{len(lat)} conversions at {sizes.latency_rate_per_s:g}/s open loop in {blocks} block(s) alternating "
                f"with the other modes; max submit lag {1000 * max(m.lags, default=0):.1f} ms")
        rows += [
            Row(NAME, f"[{label}] enqueue → completed p50", p50, "ms",
                target="≤ model time + 10 ms (idle system)" if first else "",
                met=p50 <= model_ms + 10 if first else None,
                note=f"{p50 - model_ms:+.1f} ms over model time, {p50 - isolated_ms:+.1f} ms over the model's time "
                     f"at the arrival cadence; {note}"),
            Row(NAME, f"[{label}] enqueue → completed p95", p95, "ms",
                target="≤ model time + 20 ms (idle system)" if first else "",
                met=p95 <= model_ms + 20 if first else None, note=f"{p95 - model_ms:+.1f} ms over model time"),
            Row(NAME, f"[{label}] enqueue → completed p99", p99, "ms",
                note=f"{p99 - model_ms:+.1f} ms over model time"),
            Row(NAME, f"[{label}]   of which enqueue → claimed (the producer's wake-up, Redis, claim) p50",
                percentile(wait, 0.5), "ms", note=f"p95 {percentile(wait, 0.95):.1f} ms"),
            Row(NAME, f"[{label}]   of which claimed → completed (inputs, model, storage, completion) p50",
                percentile(work_ms, 0.5), "ms", note=f"p95 {percentile(work_ms, 0.95):.1f} ms"),
            *_stage_rows(label, _mean_stages(m.stages)),
            *_cpu_rows(label, m.cpu),
        ]
    rows.append(Row(NAME, "model time at the arrival cadence (bare loop, one image every "
                    f"{1000 / sizes.latency_rate_per_s:.0f} ms, median)", isolated_ms, "ms",
                    ratio=isolated_ms / model_ms, ratio_of="back-to-back model time"))
    return rows


def _mean_stages(blocks: list[dict[str, float]]) -> dict[str, float]:
    """Stage means averaged over blocks of equal size (a stage missing from a block is left out)."""
    keys = set.intersection(*(set(b) for b in blocks)) if blocks else set()
    return {k: sum(b[k] for b in blocks) / len(blocks) for k in keys}


def _cold_rows(bare: dict[str, float]) -> list[Row]:
    """The bare loop at the cadence idling by spinning, and the loop thread's CPU time per image."""
    if "ms_isolated_spin" not in bare:
        return []
    spin, isolated = bare["ms_isolated_spin"], bare["ms_isolated"]
    return [
        Row(NAME, "  the same, idling by spinning instead of sleeping (the CPU never halts)", spin, "ms",
            ratio=spin / bare["ms_e2e_median"], ratio_of="back-to-back model time",
            note=f"sleeping costs {isolated - spin:+.1f} ms per image ({isolated / spin:.2f}×); images alternate"),
        Row(NAME, "  CPU time of the loop's own thread per image: back to back / after a sleep / after a spin",
            bare["cpu_ms_isolated"], "ms",
            ratio=bare["cpu_ms_isolated"] / bare["cpu_ms_e2e"], ratio_of="back to back",
            note=f"back to back {bare['cpu_ms_e2e']:.1f}, after a sleep {bare['cpu_ms_isolated']:.1f}, after a spin "
                 f"{bare['cpu_ms_isolated_spin']:.1f} ms: more CPU time for the same work, not waiting"),
    ]


def _cpu_rows(label: str, splits: list[CpuSplit], top_threads: int = 6) -> list[Row]:
    """CPU ms per conversion over the measured windows: per role, and the worker's threads."""
    if not splits:
        return []
    cpu = CpuSplit.merge(splits)
    rows = [Row(NAME, f"[{label}]   CPU per conversion in the window: the whole machine", cpu.machine_busy_ms, "ms",
                note=f"virtual CPU steal (host ran something else) {cpu.steal_ms:.1f} ms per conversion; "
                     f"the workers' minor page faults {cpu.worker_faults:.0f} per conversion")]
    for role, ms in cpu.by_role():
        threads = cpu.threads_of(role)
        detail = ", ".join(f"{name} {t:.1f}" for name, t in threads[:top_threads]) if len(threads) > 1 else ""
        rows.append(Row(NAME, f"[{label}]   CPU per conversion: {role}", ms, "ms", note=detail))
    return rows


def _stage_rows(label: str, stages: dict[str, float]) -> list[Row]:
    """The worker's time per conversion split into the model's stages and its own work (/metrics means)."""
    model = [s for s in MODEL_STAGES if s in stages]
    own = [s for s in OWN_STAGES if s in stages]
    if not model or not own:
        return []
    return [
        Row(NAME, f"[{label}]   worker: the model's stages per conversion (mean)", sum(stages[s] for s in model), "ms",
            note=", ".join(f"{s} {stages[s]:.1f}" for s in model)),
        Row(NAME, f"[{label}]   worker: its own work per conversion after the claim (mean)",
            sum(stages[s] for s in own), "ms",
            note=", ".join(f"{s} {stages[s]:.1f}" for s in own) + " (database = the fenced completion)"),
    ]
