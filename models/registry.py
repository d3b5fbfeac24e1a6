"""Model selection by configuration: a model, or a pipeline of stages, by name or path.

A model setting is one stage (a name under ``models/artefacts`` or a path to an ``.onnx`` file) or
several joined by ``+``, person stage first: ``person-mediapipe+tryon-fit`` (the default), or
``/models/my-person.onnx+/models/my-tryon.onnx``.
"""

from __future__ import annotations

from pathlib import Path

from models.contract import ModelContractError

ARTEFACTS = Path(__file__).resolve().parent / "artefacts"
GEOMETRIC_MODEL = "tryon-geometric"
FIT_MODEL = "tryon-fit"
PERSON_MODEL = "person-mediapipe"
NULL_MODEL = "null"
STAGE_SEPARATOR = "+"
DEFAULT_MODEL = f"{PERSON_MODEL}{STAGE_SEPARATOR}{FIT_MODEL}"


def available_models(folder: Path = ARTEFACTS) -> list[str]:
    """Names of the models shipped in ``folder`` (file stems of ``*.onnx``), sorted."""
    return sorted(p.stem for p in folder.glob("*.onnx"))


def resolve_model(spec: str | Path | None = None, *, folder: Path = ARTEFACTS) -> Path:
    """Turn one stage's setting into an existing ``.onnx`` path.

    ``spec`` is a path (anything with a separator or ending in ``.onnx``) or a name of a model
    under ``folder``; empty or ``None`` selects the default pipeline's try-on stage, ``tryon-fit``.
    """
    text = str(spec).strip() if spec is not None else ""
    if not text:
        text = FIT_MODEL
    looks_like_path = isinstance(spec, Path) or text.endswith(".onnx") or "/" in text or "\\" in text
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ModelContractError(f"model file {path} does not exist")
        return path.resolve()
    path = folder / f"{text}.onnx"
    if not path.is_file():
        names = ", ".join(available_models(folder)) or "none (run: python -m modelkit.build)"
        raise ModelContractError(f"no model named {text!r} under {folder}; available: {names}")
    return path


def resolve_pipeline(spec: str | Path | None = None, *, folder: Path = ARTEFACTS) -> tuple[Path, ...]:
    """Turn a model setting into its stages' paths, in order (``None`` or empty: ``DEFAULT_MODEL``)."""
    if isinstance(spec, Path):
        return (resolve_model(spec, folder=folder),)
    text = (spec or "").strip() or DEFAULT_MODEL
    parts = [part.strip() for part in text.split(STAGE_SEPARATOR)]
    if any(not part for part in parts):
        raise ModelContractError(f"model setting {text!r} has an empty stage (join stages with {STAGE_SEPARATOR!r})")
    return tuple(resolve_model(part, folder=folder) for part in parts)
