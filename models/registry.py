"""Model selection by configuration: a path to an ``.onnx`` file, or a name under ``models/artefacts``."""

from __future__ import annotations

from pathlib import Path

from models.contract import ModelContractError

ARTEFACTS = Path(__file__).resolve().parent / "artefacts"
DEFAULT_MODEL = "tryon-geometric"
NULL_MODEL = "null"


def available_models(folder: Path = ARTEFACTS) -> list[str]:
    """Names of the models shipped in ``folder`` (file stems of ``*.onnx``), sorted."""
    return sorted(p.stem for p in folder.glob("*.onnx"))


def resolve_model(spec: str | Path | None = None, *, folder: Path = ARTEFACTS) -> Path:
    """Turn a model setting into an existing ``.onnx`` path.

    ``spec`` is a path (anything with a separator or ending in ``.onnx``) or a name of a model
    under ``folder``; empty or ``None`` selects the default, ``tryon-geometric``.
    """
    text = str(spec).strip() if spec is not None else ""
    if not text:
        text = DEFAULT_MODEL
    looks_like_path = isinstance(spec, Path) or text.endswith(".onnx") or "/" in text or "\\" in text
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ModelContractError(f"model file {path} does not exist")
        return path.resolve()
    path = folder / f"{text}.onnx"
    if not path.is_file():
        names = ", ".join(available_models(folder)) or "none (run: python -m models.build)"
        raise ModelContractError(f"no model named {text!r} under {folder}; available: {names}")
    return path
