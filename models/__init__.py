"""The machine-learning side: model contract, pipelines of stages, shipped ONNX models and the runner.

Importing this package (or ``models.contract``, ``models.registry``, ``models.pipeline``) does not
import onnxruntime; only constructing a ``models.runner.TryOnRunner`` does.
"""

from models.contract import ModelContractError, ModelManifest, load_manifest
from models.registry import DEFAULT_MODEL, NULL_MODEL, available_models, resolve_model, resolve_pipeline
from models.stages import NoPersonError
from models.subject import MultiplePeopleError, NoTorsoError

__all__ = [
    "DEFAULT_MODEL",
    "NULL_MODEL",
    "ModelContractError",
    "ModelManifest",
    "MultiplePeopleError",
    "NoPersonError",
    "NoTorsoError",
    "available_models",
    "load_manifest",
    "resolve_model",
    "resolve_pipeline",
]
