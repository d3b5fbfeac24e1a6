"""Same-run cost of the default pipeline against an earlier try-on graph: ``python -m modelkit.compare OLD.onnx``.

Two runners in one process, measured in interleaved rounds on the same image pairs (the
benchmark's 768×1024 person and 512×512 garment JPEGs), at batch 8: the default pipeline as it is,
and the person stage in front of ``OLD.onnx`` with the pre-processing of before issue 21 (no
garment silhouette: an all-ones ``cloth_mask``; no subject gate). For the graph before issue 21::

    git show abfa2b2:models/artefacts/tryon-fit.onnx > /tmp/tryon-fit-old.onnx
    python -m modelkit.compare /tmp/tryon-fit-old.onnx --rounds 7

With ``--same-preprocessing`` the old graph gets today's pre-processing too, so only the graphs
differ (for a graph change such as ``tryon-fit`` 1.1.0 → 1.2.0)::

    git show 3dc1f79:models/artefacts/tryon-fit.onnx > /tmp/tryon-fit-1.1.0.onnx
    python -m modelkit.compare /tmp/tryon-fit-1.1.0.onnx --same-preprocessing --rounds 9

``--graph-only`` times just the two try-on sessions on one batch prepared by today's runner.

Prints the median milliseconds per image of each and their ratio (timings on a shared host are
noisy: the per-round ratios are printed too).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import models.pipeline as pipeline
import models.runner as runner_module
from modelkit.bench import make_images
from models.garment import silhouette
from models.registry import PERSON_MODEL
from models.runner import TryOnJob, TryOnRunner
from models.subject import choose_subject


def _no_subject(view: object, *, side_by_side: bool = True) -> None:
    """Issue 21's subject gate switched off: nobody chosen, nothing refused."""


def _before_issue_21(on: bool) -> None:
    """Switch the module-level pre-processing hooks to their pre-issue-21 behaviour, or back."""
    pipeline.silhouette = (lambda rgb: np.ones(rgb.shape[:2], np.float32)) if on else silhouette
    runner_module.choose_subject = _no_subject if on else choose_subject  # type: ignore[assignment]


def _per_image_ms(runner: TryOnRunner, jobs: Sequence[TryOnJob], old: bool, batch: int) -> float:
    _before_issue_21(old)
    try:
        t0 = time.perf_counter()
        for start in range(0, len(jobs), batch):
            out: list[Any] = runner.run_batch(jobs[start:start + batch])
            failed = [o for o in out if isinstance(o, Exception)]
            if failed:
                raise RuntimeError(f"a benchmark item failed: {failed[0]}")
        return (time.perf_counter() - t0) / len(jobs) * 1000
    finally:
        _before_issue_21(False)


def _graph_only(new: TryOnRunner, old: TryOnRunner, jobs: Sequence[TryOnJob], rounds: int) -> int:
    """Interleaved ``session.run`` of both try-on graphs on one batch prepared by today's runner."""
    items = [new.prepare(job) for job in jobs]
    new.find_people(items)
    feeds = {name: np.stack([it.tensors[name] for it in items]) for name in items[0].tensors}

    def ms(runner: TryOnRunner) -> float:
        t0 = time.perf_counter()
        runner.session.run(None, feeds)
        return (time.perf_counter() - t0) / len(items) * 1000

    ms(new), ms(old)
    olds: list[float] = []
    news: list[float] = []
    for i in range(rounds):
        for runner, sink in ((old, olds), (new, news)) if i % 2 == 0 else ((new, news), (old, olds)):
            sink.append(ms(runner))
    o, n = statistics.median(olds), statistics.median(news)
    print(f"try-on graphs alone, batch {len(items)}, {rounds} rounds: old {o:.1f} ms/img, new {n:.1f} ms/img, "
          f"ratio {n / o:.2f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(prog="python -m modelkit.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the earlier try-on graph (.onnx)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--images", type=int, default=16, help="image pairs (default %(default)s)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: usable cores)")
    parser.add_argument("--same-preprocessing", action="store_true",
                        help="run the old graph with today's pre-processing (compares the graphs alone)")
    parser.add_argument("--graph-only", action="store_true",
                        help="time only the try-on sessions' run on the same prepared batch (no decode, "
                             "person stage or encode)")
    args = parser.parse_args(argv)
    pairs = make_images(args.images, (768, 1024), (512, 512))
    jobs = [TryOnJob(person, cloth, key=i) for i, (person, cloth) in enumerate(pairs)]
    new = TryOnRunner(None, max_batch=args.batch, intra_op_threads=args.threads)
    old = TryOnRunner(f"{PERSON_MODEL}+{args.old}", max_batch=args.batch, intra_op_threads=args.threads)
    if args.graph_only:
        return _graph_only(new, old, jobs[:args.batch], args.rounds)
    before = not args.same_preprocessing
    _per_image_ms(new, jobs, False, args.batch)
    _per_image_ms(old, jobs, before, args.batch)
    olds: list[float] = []
    news: list[float] = []
    for i in range(args.rounds):
        order = (((old, before, olds), (new, False, news)) if i % 2 == 0
                 else ((new, False, news), (old, before, olds)))
        for runner, is_old, sink in order:
            sink.append(_per_image_ms(runner, jobs, is_old, args.batch))
    o, n = statistics.median(olds), statistics.median(news)
    print(f"batch {args.batch}, {args.images} pairs, {args.rounds} rounds: old {o:.1f} ms/img, new {n:.1f} ms/img, "
          f"ratio {n / o:.2f} (per round: {', '.join(f'{b / a:.2f}' for a, b in zip(olds, news, strict=True))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
