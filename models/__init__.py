"""The machine-learning side: try-on model contract, shipped ONNX models, build script and runner.

Importing this package (or ``models.contract``, ``models.registry``, ``models.pipeline``) does not
import onnxruntime; only constructing a ``models.runner.TryOnRunner`` does.
"""

from models.contract import ModelContractError, ModelManifest, load_manifest
from models.registry import DEFAULT_MODEL, NULL_MODEL, available_models, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "NULL_MODEL",
    "ModelContractError",
    "ModelManifest",
    "available_models",
    "load_manifest",
    "resolve_model",
]
