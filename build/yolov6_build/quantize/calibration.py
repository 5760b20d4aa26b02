"""Calibration images: a folder or a COCO-format set, through the serving letterbox, seeded order."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..data import CocoDataset, load_rgb
from ..errors import ConfigError
from ..geometry import letterbox_image
from ..inputs import image_files

log = logging.getLogger(__name__)


def image_paths(source: str | Path) -> list[Path]:
    """Images of a folder (sorted) or of a COCO annotation file (in file order)."""
    source = Path(source)
    if source.is_file() and source.suffix == ".json":
        return [s.path for s in CocoDataset(source).samples]
    if source.is_dir():
        paths = image_files(source)
        if paths:
            return paths
    raise ConfigError(f"no calibration images in {source} (give a folder of images or a COCO instances_*.json)")


def load_batches(source: str | Path, input_hw: tuple[int, int], count: int, batch_size: int,
                 seed: int = 0, progress: bool = True) -> list[np.ndarray]:
    """``count`` images (seeded choice) letterboxed to float32 [B,3,H,W] batches, held in memory."""
    from ..progress import progress as progress_bar

    paths = image_paths(source)
    order = np.random.default_rng(seed).permutation(len(paths))[:count]
    chosen = [paths[i] for i in sorted(order)]
    images = [letterbox_image(load_rgb(p), input_hw)[0]
              for p in progress_bar(chosen, desc="calibration images", unit="img", enabled=progress)]
    log.info("loaded %d calibration images from %s", len(images), source)
    return [np.stack(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
