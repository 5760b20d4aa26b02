"""Shared fixtures: the upstream reference data lives outside the repo (../shared/fixtures/yolov6_ref)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REF_DIR = Path(os.environ.get("YOLOV6_REF_DIR", REPO_ROOT.parent / "shared" / "fixtures" / "yolov6_ref"))


@pytest.fixture(scope="session")
def ref_dir() -> Path:
    if not (REF_DIR / "README.md").is_file():
        pytest.skip(f"upstream reference fixtures not found at {REF_DIR} (set YOLOV6_REF_DIR)")
    return REF_DIR


@pytest.fixture(scope="session")
def ref_n(ref_dir):
    import torch

    return torch.load(ref_dir / "ref_n.pt", weights_only=True)


@pytest.fixture(scope="session")
def ref_model_n(ref_n):
    """The reference random-weight YOLOv6-n (train structure, eval mode)."""
    from yolov6_build.model.yolo import ModelSpec, build_model

    model = build_model(ModelSpec("n"))
    result = model.load_state_dict(ref_n["weights_train_structure"], strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    return model
