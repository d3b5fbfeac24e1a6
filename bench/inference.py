"""2. Inference pipeline: images/s through the whole system with the shipped model vs a bare loop.

The bare loop runs in a spawned process (onnxruntime is never imported by this forking parent):
the same decode, preprocess, ``session.run``, render and encode functions the runner uses, over
the same images, with the same intra-op thread count, and nothing else. The system run registers
those same images through the producer, pre-queues one conversion per image and drains them with a
fleet; its rate is read from the database (first claim to last completion), as in the queue
benchmark. The fleet's configuration (processes, Dramatiq threads, claim batch, intra-op threads)
is swept over ``Sizes.inference_grid`` within ``Sizes.inference_budget_s``, and each row reports the
configuration that gave the best rate: at claim batch 1 and with batching (against the bare loop),
and overall (against the bare ``session.run`` alone).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable

import psycopg

from bench.common import Row, Services, Sizes, drain_rate, fleet, wait_terminal

NAME = "inference"
CADENCE_IMAGES = 30  # images per way of idling in the cadence run
MODEL = "tryon-geometric"
PAIRS = 16


def images(sizes: Sizes, count: int = PAIRS) -> list[tuple[bytes, bytes]]:
    """The (person JPEG, garment JPEG) pairs both sides use."""
    from modelkit.bench import make_images

    return make_images(min(count, PAIRS), sizes.person_size, (384, 384))


def _bare_loop(pairs: list[tuple[bytes, bytes]], count: int, threads: int, model: str,
               cadence_s: float = 0.0, allow_spinning: bool = False) -> dict[str, float]:
    """(In a spawned process) img/s of the bare end-to-end loop and of the bare model call alone.

    With ``cadence_s`` it also runs the loop once more starting one image every ``cadence_s``
    seconds, as requests arrive at an idle service (:func:`_at_cadence`).
    """
    from imaging.decode import decode_image
    from imaging.encode import encode_image
    from models.pipeline import prepare_inputs, render_result
    from models.runner import TryOnJob, TryOnRunner

    runner = TryOnRunner(model, intra_op_threads=threads, max_batch=1, allow_spinning=allow_spinning)
    session, manifest = runner.session, runner.manifest
    names = [o.name for o in session.get_outputs()]
    cloth_side = max(max(i.height, i.width) for i in manifest.inputs if i.effective_role != "person")

    def one(p: bytes, c: bytes) -> None:
        person = decode_image(p, max_pixels=runner.max_pixels)
        cloth = decode_image(c, max_pixels=runner.max_pixels, draft_side=cloth_side)
        tensors, placement = prepare_inputs(manifest, person, cloth)
        out = session.run(names, {k: v[None] for k, v in tensors.items()})
        alpha = out[1][0] if len(out) > 1 else None
        encode_image(render_result(person, placement, out[0][0], alpha, manifest.image_output), "jpeg", 90)

    for p, c in pairs[:2]:
        one(p, c)  # warm-up
    t0, c0 = time.perf_counter(), time.thread_time()
    each = []
    for i in range(count):
        t_image = time.perf_counter()
        one(*pairs[i % len(pairs)])
        each.append(1000 * (time.perf_counter() - t_image))
    e2e = count / (time.perf_counter() - t0)
    cpu_ms_e2e = 1000 * (time.thread_time() - c0) / count
    feeds = [{k: v[None] for k, v in runner.prepare(TryOnJob(p, c)).tensors.items()} for p, c in pairs]
    t0 = time.perf_counter()
    for i in range(count):
        session.run(names, feeds[i % len(feeds)])
    bare = count / (time.perf_counter() - t0)
    numbers = {"e2e": e2e, "model": bare, "ms_e2e": 1000 / e2e, "ms_model": 1000 / bare, "cpu_ms_e2e": cpu_ms_e2e,
               "ms_e2e_median": sorted(each)[len(each) // 2]}
    if cadence_s > 0:
        numbers.update(_at_cadence(one, pairs, max(count, CADENCE_IMAGES), cadence_s))
    return numbers


def _at_cadence(one: Callable[[bytes, bytes], None], pairs: list[tuple[bytes, bytes]], count: int,
                cadence_s: float) -> dict[str, float]:
    """Median wall and own-thread CPU ms of one image every ``cadence_s``, idling by sleep or by spin.

    The two ways of idling alternate image by image, so a host that gets busier meanwhile weighs on
    both alike. Sleeping lets the virtual CPU halt; spinning keeps it running. An image that costs
    more CPU time after a sleep ran the same instructions slower: it did not wait for anything.
    """
    walls: dict[str, list[float]] = {"sleep": [], "spin": []}
    cpus: dict[str, list[float]] = {"sleep": [], "spin": []}
    for i in range(2 * count):
        how = "sleep" if i % 2 == 0 else "spin"
        if how == "sleep":
            time.sleep(cadence_s)
        else:
            end = time.perf_counter() + cadence_s
            while time.perf_counter() < end:
                pass
        c0, t0 = time.thread_time(), time.perf_counter()
        one(*pairs[(i // 2) % len(pairs)])
        walls[how].append(1000 * (time.perf_counter() - t0))
        cpus[how].append(1000 * (time.thread_time() - c0))
    med = {k: sorted(v)[len(v) // 2] for k, v in (*walls.items(), *((f"cpu_{k}", v) for k, v in cpus.items()))}
    return {"ms_isolated": med["sleep"], "ms_isolated_spin": med["spin"],
            "cpu_ms_isolated": med["cpu_sleep"], "cpu_ms_isolated_spin": med["cpu_spin"]}


def bare_loop(pairs: list[tuple[bytes, bytes]], count: int, threads: int, model: str = MODEL, *,
              cadence_s: float = 0.0, allow_spinning: bool = False) -> dict[str, float]:
    """Run :func:`_bare_loop` in a fresh spawned process and return its numbers."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_bare_loop, (pairs, count, threads, model, cadence_s, allow_spinning))


