"""The one letterbox pipeline definition, run on CPU in-process or serialised for the DALI backend.

Geometry follows ``yolov6_build.geometry.letterbox_params`` op for op (float32), so both
give the same sizes and offsets; pixel values differ from OpenCV's bilinear resize by at most
one grey level (tested).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..contract import PREPROCESS_INPUT
from ..deps import require
from ..geometry import PAD_VALUE

log = logging.getLogger(__name__)


def define_letterbox(input_hw: tuple[int, int], device: str):
    """Graph body: encoded bytes -> (float32 CHW /255 letterboxed, float32 [6] letterbox geometry).

    Must be called inside a DALI pipeline definition. ``device`` 'cpu' or 'gpu' (mixed decoder).
    """
    dali = require("nvidia.dali")
    fn, types, dmath = dali.fn, dali.types, require("nvidia.dali.math")
    dst_h, dst_w = (float(v) for v in input_hw)
    encoded = fn.external_source(name=PREPROCESS_INPUT, dtype=types.UINT8, ndim=1)
    image = fn.decoders.image(encoded, device="mixed" if device == "gpu" else "cpu", output_type=types.RGB)
    shape = fn.cast(image.shape(), dtype=types.FLOAT)
    src_h, src_w = shape[0], shape[1]
    scale = dmath.min(dst_h / src_h, dst_w / src_w)
    new_h = dmath.clamp(dmath.floor(src_h * scale + 0.5), 1.0, dst_h)
    new_w = dmath.clamp(dmath.floor(src_w * scale + 0.5), 1.0, dst_w)
    pad_top = dmath.floor((dst_h - new_h) / 2)
    pad_left = dmath.floor((dst_w - new_w) / 2)
    resized = fn.resize(image, resize_x=new_w, resize_y=new_h, interp_type=types.INTERP_LINEAR, antialias=False)
    start = fn.cast(fn.stack(-pad_top, -pad_left), dtype=types.INT32)
    padded = fn.slice(resized, start=start, shape=np.array(input_hw, dtype=np.int32), axis_names="HW",
                      out_of_bounds_policy="pad", fill_values=PAD_VALUE)
    images = fn.crop_mirror_normalize(padded, dtype=types.FLOAT, output_layout="CHW", mean=[0.0], std=[255.0])
    letterbox = fn.stack(src_h, src_w, new_h, new_w, pad_top, pad_left)
    return images, letterbox


def build_pipeline(input_hw: tuple[int, int], batch_size: int, device: str = "cpu", num_threads: int = 2,
                   device_id: int | None = None):
    """A DALI Pipeline object (not yet built). ``device_id=None`` for CPU runs and for serialisation."""
    dali = require("nvidia.dali")
    pipe = dali.Pipeline(batch_size=batch_size, num_threads=num_threads, device_id=device_id,
                         prefetch_queue_depth=1)
    with pipe:
        images, letterbox = define_letterbox(input_hw, device)
        pipe.set_outputs(images, letterbox)
    return pipe


def serialize_gpu_pipeline(path: str | Path, input_hw: tuple[int, int], max_batch_size: int,
                           num_threads: int = 4) -> Path:
    """Write the mixed-decoder pipeline as ``model.dali`` for the Triton DALI backend (no GPU needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build_pipeline(input_hw, max_batch_size, device="gpu", num_threads=num_threads).serialize(filename=str(path))
    log.info("serialised GPU letterbox pipeline to %s", path)
    return path


class CpuLetterbox:
    """Runs the CPU pipeline on lists of encoded images, isolating failures to single images.

    DALI fails a whole batch when one sample cannot be decoded; on such a failure the batch is
    re-run one image at a time so only the bad images get an error.
    """

    def __init__(self, input_hw: tuple[int, int], max_batch_size: int = 8, num_threads: int = 2):
        self.input_hw = tuple(input_hw)
        self.max_batch_size = max_batch_size
        self.num_threads = num_threads
        self._pipe = self._new_pipeline()

    def _new_pipeline(self):
        pipe = build_pipeline(self.input_hw, self.max_batch_size, "cpu", self.num_threads)
        pipe.build()
        return pipe

    def _run(self, encoded: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        self._pipe.feed_input(PREPROCESS_INPUT, encoded)
        images, letterbox = self._pipe.run()
        return [(np.array(images[i]), np.array(letterbox[i])) for i in range(len(encoded))]

    def _run_guarded(self, encoded: list[np.ndarray]):
        try:
            return self._run(encoded)
        except RuntimeError:
            self._pipe = self._new_pipeline()  # a critical error invalidates the pipeline object
            raise

    def __call__(self, encoded: list[bytes | np.ndarray]) -> list[tuple[np.ndarray, np.ndarray] | Exception]:
        """Each result is (images float32 [3,H,W], letterbox float32 [6]) or the exception for that image."""
        arrays = [np.frombuffer(e, dtype=np.uint8) if isinstance(e, (bytes, bytearray)) else
                  np.ascontiguousarray(e, dtype=np.uint8).reshape(-1) for e in encoded]
        results: list = []
        for start in range(0, len(arrays), self.max_batch_size):
            chunk = arrays[start:start + self.max_batch_size]
            try:
                results.extend(self._run_guarded(chunk))
            except RuntimeError:
                results.extend(self._run_one(a) for a in chunk)
        return results

    def _run_one(self, encoded: np.ndarray):
        try:
            return self._run_guarded([encoded])[0]
        except RuntimeError as exc:
            return ValueError(f"cannot decode image: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "rror" in line and "Critical error" not in line]
    return (useful or lines or ["unknown error"])[-1][:300]
