"""A gpu-flavour repository that the embedded (CPU) Triton can serve: only the two GPU-only models change.

``yolov6_dali`` (DALI backend) becomes ``dali_model.py`` on the Python backend with the same config
otherwise; ``yolov6_detector`` (TensorRT plan) becomes the cpu flavour's detector, reading the gpu
flavour's float images as TensorRT does (its runtime gives its uint8-pixel graph their form). The
preprocess BLS logic, the ensemble wiring and the NMS are the gpu repository's own; only its GPU
warm-up is switched off (no CUDA here: ``test_preprocess_dlpack`` runs it against a CuPy shim).
"""

import shutil
from pathlib import Path

from google.protobuf import text_format

from yolov6_build import contract as c
from yolov6_build.repository import parse_config

HERE = Path(__file__).parent


def standin_repository(gpu_repo: Path, cpu_repo: Path, out: Path) -> Path:
    shutil.copytree(gpu_repo, out)
    dali_dir = out / c.DALI_MODEL
    config = parse_config((dali_dir / "config.pbtxt").read_text())
    config.backend = "python"
    for group in config.instance_group:
        group.kind = group.KIND_CPU
    (dali_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    (dali_dir / "1" / "model.dali").unlink()
    shutil.copy(HERE / "dali_model.py", dali_dir / "1" / "model.py")
    preprocess = parse_config((out / c.PREPROCESS_MODEL / "config.pbtxt").read_text())
    preprocess.parameters["gpu_warmup"].string_value = "false"  # no CUDA here (tests/gpu_standin/dlpack.py warms)
    (out / c.PREPROCESS_MODEL / "config.pbtxt").write_text(text_format.MessageToString(preprocess))
    gpu_detector = parse_config((out / c.DETECTOR_MODEL / "config.pbtxt").read_text())
    shutil.rmtree(out / c.DETECTOR_MODEL)
    shutil.copytree(cpu_repo / c.DETECTOR_MODEL, out / c.DETECTOR_MODEL)
    detector = parse_config((out / c.DETECTOR_MODEL / "config.pbtxt").read_text())
    for field in ("input", "model_warmup"):  # the images as the gpu ensemble hands them over
        detector.ClearField(field)
        getattr(detector, field).extend(getattr(gpu_detector, field))
    (out / c.DETECTOR_MODEL / "config.pbtxt").write_text(text_format.MessageToString(detector))
    return out