def person_stage(pairs: list[tuple[bytes, bytes]], threads: int, batch: int) -> dict[str, float]:
    """The default pipeline's person stage alone and the pipeline through the runner (spawned process)."""
    from modelkit.bench import person_stage_rates

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(person_stage_rates, (pairs, threads, batch))


def system_rate(svc: Services, sizes: Sizes, pairs: list[tuple[bytes, bytes]], count: int, batch: int,
                threads: int, *, processes: int = 1, worker_threads: int = 2) -> float:
    """Images/s through the whole system at claim batch ``batch``, ``threads`` intra-op threads."""
    from producer import register_image
    from producer.accounts import create_user
    from producer.images import ImageLimits
    from storage import from_url

    label = f"inf{processes}x{worker_threads}x{batch}x{threads}"
    work = svc.work_dir / label
    limits = ImageLimits(max_bytes=20_000_000, max_pixels=40_000_000, thumbnail_size=256)
    with svc.fresh_database(label) as url, psycopg.connect(url, autocommit=True) as conn:
        store = from_url(f"file://{(work / 'storage').resolve()}")
        user = create_user(conn)
        ids = [(register_image(conn, store, p, owner_id=user, owner_type="user", image_type="user", limits=limits).id,
                register_image(conn, store, c, owner_id=user, owner_type="user", image_type="cloth", limits=limits).id)
               for p, c in pairs]
        with conn.transaction():
            for i in range(count):
                person, cloth = ids[i % len(ids)]
                conn.execute("SELECT create_conversion(user_id := %s, user_image_id := %s, cloth_image_id := %s)",
                             (user, person, cloth))
        with fleet(url, svc.redis_url, svc.queue_name(label), work, processes=processes, threads=worker_threads,
                   STAYLER_MODEL=MODEL,
                   STAYLER_MODEL_THREADS=str(threads), STAYLER_CLAIM_BATCH_SIZE=str(batch)) as flt:
            wait_terminal(conn, count, max(300.0, count * 2.0), flt)
        done, seconds, other = drain_rate(conn)
        if other:
            raise RuntimeError(f"{other} conversions did not complete")
        return done / seconds


Config = tuple[int, int, int, int]


def describe(config: Config) -> str:
    """``P proc × T thr, claim batch B, I intra-op thr``."""
    processes, threads, batch, intra = config
    return f"{processes} proc × {threads} thr, claim batch {batch}, {intra} intra-op thr"


