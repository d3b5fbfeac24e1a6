"""``stayler bench model`` / ``python -m modelkit.bench``: runner throughput against a bare onnxruntime loop.

In one run, on the same images, the same session options and thread counts, it measures:

* ``bare onnxruntime, batch 1``: ``session.run`` over tensors prepared beforehand: the model alone;
* ``bare onnxruntime, batch N``: the same with N images stacked per call;
* ``bare loop, end to end``: a plain ``for`` loop calling the same decode, preprocess,
  ``session.run``, render and encode functions the runner uses, with nothing else: the baseline
  for the runner's own overhead (target: runner batch 1 >= 0.95 of it);
* ``runner, batch 1``: ``TryOnRunner.run_batch`` with one job: decode, preprocess, model, render back
  to the photo's size, encode;
* ``runner, batch N``: the same with N jobs per call (one model call), with one I/O thread and
  with ``--io-threads`` threads decoding/encoding the batch's items in parallel;
* with a person stage in front (the default, ``person-mediapipe+tryon-fit``): ``person stage
  alone``, its ``session.run`` at batch 1 and N; the bare loops then run both stages.

Rounds are interleaved (every mode once per round) and the median round is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from modelkit.samples import make_garment, make_person, to_bytes
from models.registry import DEFAULT_MODEL


@dataclass(frozen=True)
class BenchRow:
    """One measured mode."""

    label: str
    images_per_s: float
    ms_per_image: float
    end_to_end: bool = True


def make_images(count: int, person_size: tuple[int, int], garment_size: tuple[int, int]) -> list[tuple[bytes, bytes]]:
    """``count`` (person JPEG, garment JPEG) pairs with varied pose, scale and garment."""
    rng = np.random.default_rng(1234)
    pairs = []
    for i in range(count):
        person = make_person(*person_size, seed=i, offset_x=float(rng.uniform(-0.12, 0.12)),
                             scale=float(rng.uniform(0.72, 0.92)))
        garment = make_garment(*garment_size, seed=i)
        pairs.append((to_bytes(person.image), to_bytes(garment)))
    return pairs


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``stayler bench model``."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model path or name (default %(default)s)")
    parser.add_argument("--images", type=int, default=16, help="distinct image pairs (default %(default)s)")
    parser.add_argument("--batch", type=int, default=8, help="N for the batched modes (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; median reported")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: usable cores)")
    parser.add_argument("--person-size", type=_size, default=(768, 1024), help="WxH of person photos")
    parser.add_argument("--garment-size", type=_size, default=(512, 512), help="WxH of garment photos")
    parser.add_argument("--format", default="jpeg", choices=["jpeg", "webp"], help="result encoding")
    parser.add_argument("--io-threads", type=int, default=None,
                        help="decode/encode threads for the last mode (default: intra-op threads)")


def bench_model_main(args: argparse.Namespace) -> int:
    """Run the benchmark described in the module docstring and print the table."""
    rows = run_bench(
        model=args.model, images=args.images, batch=args.batch, rounds=args.rounds, threads=args.threads,
        person_size=args.person_size, garment_size=args.garment_size, output_format=args.format,
        io_threads=args.io_threads,
    )
    print_table(rows)
    return 0


def run_bench(
    *,
    model: str = DEFAULT_MODEL,
    images: int = 16,
    batch: int = 8,
    rounds: int = 5,
    threads: int | None = None,
    person_size: tuple[int, int] = (768, 1024),
    garment_size: tuple[int, int] = (512, 512),
    output_format: str = "jpeg",
    io_threads: int | None = None,
) -> list[BenchRow]:
    """Measure every mode and return them (bare model batch 1 first, bare end-to-end third)."""
    from imaging.decode import decode_image
    from imaging.encode import encode_image
    from models.pipeline import prepare_inputs, prepare_person_stage, render_result
    from models.runner import TryOnJob, TryOnRunner
    from models.stages import PersonOutputs, to_tryon_canvas

    pairs = make_images(images, person_size, garment_size)
    jobs = [TryOnJob(p, c) for p, c in pairs]
    r1 = TryOnRunner(model, intra_op_threads=threads, max_batch=1, output_format=output_format)
    rn = TryOnRunner(model, intra_op_threads=threads, max_batch=batch, output_format=output_format)
    io = io_threads or r1.intra_op_threads
    rn_io = TryOnRunner(model, intra_op_threads=threads, max_batch=batch, output_format=output_format, io_threads=io)
    manifest = r1.manifest
    cloth_side = max(max(i.height, i.width) for i in manifest.inputs if i.effective_role != "person")
    session = r1.session
    items = [r1.prepare(j) for j in jobs]
    r1.find_people(items)
    prepared = [it.tensors for it in items]
    person_stage = r1.person_stage
    feeds1 = [{k: v[None] for k, v in t.items()} for t in prepared]
    feedsn = [
        {k: np.stack([t[k] for t in prepared[i:i + batch]]) for k in prepared[0]}
        for i in range(0, len(prepared), batch)
    ]
    out_names = [o.name for o in session.get_outputs()]

    def bare1() -> None:
        for f in feeds1:
            session.run(out_names, f)

    def baren() -> None:
        for f in feedsn:
            rn.session.run(out_names, f)

    def bare_e2e() -> None:
        for p, c in pairs:
            person = decode_image(p, max_pixels=r1.max_pixels)
            cloth = decode_image(c, max_pixels=r1.max_pixels, draft_side=cloth_side)
            tensors, placement = prepare_inputs(manifest, person, cloth)
            if person_stage is not None:
                psession, pm = person_stage
                x, ppl = prepare_person_stage(pm, person)
                roles = sorted(pm.provides)
                got = dict(zip(roles, psession.run([pm.provides[r] for r in roles], {pm.person_input.name: x[None]}),
                               strict=True))
                view = PersonOutputs(float(got["person_score"][0, 0]), ppl, got["person_mask"][0], None,
                                     got["pose_keypoints"][0])
                tensors.update(to_tryon_canvas(view, manifest.needs, placement))
            out = session.run(out_names, {k: v[None] for k, v in tensors.items()})
            alpha = out[1][0] if len(out) > 1 else None
            encode_image(render_result(person, placement, out[0][0], alpha, manifest.image_output), output_format, 90)

    def runner1() -> None:
        for j in jobs:
            _check(r1.run_batch([j]))

    def runnern() -> None:
        for i in range(0, len(jobs), batch):
            _check(rn.run_batch(jobs[i:i + batch]))

    def runnern_io() -> None:
        for i in range(0, len(jobs), batch):
            _check(rn_io.run_batch(jobs[i:i + batch]))

    modes: list[tuple[str, Callable[[], None]]] = [
        ("bare onnxruntime, batch 1", bare1),
        (f"bare onnxruntime, batch {batch}", baren),
        ("bare loop, end to end, b1", bare_e2e),
        ("runner, batch 1", runner1),
        (f"runner, batch {batch}", runnern),
        (f"runner, batch {batch}, {io} io thr", runnern_io),
    ]
    if person_stage is not None:
        psession, pm = person_stage
        pnames = [pm.provides[r] for r in sorted(pm.provides)]
        pinputs = [it.person_input for it in items if it.person_input is not None]

        def person1() -> None:
            for x in pinputs:
                psession.run(pnames, {pm.person_input.name: x[None]})

        def personn() -> None:
            for i in range(0, len(pinputs), batch):
                psession.run(pnames, {pm.person_input.name: np.stack(pinputs[i:i + batch])})

        modes += [("person stage alone, batch 1", person1), (f"person stage alone, batch {batch}", personn)]
    for _, fn in modes:  # warm-up: first runs allocate arenas and pick kernels
        fn()
    times: dict[str, list[float]] = {label: [] for label, _ in modes}
    for _ in range(rounds):
        for label, fn in modes:
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    header = (f"model {r1.model_version}, contract {r1.manifest.person_input.width}x"
              f"{r1.manifest.person_input.height}, photos {person_size[0]}x{person_size[1]}, "
              f"{images} pairs, intra-op threads {r1.intra_op_threads}, providers {','.join(r1.providers)}")
    print(header)
    rows = []
    for label, _ in modes:
        sec = statistics.median(times[label])
        bare = label.startswith(("bare onnx", "person stage"))
        rows.append(BenchRow(label, len(jobs) / sec, 1000 * sec / len(jobs), not bare))
    for r in (r1, rn, rn_io):
        r.close()
    return rows


def _check(results: Sequence[object]) -> None:
    for r in results:
        if isinstance(r, Exception):
            raise r


def print_table(rows: Sequence[BenchRow]) -> None:
    """Print img/s, ms/img and the ratios to the bare model loop and the bare end-to-end loop."""
    model_base = rows[0].images_per_s
    e2e_base = next((r.images_per_s for r in rows if r.label.startswith("bare loop")), model_base)
    print(f"{'mode':<34} {'img/s':>8} {'ms/img':>8} {'vs bare model b1':>17} {'vs bare e2e b1':>15}")
    for row in rows:
        e2e = f"{row.images_per_s / e2e_base:>14.2f}x" if row.end_to_end else f"{'-':>15}"
        print(f"{row.label:<34} {row.images_per_s:>8.1f} {row.ms_per_image:>8.2f} "
              f"{row.images_per_s / model_base:>16.2f}x {e2e}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modelkit.bench [options]``."""
    parser = argparse.ArgumentParser(prog="python -m modelkit.bench", description=__doc__.split("\n\n")[0])
    add_bench_arguments(parser)
    return bench_model_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


