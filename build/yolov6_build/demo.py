"""``make demo``: build the CPU repository, start the embedded server, detect sample images over gRPC."""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)
DEMO_SEED = 20260101


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


def run_demo(checkpoint: Path, repository: Path, out_dir: Path, server, images: Path | None = None,
             calib: Path | None = None, report=lambda line: None) -> Path:
    """Build, serve, detect and annotate; ``report(text)`` receives each image's table. Returns the
    folder of annotated images."""
    from yolov6_client.annotate import draw_detections, format_table
    from yolov6_client.cli import expand_inputs
    from yolov6_client.detector import TritonDetector

    from .build_repo import build_repository

    if not Path(checkpoint).is_file():
        raise ConfigError(f"demo checkpoint not found: {checkpoint}")
    if calib is None:
        from .synthetic import write_split

        calib = out_dir / "calib"
        if not (calib / "calib").is_dir():
            write_split(calib, "calib", 64, seed=0)
        calib = calib / "calib"
    from .quantize.stage import QuantizeStageConfig

    build_repository(checkpoint, repository, "cpu", calib=calib, quantize_config=QuantizeStageConfig(calib_images=64),
                     quantize_dir=out_dir / "quantize")
    paths = expand_inputs([str(images)]) if images else sample_images(out_dir / "inputs")
    if not paths:
        raise ConfigError(f"no images found in {images}")
    with server:
        with TritonDetector(server.grpc_url, "grpc") as detector:
            detector.wait_ready()
            names = detector.class_names
            for path in paths:
                dets = detector.detect(path)
                report(format_table(path.name, dets, names))
                draw_detections(path, dets, names, out_dir / "annotated" / path.name)
    return out_dir / "annotated"
