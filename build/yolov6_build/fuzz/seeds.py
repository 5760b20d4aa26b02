"""Small valid images of every format the decoders know, in the variants their parsers branch on.

Made here from a synthetic picture (no files): small sizes keep a campaign at thousands of inputs per
second while every header, table and entropy-coded path of a real image is still present.
"""

from __future__ import annotations

import io

import numpy as np

# format family -> (Pillow format, mode, save options) variants
VARIANTS = {
    "jpeg": [("JPEG", "RGB", {"quality": 75}), ("JPEG", "RGB", {"quality": 95, "subsampling": 0}),
             ("JPEG", "RGB", {"progressive": True}), ("JPEG", "L", {}), ("JPEG", "CMYK", {}),
             ("JPEG", "RGB", {"optimize": True, "restart_marker_blocks": 2}), ("JPEG", "RGB", {"exif_orientation": 6})],
    "png": [("PNG", "RGB", {}), ("PNG", "RGBA", {}), ("PNG", "P", {}), ("PNG", "L", {}), ("PNG", "I;16", {}),
            ("PNG", "1", {}), ("PNG", "RGB", {"compress_level": 0})],
    "bmp": [("BMP", "RGB", {}), ("BMP", "P", {}), ("BMP", "1", {}), ("BMP", "RGBA", {})],
    "tiff": [("TIFF", "RGB", {}), ("TIFF", "RGB", {"compression": "tiff_lzw"}), ("TIFF", "L", {"compression": "packbits"}),
             ("TIFF", "RGB", {"compression": "tiff_adobe_deflate"}), ("TIFF", "RGB", {"compression": "jpeg"})],
    "webp": [("WEBP", "RGB", {"quality": 60}), ("WEBP", "RGB", {"lossless": True}), ("WEBP", "RGBA", {})],
    "jpeg2000": [("JPEG2000", "RGB", {}), ("JPEG2000", "RGB", {"no_jp2": True}), ("JPEG2000", "L", {"irreversible": True})],
    "pnm": [("PPM", "RGB", {}), ("PPM", "L", {})],
}
FORMATS = tuple(VARIANTS)
SIZES = ((48, 64), (17, 33), (80, 96))  # (height, width): odd sizes hit the partial MCU and padding paths


def picture(height: int, width: int) -> np.ndarray:
    """uint8 RGB: gradients, edges and noise, so every codec emits non-trivial tables and data."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(height * 1000 + width)
    image = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x ^ y) & 255], axis=-1)
    image[height // 4: height // 2, width // 3: width // 2] = (200, 30, 60)
    image = image + rng.integers(0, 24, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _encode(image: np.ndarray, fmt: str, mode: str, options: dict) -> bytes:
    from PIL import Image

    options = dict(options)
    picture_ = Image.fromarray(image).convert(mode)
    orientation = options.pop("exif_orientation", None)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    picture_.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def make_seeds(formats=FORMATS) -> dict[str, list[bytes]]:
    """Format family -> its seed files (every variant at every size)."""
    seeds = {}
    for family in formats:
        seeds[family] = [_encode(picture(h, w), *variant) for variant in VARIANTS[family] for h, w in SIZES]
    return seeds
