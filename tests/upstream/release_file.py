"""Write a model the way upstream saves its releases: the pickled module itself, in fp16, under ``model``
and ``ema``, with upstream's class paths (``yolov6.*``), so the loader's restricted unpickler reads it as
it reads a real release. Our classes stand in for upstream's under those names while the file is written
(the state-dict keys are upstream's: tests/build/test_families.py checks them against upstream's code)."""

from __future__ import annotations

import copy
import sys
import types
from contextlib import contextmanager
from pathlib import Path

UPSTREAM_MODULE = "yolov6.layers.common"


@contextmanager
def _as_upstream_classes(model):
    ours = {type(m) for m in model.modules() if type(m).__module__.startswith("yolov6_build")}
    names = ("yolov6", "yolov6.layers", UPSTREAM_MODULE)
    saved_modules = {name: sys.modules.get(name) for name in names}
    fake = types.ModuleType(UPSTREAM_MODULE)
    for name in names[:-1]:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[UPSTREAM_MODULE] = fake
    saved_paths = {cls: cls.__module__ for cls in ours}
    try:
        for cls in ours:
            cls.__module__ = UPSTREAM_MODULE
            setattr(fake, cls.__qualname__, cls)
        yield
    finally:
        for cls, module in saved_paths.items():
            cls.__module__ = module
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def save_release_format(model, path: Path) -> Path:
    import torch

    half = copy.deepcopy(model).half()
    del half.spec  # ours, not upstream's: its Model holds modules and plain values only
    with _as_upstream_classes(half):
        torch.save({"model": half, "ema": half, "updates": 0, "epoch": 299}, path)
    return path
