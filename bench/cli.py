"""``stayler bench all|queue|inference|latency|scale|memory|enqueue|api|profile|idle|fairness|boundary|erasure|model
[--smoke]
[--out DIR]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.settings import Settings

NAMES = ("queue", "inference", "latency", "scale", "memory", "enqueue", "api", "profile", "idle", "fairness",
         "boundary", "erasure")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bench`` command group; each subcommand sets ``handler``."""
    bench = subparsers.add_parser(
        "bench", help="benchmarks side by side in one run (docs/benchmarks.md)",
        description="Run benchmarks on the configured (or embedded) PostgreSQL and Redis, each in a fresh "
                    "database and its own queue; write <out>/<timestamp>/results.md and chart.png and print "
                    "the table. --smoke uses tiny sizes (seconds; numbers not meaningful).")
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    helps = {
        "all": "every benchmark below, in order",
        "queue": "null-model conversions/s (1-2 processes, claim batch 1/16) beside the same workload on pgqueuer",
        "inference": "images/s through the system with the shipped model vs a bare onnxruntime loop (config sweep)",
        "latency": "enqueue-to-completed p50/p95/p99 at a fixed arrival rate (open loop)",
        "scale": "claim time with a small and a large queue (plus finished jobs)",
        "memory": "worker RSS at steady state and after N conversions",
        "enqueue": "conversions created per second, one at a time and in bulk",
        "api": "HTTP API: POST /v1/conversions at 50 clients and ?wait completions, beside producer.submit",
        "profile": "CPU ms per conversion by stage (py-spy on a null-model drain) and the straight-line floor",
        "idle": "Redis commands/s and CPU share of an idle worker process",
        "fairness": "claim time with 10,000 owners vs one; a vendor's flood and 20 latecomers (null model)",
        "boundary": "hostile customers: API peak RSS under 20 worst-case uploads, /healthz p99 under the largest "
                    "lists, webhook p99 with a drip receiver (issue 19)",
        "erasure": "erase an owner with 10,000 conversions on a folder and on S3 (moto), nothing left; "
                   "retention batch times",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--smoke", action="store_true", help="tiny sizes: checks it runs, numbers meaningless")
        p.add_argument("--out", type=Path, default=Path("bench-results"),
                       help="results folder (default: %(default)s); a <timestamp>/ folder is created in it")
        p.add_argument("--no-docs", action="store_true",
                       help="do not write the tables into docs/benchmarks.md (a full-size run "
                            "of `all` writes the whole table, a full-size profile its stage table)")
        p.set_defaults(handler=cmd_bench, bench_names=NAMES if name == "all" else (name,))
    from modelkit.bench import add_bench_arguments

    model = sub.add_parser("model", help="the model bench: the runner vs a bare onnxruntime loop",
                           description="Runner throughput against a bare onnxruntime loop (modelkit/bench.py).")
    add_bench_arguments(model)
    model.set_defaults(handler=cmd_bench_model)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Run the selected benchmarks and write the results."""
    from bench.runner import run

    command = "stayler bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "stayler bench all"
    run(args.bench_names, smoke=args.smoke, out_dir=args.out, settings=settings, command=command,
        publish_docs=not args.no_docs)
    return 0


def cmd_bench_model(args: argparse.Namespace, settings: Settings) -> int:
    """stayler bench model: the runner against a bare onnxruntime loop (the settings are not used)."""
    from modelkit.bench import bench_model_main

    return bench_model_main(args)
