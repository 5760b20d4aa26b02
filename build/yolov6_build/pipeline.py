"""The served pipeline run in-process: letterbox -> detector (OpenVINO or ONNX Runtime) -> numpy NMS.

Same code as the Triton models (CpuLetterbox, the detector graph, postprocess), without the
server; the reference for server parity tests and the baseline of the benchmarks. ``preprocess``
'dali' is the DALI CPU letterbox (the GPU flavour's definition); 'opencv' is the offline decoder (OpenCV) + the
OpenCV reference letterbox, image by image. The cpu flavour serves either (``RepositoryConfig.cpu_preprocess``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import contract as c
from .geometry import Detections
from .inputs import letterbox_admitted
from .postprocess import detections_for_image

PREPROCESSORS = ("dali", "opencv")
PIXELS = ("float32", "uint8")  # letterboxed images as float32 RGB / 255 or as uint8 RGB
# What the CPU flavour's letterbox hands its detector: a quarter of float32's bytes through the server's
# shared memory (runtime.as_pixels gives a float graph its form)
SERVED_PIXELS = "uint8"


class OpenCvLetterbox:
    """The offline decoder (``data.decode_admitted``) + reference letterbox (OpenCV), image by image; same
    output as CpuLetterbox.

    No per-batch cost: on CPU it takes 2.2 ms per image at batch 1 where DALI takes 6.0 (3.6 at batch 8).
    """

    def __init__(self, input_hw: tuple[int, int], pixels: str = "float32"):
        self.input_hw = tuple(input_hw)
        self.pixels = pixels

    def __call__(self, encoded_images: list[bytes]) -> list[tuple[np.ndarray, np.ndarray] | Exception]:
        return [self._one(e) for e in encoded_images]

    def _one(self, encoded: bytes):
        from .data import decode_admitted
        from .geometry import letterbox_image, letterbox_pixels

        try:
            rgb = decode_admitted(encoded)
        except ValueError as exc:
            return exc
        image, box = (letterbox_pixels if self.pixels == "uint8" else letterbox_image)(rgb, self.input_hw)
        return image, box.as_array()


def make_preprocessor(kind: str, input_hw: tuple[int, int], max_batch_size: int = 8, dali_threads: int = 2,
                      pixels: str = "float32"):
    """A letterbox of ``PREPROCESSORS``: encoded images -> [(image [3, H, W] as ``pixels``, geometry [6])].

    It decodes what it is given: feed it user bytes through ``inputs.letterbox_admitted``, as every route does.
    """
    if pixels not in PIXELS:
        raise ValueError(f"pixels must be one of {PIXELS}, got {pixels!r}")
    if kind == "dali":
        from .dali.pipeline import CpuLetterbox

        return CpuLetterbox(input_hw, max_batch_size, dali_threads, pixels=pixels)
    if kind == "opencv":
        return OpenCvLetterbox(input_hw, pixels)
    raise ValueError(f"preprocess must be one of {PREPROCESSORS}, got {kind!r}")


class InProcessPipeline:
    def __init__(self, detector_onnx: str | Path, input_hw: tuple[int, int], conf_threshold: float = c.SERVE_CONF_THRESHOLD,
                 iou_threshold: float = c.SERVE_IOU_THRESHOLD, max_detections: int = c.SERVE_MAX_DETECTIONS,
                 max_batch_size: int = 8, threads: int = 0, preprocess: str = "opencv", runtime: str = "ort",
                 pixels: str = SERVED_PIXELS):
        from .runtime import load_detector

        self.letterbox = make_preprocessor(preprocess, input_hw, max_batch_size, pixels=pixels)
        self.runner = load_detector(detector_onnx, runtime, threads)
        self.thresholds = (conf_threshold, iou_threshold, max_detections)

    def __call__(self, encoded_images: list[bytes]) -> list[Detections | Exception]:
        prepared = letterbox_admitted(self.letterbox, encoded_images)  # as the served preprocess does
        good = [p for p in prepared if not isinstance(p, Exception)]
        outputs = iter([])
        if good:
            boxes, scores, classes = self.runner(np.stack([p[0] for p in good]))
            outputs = iter(detections_for_image(boxes[i], scores[i], classes[i], good[i][1], *self.thresholds)
                           for i in range(len(good)))
        return [p if isinstance(p, Exception) else next(outputs) for p in prepared]
