"""``make demo``: build the CPU repository, start the embedded server, detect sample images over gRPC."""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)
DEMO_SEED = 20260101
# labelled images the demo fine-tunes with (QAT + CWD) when it serves the bundled demo model: the first
# images of that model's synthetic training set (seed 0, as `make dataset` writes them)
DEMO_QAT_IMAGES = 512


def sample_images(folder: Path, count: int = 6) -> list[Path]:
    """Write ``count`` deterministic synthetic scenes (not in the train/val splits) as JPEGs."""
    import numpy as np

    from .synthetic import make_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image, _ = make_image(np.random.default_rng([DEMO_SEED, index]))
        path = folder / f"sample_{index}.jpg"
        image.save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def _synthetic_split(out_dir: Path, split: str, count: int) -> Path:
    """The first ``count`` images of a split of the synthetic dataset (seed 0), written once under ``out_dir``."""
    from .synthetic import write_split

    if len(list((out_dir / split).glob("*.jpg"))) != count:
        write_split(out_dir, split, count, seed=0)
    return out_dir / split


def run_demo(checkpoint: Path, repository: Path, out_dir: Path, server, images: Path | None = None,
             calib: Path | None = None, report=lambda line: None, qat_images: int = 0) -> Path:
    """Build, serve, detect and annotate; ``report(text)`` receives each image's table. Returns the
    folder of annotated images. ``qat_images`` > 0: QAT + CWD on that many synthetic training images
    after PTQ (only meaningful for the bundled demo model, which was trained on them)."""
    from yolov6_client.annotate import draw_detections, format_table
    from yolov6_client.cli import expand_inputs
    from yolov6_client.detector import TritonDetector

    from .build_repo import build_repository

    if not Path(checkpoint).is_file():
        raise ConfigError(f"demo checkpoint not found: {checkpoint}")
    calib = calib or _synthetic_split(out_dir / "calib", "calib", 64)
    from .quantize.qat import QatConfig
    from .quantize.stage import QuantizeStageConfig

    qat = None
    if qat_images:
        _synthetic_split(out_dir / "qat", "train", qat_images)
        qat = QatConfig(str(out_dir / "qat" / "annotations" / "instances_train.json"))
    build_repository(checkpoint, repository, "cpu", calib=calib,
                     quantize_config=QuantizeStageConfig(calib_images=64, qat=qat), quantize_dir=out_dir / "quantize")
    paths = expand_inputs([str(images)]) if images else sample_images(out_dir / "inputs")
    if not paths:
        raise ConfigError(f"no images found in {images}")
    log.info("starting Triton on the repository %s", repository)
    with server:
        with TritonDetector(server.grpc_url, "grpc") as detector:
            detector.wait_ready()
            names = detector.class_names
            log.info("detecting %d images over gRPC (%s)", len(paths), server.grpc_url)
            for path in paths:
                dets = detector.detect(path)
                report(format_table(path.name, dets, names))
                draw_detections(path, dets, names, out_dir / "annotated" / path.name)
    return out_dir / "annotated"
