"""Lazy imports of heavy optional dependencies with a helpful failure message."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import DependencyError

# module -> what to tell the user when it is missing
_INSTALL_HINTS = {
    "torch": "run `make setup` (installs the CPU torch wheel)",
    "onnx": "run `make setup`",
    "onnxruntime": "run `make setup`",
    "nvidia.dali": "run `make setup` (installs the pinned DALI wheel)",
    "tritonclient": "pip install 'tritonclient[grpc,http]'",
    "tensorrt": "TensorRT is only available in the TensorRT container (docker compose run engine)",
    "modelopt": "pip install nvidia-modelopt requests huggingface_hub",
    "faster_coco_eval": "pip install faster-coco-eval",
    "matplotlib": "pip install matplotlib",
    "tqdm": "pip install tqdm",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise DependencyError naming the fix."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = _INSTALL_HINTS.get(module) or _INSTALL_HINTS.get(top, f"pip install {top}")
        raise DependencyError(f"{module} is required here but could not be imported ({exc}); {hint}") from exc

