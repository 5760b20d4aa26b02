"""Regenerate ``tests/upstream/refs/<name>.npz`` with upstream YOLOv6's own code (by hand, not a test).

    python -m tests.upstream.make_refs <YOLOv6 checkout> [name ...]

(``fetch`` github:meituan/YOLOv6 and ``git archive HEAD yolov6 configs`` into a folder.) For each config:
upstream's ``build_model`` at 80 classes, weights from ``weights.value_for`` (key name and shape), eval
outputs on a fixed 64x64 input before and after upstream's deploy conversion (``fuse_model``, then
``switch_to_deploy`` on every RepVGG-family block), and the key lists with shapes of both state dicts.
Only these small arrays are stored; the tests rebuild the weights from the keys.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

from .weights import fill

REFS = Path(__file__).parent / "refs"
NUM_CLASSES = 80
INPUT_HW = (64, 64)
# name -> (upstream config, the ModelSpec fields that build the same network here)
CONFIGS = {
    "n_qa": ("configs/qarepvgg/yolov6n_qa.py", {"size": "n", "training_mode": "qarepvggv2"}),
    "s_qa": ("configs/qarepvgg/yolov6s_qa.py", {"size": "s", "training_mode": "qarepvggv2"}),
    "m_qa": ("configs/qarepvgg/yolov6m_qa.py", {"size": "m", "training_mode": "qarepvggv2"}),
    **{f"{size}6": (f"configs/yolov6{size}6.py", {"size": f"{size}6"}) for size in "nsml"},
    **{f"{size}_mbla": (f"configs/mbla/yolov6{size}_mbla.py", {"size": f"{size}_mbla"}) for size in "smlx"},
    **{f"lite_{size}": (f"configs/yolov6_lite/yolov6_lite_{size}.py", {"size": f"lite_{size}"}) for size in "sml"},
}


def reference_input() -> np.ndarray:
    return np.random.default_rng(0).random((1, 3, *INPUT_HW), dtype=np.float32)


def _shim_missing_modules() -> None:
    """Upstream imports these at module level for downloads and a torch version check; newer setuptools has
    no pkg_resources. (Upstream's config loader also needs ``addict``: pip install it beside.)"""
    try:
        import requests  # noqa: F401
    except ImportError:
        sys.modules["requests"] = types.ModuleType("requests")
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)


def upstream_reference(upstream: Path, config: str) -> dict:
    import torch

    _shim_missing_modules()
    sys.path.insert(0, str(upstream))
    from yolov6.layers.common import RepVGGBlock
    from yolov6.models import yolo, yolo_lite
    from yolov6.utils.config import Config
    from yolov6.utils.torch_utils import fuse_model

    cfg = Config.fromfile(str(upstream / config))
    if not hasattr(cfg, "training_mode"):
        cfg.training_mode = "repvgg"  # what upstream's tools/train.py sets
    lite = "lite" in cfg.model.type  # upstream's engine builds these with models/yolo_lite.py
    model = (yolo_lite if lite else yolo).build_model(cfg, NUM_CLASSES, "cpu").eval()
    fill(model)
    x = torch.from_numpy(reference_input())
    with torch.no_grad():
        eager = model(x)[0]
        train_keys = [[k, list(v.shape)] for k, v in model.state_dict().items()]
        fuse_model(model)
        for module in model.modules():
            if isinstance(module, RepVGGBlock):
                module.switch_to_deploy()
        fused = model(x)[0]
    commit = subprocess.run(["git", "-C", str(upstream), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    return {"output_eager": eager.numpy(), "output_fused": fused.numpy(),
            "meta": json.dumps({"config": config, "upstream_commit": commit.strip() or "unknown",
                                "train_keys": train_keys,
                                "deploy_keys": [[k, list(v.shape)] for k, v in model.state_dict().items()]})}


def main(argv: list[str]) -> None:
    upstream, names = Path(argv[0]), argv[1:] or list(CONFIGS)
    REFS.mkdir(exist_ok=True)
    for name in names:
        np.savez_compressed(REFS / f"{name}.npz", **upstream_reference(upstream, CONFIGS[name][0]))
        print(f"wrote {REFS / name}.npz")


if __name__ == "__main__":
    main(sys.argv[1:])