def sweep(svc: Services, sizes: Sizes, pairs: list[tuple[bytes, bytes]]) -> dict[Config, float]:
    """Images/s of each candidate of ``sizes.inference_grid`` tried within ``inference_budget_s``.

    The first candidate of each claim batch always runs; the others only while the budget lasts.
    """
    started = time.monotonic()
    rates: dict[Config, float] = {}
    seen_batches: set[int] = set()
    for config in sizes.inference_grid:
        processes, threads, batch, intra = config
        if batch in seen_batches and time.monotonic() - started > sizes.inference_budget_s:
            continue
        seen_batches.add(batch)
        rates[config] = system_rate(svc, sizes, pairs, sizes.inference_images, batch, intra, processes=processes,
                                    worker_threads=threads)
    return rates


def _best_row(rates: dict[Config, float], label: str, bare: float, of: str, minimum: float,
              strict: bool = False) -> Row:
    """The best configuration of ``rates`` against ``bare`` (target: ≥ ``minimum``, or > when ``strict``)."""
    target = f"{'>' if strict else '≥'} {minimum}× {of}" + (" if batching pays" if strict else "")
    if not rates:
        return Row(NAME, f"stayler system, best {label}", None, "img/s", target=target, note="no candidate in the grid")
    best = max(rates, key=lambda c: rates[c])
    ratio = rates[best] / bare
    others = "; ".join(f"{describe(c)}: {r:.1f}" for c, r in sorted(rates.items(), key=lambda kv: -kv[1])
                       if c != best)
    return Row(NAME, f"stayler system, best {label}: {describe(best)}", rates[best], "img/s", ratio=ratio,
               ratio_of=of, target=target, met=ratio > minimum if strict else ratio >= minimum,
               note=f"{len(rates)} configurations tried" + (f"; others: {others}" if others else ""))


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """Bare loop, then the configuration sweep of the system; ratios to the bare loop and the bare model."""
    from models.runner import available_cores

    threads = available_cores()
    pairs = images(sizes)
    count = sizes.inference_images
    bare = bare_loop(pairs, count, threads)
    rates = sweep(svc, sizes, pairs)
    single = {c: r for c, r in rates.items() if c[2] == 1}
    batched = {c: r for c, r in rates.items() if c[2] > 1}
    shape = f"{sizes.person_size[0]}×{sizes.person_size[1]} photos, {threads} intra-op thr"
    people = person_stage(pairs, threads, sizes.inference_batch)
    n = sizes.inference_batch
    person_rows = [
        Row(NAME, "person stage alone (person-mediapipe session.run), batch 1", people["person_b1"], "img/s",
            note=f"{1000 / people['person_b1']:.1f} ms/img"),
        Row(NAME, f"person stage alone, batch {n}", people["person_bn"], "img/s",
            note=f"{1000 / people['person_bn']:.1f} ms/img"),
        Row(NAME, "default pipeline person-mediapipe+tryon-fit via the runner, batch 1", people["pipeline_b1"],
            "img/s", note=f"{1000 / people['pipeline_b1']:.1f} ms/img, decode to encode"),
        Row(NAME, f"default pipeline via the runner, batch {n}", people["pipeline_bn"], "img/s",
            note=f"{1000 / people['pipeline_bn']:.1f} ms/img"),
    ]
    rows = [
        Row(NAME, f"bare onnxruntime session.run only, batch 1 ({shape})", bare["model"], "img/s",
            note=f"{bare['ms_model']:.1f} ms/img: the model alone"),
        Row(NAME, "bare loop end to end (decode, preprocess, run, render, encode), batch 1", bare["e2e"], "img/s",
            note=f"{bare['ms_e2e']:.1f} ms/img"),
        _best_row(single, "at claim batch 1", bare["e2e"], "bare loop", 1.0),
        _best_row(batched, "with claim batching", bare["e2e"], "bare loop", 1.0, strict=True),
        _best_row(rates, "configuration", bare["model"], "bare session.run", 0.85),
    ]
    for row in rows[2:]:
        row.note = f"{count} conversions each; " + row.note
    return [*rows, *person_rows]
