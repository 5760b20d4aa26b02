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


@pytest.fixture(scope="session")
def model_n():
    """A YOLOv6-n built here (train structure, eval mode) with random weights and BN statistics:
    for every test that needs a model but does not compare with upstream's reference data."""
    import torch

    from yolov6_build.model.yolo import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("n"))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


# --- One live Triton server per test session (the embedded binary), shared by server, client,
# --- load-test and reliability tests: starting it costs ~15 s.
DEMO_CHECKPOINT = REPO_ROOT / "models" / "yolov6n_synthetic_320.pt"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """The demo model when present, else a random-weight YOLOv6-n with the synthetic classes."""
    if DEMO_CHECKPOINT.is_file():
        return DEMO_CHECKPOINT
    import torch

    from yolov6_build.model.checkpoint import save_checkpoint
    from yolov6_build.model.yolo import ModelSpec, build_model
    from yolov6_build.synthetic import CLASS_NAMES

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random_n.pt"
    return save_checkpoint(build_model(ModelSpec("n", len(CLASS_NAMES))), path, list(CLASS_NAMES), (320, 320))


@pytest.fixture(scope="session")
def quantized(checkpoint, tmp_path_factory):
    """The quantize stage's graphs for the test checkpoint, calibrated on 32 synthetic images (about 20 s)."""
    from yolov6_build.quantize.stage import QuantizeStageConfig, run_quantize
    from yolov6_build.synthetic import write_split

    root = tmp_path_factory.mktemp("quantize")
    calib = write_split(root / "data", "calib", 32, seed=11)
    run_quantize(checkpoint, calib, root / "graphs", QuantizeStageConfig(calib_images=32), progress=False)
    return root / "graphs"


def build_int8_repository(checkpoint, quantized, out, runtime: str, **config):
    """A CPU repository serving the INT8 graph on ``runtime`` (as build-repo --calib makes it)."""
    from yolov6_build.build_repo import build_repository, served_int8_graph

    build_repository(checkpoint, out, "cpu", detector_onnx=quantized / served_int8_graph("cpu"),
                     max_batch_size=4, detector_runtime=runtime, **config)
    return out


@pytest.fixture(scope="session")
def repository(checkpoint, quantized, tmp_path_factory):
    """The CPU repository as served by default: INT8 detector on the default runtime."""
    from yolov6_build.repository import RepositoryConfig

    return build_int8_repository(checkpoint, quantized, tmp_path_factory.mktemp("repo") / "cpu",
                                 RepositoryConfig.detector_runtime)


def detect_concurrently(server, payloads: list[bytes], **detect_options) -> list:
    """Every payload in flight at once (so the server batches them): Detections or the ServerError."""
    from yolov6_client import detect_concurrently as send_all

    return send_all(server.grpc_url, payloads, **detect_options)


def served_settings(repository) -> dict:
    """A built repository's RepositoryConfig as saved (detector_runtime, cpu_preprocess, ...)."""
    import json

    return json.loads((Path(repository) / "repository.json").read_text())


def start_server(repository, work_dir, **options):
    from yolov6_build.server import ServerOptions, TritonServer

    return TritonServer(repository, work_dir, ServerOptions.on_free_ports(**options)).start()


@pytest.fixture(scope="session")
def server(repository, tmp_path_factory):
    triton = start_server(repository, tmp_path_factory.mktemp("server"))
    yield triton
    triton.stop()


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    from yolov6_build.demo import sample_images

    return sample_images(tmp_path_factory.mktemp("images"), count=4)


@pytest.fixture(scope="session")
def launch_server():
    """``launch_server(repository, work_dir, **ServerOptions)`` -> a started TritonServer on free ports."""
    return start_server
