"""Cheap checks on encoded images before decoding: reject garbage and decompression bombs early."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .contract import MAX_ENCODED_BYTES, MAX_IMAGE_PIXELS

# formats both PIL (header check) and DALI's decoder (nvImageCodec) read
DECODABLE_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "JPEG2000", "PPM"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def image_files(folder: str | Path) -> list[Path]:
    """The image files of a folder (by suffix), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def check_encoded_image(encoded: bytes | np.ndarray, max_bytes: int = MAX_ENCODED_BYTES,
                        max_pixels: int = MAX_IMAGE_PIXELS) -> ValueError | None:
    """None when the header looks decodable, else a ValueError saying why (returned, not raised)."""
    data = encoded.tobytes() if isinstance(encoded, np.ndarray) else bytes(encoded)
    if not data:
        return ValueError("empty input: expected encoded image bytes (JPEG, PNG, ...)")
    if len(data) > max_bytes:
        return ValueError(f"encoded image is {len(data)} bytes, over the {max_bytes}-byte limit")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            fmt, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return ValueError(f"not a decodable image: no known image header ({type(exc).__name__})")
    except Image.DecompressionBombError as exc:
        return ValueError(f"image too large: {exc}")
    if fmt not in DECODABLE_FORMATS:
        return ValueError(f"unsupported image format {fmt}; send one of {sorted(DECODABLE_FORMATS)}")
    if width < 1 or height < 1 or width * height > max_pixels:
        return ValueError(f"image is {width}x{height}; allowed 1 to {max_pixels} pixels")
    return None
