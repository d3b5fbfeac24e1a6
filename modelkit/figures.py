"""The documentation figures of real photos: ``python -m modelkit.figures``.

For each person photo in ``tests/data/photos`` (real photos shipped in PyPI and Debian packages;
sources and licences in ``tests/data/photos/README.md``) it writes ``docs/img/real-<name>.png``:
the photo, then the result for each of the four hard garments of :mod:`modelkit.garments`, and
prints the per-photo figures of :mod:`modelkit.checks`; refused photos print their refusal.
``docs/img/garments.png`` shows the four garments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from modelkit.checks import measure
from modelkit.cli import compose_row
from modelkit.garments import hard_garments
from models.registry import DEFAULT_MODEL
from models.runner import TryOnRunner

PHOTOS = Path("tests/data/photos")
PEOPLE = ("astronaut", "cameraman", "grace-hopper", "suit-neighbours-arm", "street-walker",
          "dark-coat-crossed-arms", "holding-bottle", "holding-ball", "footballer-kick", "profile-patterned-shirt",
          "pair-second-look")
REFUSED = ("street-group", "two-men-suits", "sofa-three", "face-closeup", "face-sweater", "face-turned",
           "crouching-pair", "pair-one-turned-away", "stairs-small", "street-group-full", "sofa-three-lanczos")
OUT = Path("docs/img")


def main(argv: Sequence[str] | None = None) -> int:
    """Write the composites and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m modelkit.figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model setting (default %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the composites (default %(default)s)")
    args = parser.parse_args(argv)
    runner = TryOnRunner(args.model, output_format="jpeg", quality=95)
    garments = hard_garments()
    args.out.mkdir(parents=True, exist_ok=True)
    compose_row([cloth for _, cloth in garments], height=200).save(args.out / "garments.png", optimize=True)
    for name in PEOPLE:
        person = (PHOTOS / f"{name}.jpg").read_bytes()
        tiles = [person]
        for label, cloth in garments:
            result = runner.run_one(person, cloth)
            tiles.append(result.image)
            print(f"{name} + {label}: {measure(runner, person, cloth).line()}; subject {result.subject}")
        path = args.out / f"real-{name}.png"
        compose_row(tiles, height=240).save(path, optimize=True)
        print(f"wrote {path}")
    for name in REFUSED:
        try:
            runner.run_one((PHOTOS / f"{name}.jpg").read_bytes(), garments[0][1])
        except Exception as exc:
            print(f"{name}: {getattr(exc, 'error_type', type(exc).__name__)}: {exc}")
        else:
            print(f"{name}: dressed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
