"""The one letterbox pipeline definition, run on CPU in-process or shipped to the DALI backend.

Geometry follows ``yolov6_build.geometry.letterbox_params`` op for op (float32), so both
give the same sizes and offsets; pixel values differ from OpenCV's bilinear resize by at most
one grey level (tested).

The graph has no GPU-to-CPU dependency: the geometry comes from ``peek_image_shape`` on the
encoded bytes (CPU), never from the decoded GPU image, because the DALI backend builds pipelines
with the executor in ``BACKEND_EXECUTOR``, which refuses such transitions. The nvImageCodec
decoder and peek both apply EXIF orientation, as OpenCV does offline.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..contract import PREPROCESS_INPUT, PREPROCESS_INPUT_BYTES
from ..deps import require
from ..errors import DependencyError
from ..geometry import PAD_VALUE
from ..inputs import run_isolating_failures
from ..release import DALI_VERSION, DALI_WHEEL, TRITON_RELEASE

log = logging.getLogger(__name__)

# How dali_backend r26.06 builds every pipeline (src/dali_executor/dali_pipeline.h: daliCreatePipeline with
# prefetch depth 1, which DALI runs with the pipelined, async, non-dynamic executor). Tests build with the same.
BACKEND_EXECUTOR = {"exec_dynamic": False, "exec_pipelined": True, "exec_async": True, "prefetch_queue_depth": 1}


def define_letterbox(input_hw: tuple[int, int], device: str, pixels: str = "float32"):
    """Graph body: encoded bytes -> (CHW letterboxed, float32 [6] letterbox geometry).

    Must be called inside a DALI pipeline definition. ``device`` 'cpu' or 'gpu' (mixed decoder).
    ``pixels`` 'float32' (RGB / 255, what TensorRT's graph reads) or 'uint8' (RGB as decoded).
    ``PREPROCESS_INPUT_BYTES`` says how many bytes of each ``PREPROCESS_INPUT`` row are the image:
    a batched request pads its rows to one length.
    """
    dali = require("nvidia.dali")
    fn, types, dmath = dali.fn, dali.types, require("nvidia.dali.math")
    dst_h, dst_w = (float(v) for v in input_hw)
    padded_bytes = fn.external_source(name=PREPROCESS_INPUT, dtype=types.UINT8, ndim=1)
    length = fn.external_source(name=PREPROCESS_INPUT_BYTES, dtype=types.INT32, ndim=1)
    encoded = fn.slice(padded_bytes, start=fn.constant(idata=[0], dtype=types.INT32), shape=length, axes=[0])
    shape = fn.cast(fn.experimental.peek_image_shape(encoded, adjust_orientation=True), dtype=types.FLOAT)
    src_h, src_w = shape[0], shape[1]
    scale = dmath.min(dst_h / src_h, dst_w / src_w)
    new_h = dmath.clamp(dmath.floor(src_h * scale + 0.5), 1.0, dst_h)
    new_w = dmath.clamp(dmath.floor(src_w * scale + 0.5), 1.0, dst_w)
    pad_top = dmath.floor((dst_h - new_h) / 2)
    pad_left = dmath.floor((dst_w - new_w) / 2)
    # fancy upsampling: nvJPEG's chroma upsampling as libjpeg's (OpenCV, calibration, the CPU flavour); the mixed
    # decoder defaults to a cheaper one that shifts 4:2:0 colours. The CPU decoder upsamples this way anyway.
    image = fn.experimental.decoders.image(encoded, device="mixed" if device == "gpu" else "cpu",
                                           output_type=types.RGB, adjust_orientation=True, jpeg_fancy_upsampling=True)
    resized = fn.resize(image, resize_x=new_w, resize_y=new_h, interp_type=types.INTERP_LINEAR, antialias=False)
    start = fn.cast(fn.stack(-pad_top, -pad_left), dtype=types.INT32)
    padded = fn.slice(resized, start=start, shape=np.array(input_hw, dtype=np.int32), axis_names="HW",
                      out_of_bounds_policy="pad", fill_values=PAD_VALUE)
    as_uint8 = pixels == "uint8"
    images = fn.crop_mirror_normalize(padded, dtype=types.UINT8 if as_uint8 else types.FLOAT, output_layout="CHW",
                                      mean=[0.0], std=[1.0 if as_uint8 else 255.0])
    letterbox = fn.stack(src_h, src_w, new_h, new_w, pad_top, pad_left)
    return images, letterbox


def build_pipeline(input_hw: tuple[int, int], batch_size: int, device: str = "cpu", num_threads: int = 2,
                   device_id: int | None = None, pixels: str = "float32"):
    """A DALI Pipeline object (not yet built), with the backend's executor settings.

    ``device_id=None`` for CPU runs and for serialisation.
    """
    dali = require("nvidia.dali")
    pipe = dali.Pipeline(batch_size=batch_size, num_threads=num_threads, device_id=device_id, **BACKEND_EXECUTOR)
    with pipe:
        images, letterbox = define_letterbox(input_hw, device, pixels)
        pipe.set_outputs(images, letterbox)
    return pipe


def serialize_gpu_pipeline(path: str | Path, input_hw: tuple[int, int], max_batch_size: int,
                           num_threads: int = 4) -> Path:
    """Write the mixed-decoder pipeline as ``model.dali`` for the Triton DALI backend (no GPU needed).

    Shipped serialised rather than as ``dali.py``: loading it runs no Python in the server, and it
    is written by the DALI the backend runs (checked here), so the format always matches.
    """
    dali = require("nvidia.dali")
    if dali.__version__ != DALI_VERSION:
        raise DependencyError(f"model.dali must be written by DALI {DALI_VERSION} (the DALI of Triton "
                              f"{TRITON_RELEASE}'s backend), this is {dali.__version__}: "
                              f"pip install {DALI_WHEEL}=={DALI_VERSION} (or run `make setup`)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build_pipeline(input_hw, max_batch_size, device="gpu", num_threads=num_threads).serialize(filename=str(path))
    log.info("serialised GPU letterbox pipeline (DALI %s) to %s", DALI_VERSION, path)
    return path


class CpuLetterbox:
    """Runs the CPU pipeline on lists of encoded images, isolating failures to single images.

    DALI fails a whole batch when one sample cannot be decoded and the pipeline object is then
    invalid: it is rebuilt, and ``run_isolating_failures`` finds the bad images.
    """

    def __init__(self, input_hw: tuple[int, int], max_batch_size: int = 8, num_threads: int = 2,
                 pixels: str = "float32"):
        self.input_hw = tuple(input_hw)
        self.max_batch_size = max_batch_size
        self.num_threads = num_threads
        self.pixels = pixels
        self._pipe = self._new_pipeline()

    def _new_pipeline(self):
        pipe = build_pipeline(self.input_hw, self.max_batch_size, "cpu", self.num_threads, pixels=self.pixels)
        pipe.build()
        return pipe

    def _run(self, encoded: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]] | ValueError:
        try:
            self._pipe.feed_input(PREPROCESS_INPUT, encoded)
            self._pipe.feed_input(PREPROCESS_INPUT_BYTES, [np.array([len(e)], np.int32) for e in encoded])
            images, letterbox = self._pipe.run()
        except RuntimeError as exc:
            self._pipe = self._new_pipeline()  # a critical error invalidates the pipeline object
            return ValueError(f"cannot decode image: {_first_line(exc)}")
        return [(np.array(images[i]), np.array(letterbox[i])) for i in range(len(encoded))]

    def __call__(self, encoded: list[bytes | np.ndarray]) -> list[tuple[np.ndarray, np.ndarray] | Exception]:
        """Each result is (images [3,H,W] as ``pixels``, letterbox float32 [6]) or the exception for that image."""
        arrays = [np.frombuffer(e, dtype=np.uint8) if isinstance(e, (bytes, bytearray)) else
                  np.ascontiguousarray(e, dtype=np.uint8).reshape(-1) for e in encoded]
        results: list = []
        for start in range(0, len(arrays), self.max_batch_size):
            results.extend(run_isolating_failures(self._run, arrays[start:start + self.max_batch_size]))
        return results


def _first_line(exc: Exception) -> str:
    """The cause in a DALI error: the line after "encountered:" (e.g. "nvImageCodec failure: '#3'")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "encountered:" in lines[:-1]:
        return lines[lines.index("encountered:") + 1][:300]
    useful = [line for line in lines if "rror" in line and "Critical error" not in line]
    return (useful or lines or ["unknown error"])[-1][:300]
