"""Command-line glue: ``stayler tryon`` and ``stayler bench model``.

:func:`register` adds both subcommands to an argparse sub-parser set; the project CLI calls it.
``python -m modelkit.cli tryon ...`` works stand-alone too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from core.settings import Settings
from imaging.decode import decode_image
from modelkit.samples import make_garment, make_person, to_bytes
from models.registry import DEFAULT_MODEL, available_models

EXAMPLE_PATH = Path("docs/img/tryon-example.png")


def compose_before_after(person: bytes, cloth: bytes, result: bytes, height: int = 512) -> Image.Image:
    """One image: person | garment | result, side by side at a common height, on white."""
    return compose_row([person, cloth, result], height)


def sample_garments() -> list[tuple[str, bytes]]:
    """Two garments drawn by the project: a JPEG on a plain background, and a cut-out RGBA PNG."""
    return [("garment A", to_bytes(make_garment(512, 512, seed=0))),
            ("garment B", to_bytes(make_garment(512, 512, seed=1, transparent=True), "PNG"))]


def compose_row(images: Sequence[bytes], height: int = 512) -> Image.Image:
    """Encoded images side by side at a common height, on white (a cut-out shown on white)."""
    tiles = []
    for data in images:
        decoded = decode_image(data, max_pixels=100_000_000)
        img = decoded.to_pil()
        if decoded.alpha is not None:  # show a cut-out garment on a checkerboard-free white
            white = Image.new("RGB", img.size, (255, 255, 255))
            white.paste(img, (0, 0), Image.fromarray(decoded.alpha, "L"))
            img = white
        scale = height / img.height
        tiles.append(img.resize((max(1, round(img.width * scale)), height), Image.Resampling.LANCZOS))
    gap = 12
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) + 1), height + 2 * gap),
                       (255, 255, 255))
    x = gap
    for tile in tiles:
        canvas.paste(tile, (x, gap))
        x += tile.width + gap
    return canvas


def sample_inputs(seed: int = 0, transparent: bool = False) -> tuple[bytes, bytes]:
    """The documented sample: a person photo (JPEG, 576×768) and a garment photo (JPEG or RGBA PNG)."""
    person = make_person(576, 768, seed=seed, offset_x=0.06, scale=0.86).image
    garment = make_garment(512, 512, seed=seed, transparent=transparent)
    return to_bytes(person), to_bytes(garment, "PNG" if transparent else "JPEG")


def tryon_main(args: argparse.Namespace) -> int:
    """Run one try-on from files (or the built-in sample) and write the result image."""
    from models.runner import TryOnRunner

    if (args.person is None) != (args.cloth is None):
        print("give both PERSON and CLOTH, or neither to use the built-in sample", file=sys.stderr)
        return 2
    if args.person is None:
        person, cloth = sample_inputs(args.seed, args.transparent)
    else:
        try:
            person, cloth = Path(args.person).read_bytes(), Path(args.cloth).read_bytes()
        except OSError as exc:
            print(f"stayler tryon: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 2
    try:
        runner = TryOnRunner(args.model, intra_op_threads=args.threads, output_format=args.format,
                             quality=args.quality)
        result = runner.run_one(person, cloth)
    except Exception as exc:
        # Errors that carry an error_type (a model that fails its contract, a bad photo, no person
        # found) are the user's to fix: one line, no traceback.
        kind = getattr(exc, "error_type", None)
        if kind is None:
            raise
        print(f"stayler tryon: {kind}: {exc}", file=sys.stderr)
        return 3 if kind == "model_contract" else 4
    if args.output is not None:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(result.image)
        print(f"wrote {out} ({result.width}x{result.height} {result.format}, model {runner.model_version}, "
              f"{result.timings.total * 1000:.1f} ms)")
    if args.compose is not None:
        comp = Path(args.compose)
        comp.parent.mkdir(parents=True, exist_ok=True)
        # The composite is a documentation figure, so PNG is fine here (never for results).
        compose_before_after(person, cloth, result.image).save(comp, optimize=True)
        print(f"wrote {comp} (person | garment | result)")
    if args.output is None and args.compose is None:
        print("nothing written: pass -o OUT and/or --compose PNG", file=sys.stderr)
        return 2
    return 0


def add_tryon_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``stayler tryon``."""
    parser.add_argument("person", nargs="?", help="person photo (JPEG/PNG/WebP); omit both to use the sample")
    parser.add_argument("cloth", nargs="?", help="garment photo (JPEG/PNG/WebP; a PNG/WebP alpha is its mask)")
    parser.add_argument("-o", "--output", help="result image path (JPEG or WebP, see --format)")
    parser.add_argument("--compose", metavar="PNG",
                        help=f"also write person | garment | result side by side (e.g. {EXAMPLE_PATH})")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"a model, or a person stage and a try-on stage joined by '+': paths or names under "
                             f"models/artefacts ({', '.join(available_models())}); default {DEFAULT_MODEL}")
    parser.add_argument("--format", default="jpeg", choices=["jpeg", "webp"], help="result encoding")
    parser.add_argument("--quality", type=int, default=90, help="result quality 1..100 (default 90)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: cores)")
    parser.add_argument("--seed", type=int, default=0, help="sample variant when no files are given")
    parser.add_argument("--transparent", action="store_true",
                        help="sample garment as an RGBA PNG with a transparent background")


def cmd_tryon(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """stayler tryon (the settings are not used: the command reads files and runs the model)."""
    return tryon_main(args)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tryon`` subcommand; it sets ``handler`` to its entry point, as every package's commands do.

    The model bench is ``stayler bench model`` (``python -m modelkit.bench``), registered by bench.cli.
    """
    tryon = subparsers.add_parser(
        "tryon",
        help="run the try-on model on a person and a garment photo",
        description="Run the try-on model once. Without PERSON and CLOTH it uses the built-in synthetic "
                    f"sample. Example: tryon --compose {EXAMPLE_PATH} -o /tmp/result.jpg",
    )
    add_tryon_arguments(tryon)
    tryon.set_defaults(handler=cmd_tryon)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modelkit.cli tryon ...``."""
    parser = argparse.ArgumentParser(prog="python -m modelkit.cli", description=__doc__.split("\n\n")[0])
    subs = parser.add_subparsers(dest="command", required=True)
    register(subs)
    args = parser.parse_args(argv)
    return int(args.handler(args, None))


if __name__ == "__main__":
    sys.exit(main())
