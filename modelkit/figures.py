"""The documentation figures of real photos: ``python -m modelkit.figures``.

For each person photo in ``tests/data/photos`` (real photos shipped in PyPI packages; sources and
licences in ``tests/data/photos/README.md``) it writes ``docs/img/real-<name>.png``: the photo,
then each of two garments with its result, and prints the per-photo figures of
:mod:`modelkit.checks`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from modelkit.checks import measure
from modelkit.cli import compose_row, sample_garments
from models.registry import DEFAULT_MODEL
from models.runner import TryOnRunner

PHOTOS = Path("tests/data/photos")
PEOPLE = ("astronaut", "cameraman", "grace-hopper")
OUT = Path("docs/img")


def main(argv: Sequence[str] | None = None) -> int:
    """Write the composites and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m modelkit.figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model setting (default %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the composites (default %(default)s)")
    args = parser.parse_args(argv)
    runner = TryOnRunner(args.model, output_format="jpeg", quality=95)
    garments = sample_garments()
    for name in PEOPLE:
        person = (PHOTOS / f"{name}.jpg").read_bytes()
        tiles = [person]
        for label, cloth in garments:
            tiles += [cloth, runner.run_one(person, cloth).image]
            print(f"{name} + {label}: {measure(runner, person, cloth).line()}")
        path = args.out / f"real-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        compose_row(tiles, height=320).save(path, optimize=True)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
