"""What a fuzz worker runs: a served route (admission, then the letterbox the cpu flavour serves) or,
to hunt decoder crashes, the same letterbox with only the old header check; and single operators,
to name the one that dies on a reproducer."""

from __future__ import annotations

import io

import numpy as np

from ..contract import MAX_IMAGE_PIXELS
from ..inputs import letterbox_admitted

ROUTES = ("opencv", "dali")  # cpu default (OpenCV letterbox) and cpu --preprocess dali (the gpu graph on CPU)


def _pillow_header(data: bytes) -> tuple[int, int]:
    """(width, height) from any header Pillow reads; raises for bytes it cannot."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _any_pillow_header(data: bytes) -> bool:
    """The check before admission existed: any header Pillow reads, within the pixel limit."""
    try:
        width, height = _pillow_header(data)
    except Exception:
        return False
    return 0 < width * height <= MAX_IMAGE_PIXELS


def make_route(name: str, input_hw: tuple[int, int], batch_size: int, guarded: bool = True, threads: int = 2):
    """encoded images -> per image a letterbox result or an Exception, as the served preprocess answers."""
    from ..pipeline import SERVED_PIXELS, make_preprocessor

    if name not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {name!r}")
    letterbox = make_preprocessor(name, input_hw, batch_size, dali_threads=threads, pixels=SERVED_PIXELS)
    if guarded:
        return lambda encoded: letterbox_admitted(letterbox, encoded)
    if name == "opencv":  # the bundle's decode_rgb admits now; call the decoder it wraps
        def decode(encoded):
            return [_cv2_imdecode(e) for e in encoded if _any_pillow_header(e)]
        return decode
    return lambda encoded: letterbox([e for e in encoded if _any_pillow_header(e)])


def _dali_operator(build_op):
    def run(data: bytes):
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=1, num_threads=1, device_id=None)
        def single():
            return build_op(fn, types, fn.external_source(name="encoded", dtype=types.UINT8, ndim=1))

        pipe = single()
        pipe.build()
        pipe.feed_input("encoded", [np.frombuffer(data, np.uint8)])
        return pipe.run()
    return run


def _pillow_decode(data: bytes):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()


def _cv2_imdecode(data: bytes):
    import cv2

    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV's own refusal: an answer, as in decode_rgb
        return ValueError(str(exc)[-200:])


OPERATORS = {
    "pillow header": _pillow_header,
    "pillow decode": _pillow_decode,
    "cv2.imdecode": _cv2_imdecode,
    "dali fn.experimental.peek_image_shape": _dali_operator(
        lambda fn, types, x: fn.experimental.peek_image_shape(x, adjust_orientation=True)),
    "dali fn.experimental.decoders.image": _dali_operator(
        lambda fn, types, x: fn.experimental.decoders.image(x, device="cpu", output_type=types.RGB, adjust_orientation=True)),
    "dali fn.peek_image_shape": _dali_operator(lambda fn, types, x: fn.peek_image_shape(x)),
    "dali fn.decoders.image": _dali_operator(lambda fn, types, x: fn.decoders.image(x, device="cpu", output_type=types.RGB)),
}
