"""2. Inference pipeline: images/s through the whole system with the shipped model vs a bare loop.

The bare loop runs in a spawned process (onnxruntime is never imported by this forking parent):
the same decode, preprocess, ``session.run``, render and encode functions the runner uses, over
the same images, with the same intra-op thread count, and nothing else. The system run registers
those same images through the producer, pre-queues one conversion per image and drains them with
one worker process (2 Dramatiq threads, the same intra-op threads) at claim batch 1 and batch N;
its rate is read from the database (first claim to last completion), as in the queue benchmark.
"""

from __future__ import annotations

import multiprocessing
import time

import psycopg

from bench.common import Row, Services, Sizes, drain_rate, fleet, wait_terminal

NAME = "inference"
MODEL = "tryon-geometric"
PAIRS = 16


def images(sizes: Sizes, count: int = PAIRS) -> list[tuple[bytes, bytes]]:
    """The (person JPEG, garment JPEG) pairs both sides use."""
    from modelkit.bench import make_images

    return make_images(min(count, PAIRS), sizes.person_size, (384, 384))


def _bare_loop(pairs: list[tuple[bytes, bytes]], count: int, threads: int, model: str) -> dict[str, float]:
    """(In a spawned process) img/s of the bare end-to-end loop and of the bare model call alone."""
    from imaging.decode import decode_image
    from imaging.encode import encode_image
    from models.pipeline import prepare_inputs, render_result
    from models.runner import TryOnJob, TryOnRunner

    runner = TryOnRunner(model, intra_op_threads=threads, max_batch=1)
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
    t0 = time.perf_counter()
    for i in range(count):
        one(*pairs[i % len(pairs)])
    e2e = count / (time.perf_counter() - t0)
    feeds = [{k: v[None] for k, v in runner.prepare(TryOnJob(p, c)).tensors.items()} for p, c in pairs]
    t0 = time.perf_counter()
    for i in range(count):
        session.run(names, feeds[i % len(feeds)])
    bare = count / (time.perf_counter() - t0)
    return {"e2e": e2e, "model": bare, "ms_e2e": 1000 / e2e, "ms_model": 1000 / bare}


def bare_loop(pairs: list[tuple[bytes, bytes]], count: int, threads: int, model: str = MODEL) -> dict[str, float]:
    """Run :func:`_bare_loop` in a fresh spawned process and return its numbers."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_bare_loop, (pairs, count, threads, model))


def person_stage(pairs: list[tuple[bytes, bytes]], threads: int, batch: int) -> dict[str, float]:
    """The default pipeline's person stage alone and the pipeline through the runner (spawned process)."""
    from modelkit.bench import person_stage_rates

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(person_stage_rates, (pairs, threads, batch))


def system_rate(svc: Services, sizes: Sizes, pairs: list[tuple[bytes, bytes]], count: int, batch: int,
                threads: int) -> float:
    """Images/s through the whole system (one worker process) at claim batch ``batch``."""
    from producer import register_image
    from producer.accounts import create_user
    from producer.images import ImageLimits
    from storage import from_url

    label = f"inf{batch}"
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
        with fleet(url, svc.redis_url, svc.queue_name(label), work, processes=1, threads=2, STAYLER_MODEL=MODEL,
                   STAYLER_MODEL_THREADS=str(threads), STAYLER_CLAIM_BATCH_SIZE=str(batch)) as flt:
            wait_terminal(conn, count, max(300.0, count * 2.0), flt)
        done, seconds, other = drain_rate(conn)
        if other:
            raise RuntimeError(f"{other} conversions did not complete")
        return done / seconds


def run(svc: Services, sizes: Sizes) -> list[Row]:
    """Bare loop, then the system at batch 1 and batch N; ratios to the bare end-to-end loop."""
    from models.runner import available_cores

    threads = available_cores()
    pairs = images(sizes)
    count = sizes.inference_images
    bare = bare_loop(pairs, count, threads)
    b1 = system_rate(svc, sizes, pairs, count, 1, threads)
    bn = system_rate(svc, sizes, pairs, count, sizes.inference_batch, threads)
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
        Row(NAME, "stayler system, 1 proc × 2 thr, claim batch 1", b1, "img/s", ratio=b1 / bare["e2e"],
            ratio_of="bare loop", target="≥ 0.95× bare loop", met=b1 / bare["e2e"] >= 0.95,
            note=f"{count} conversions, with storage and bookkeeping"),
        Row(NAME, f"stayler system, 1 proc × 2 thr, claim batch {sizes.inference_batch}", bn, "img/s",
            ratio=bn / bare["e2e"], ratio_of="bare loop", target="> 1.0× bare loop if batching pays",
            met=bn / bare["e2e"] > 1.0, note=f"{count} conversions"),
    ]
    return [*rows, *person_rows]