def person_stage_rates(pairs: Sequence[tuple[bytes, bytes]], threads: int, batch: int,
                       model: str = DEFAULT_MODEL, rounds: int = 3) -> dict[str, float]:
    """img/s of a pipeline's person stage alone (``session.run``) and of the whole pipeline through
    the runner, at batch 1 and ``batch``; median of ``rounds``. Imports onnxruntime: call it in a
    process that does not fork workers afterwards (``stayler bench inference`` spawns one)."""
    from models.runner import TryOnJob, TryOnRunner

    r1 = TryOnRunner(model, intra_op_threads=threads, max_batch=1)
    rn = TryOnRunner(model, intra_op_threads=threads, max_batch=batch)
    if r1.person_stage is None:
        raise ValueError(f"model {model} has no person stage")
    session, manifest = r1.person_stage
    names = [manifest.provides[r] for r in sorted(manifest.provides)]
    jobs = [TryOnJob(p, c) for p, c in pairs]
    inputs = [x for x in (r1.prepare(j).person_input for j in jobs) if x is not None]
    feed = manifest.person_input.name
    def person_b1() -> None:
        for x in inputs:
            session.run(names, {feed: x[None]})

    def person_bn() -> None:
        for i in range(0, len(inputs), batch):
            session.run(names, {feed: np.stack(inputs[i:i + batch])})

    def pipeline_b1() -> None:
        for job in jobs:
            _check(r1.run_batch([job]))

    def pipeline_bn() -> None:
        for i in range(0, len(jobs), batch):
            _check(rn.run_batch(jobs[i:i + batch]))

    modes: dict[str, Callable[[], None]] = {"person_b1": person_b1, "person_bn": person_bn,
                                            "pipeline_b1": pipeline_b1, "pipeline_bn": pipeline_bn}
    for fn in modes.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in modes}
    for _ in range(rounds):
        for key, fn in modes.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {key: len(jobs) / statistics.median(values) for key, values in times.items()}
