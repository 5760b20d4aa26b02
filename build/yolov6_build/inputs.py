"""What may reach an image decoder, and how a batch with a bad image costs only that image's request.

Every served route (cpu OpenCV, cpu ``--preprocess dali``, gpu DALI backend) admits an encoded image
with ``admit_encoded_image`` before any decoder sees it. Only JPEG and PNG are admitted: fuzzing
(``make fuzz``; README "Hostile images") killed DALI 2.1.1's nvImageCodec decoders with BMP, TIFF and
JPEG 2000 inputs that had valid headers, and OpenCV 4.11's ``imdecode`` with JPEG 2000 ones, while
campaigns of 100,000+ mutated JPEGs and PNGs per route found no crash.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .contract import MAX_ENCODED_BYTES, MAX_IMAGE_PIXELS

# Pillow's format name -> the signature every decoder we run (OpenCV, nvImageCodec, Pillow) selects its
# codec by. Checking the signature first means no other codec's parser ever sees admitted bytes.
ACCEPTED_FORMATS = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}  # folders (calibration, the client CLI) list what is served
_ACCEPTED_LIST = " or ".join(ACCEPTED_FORMATS)


def image_files(folder: str | Path) -> list[Path]:
    """The image files of a folder (by suffix), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _as_bytes(encoded: bytes | np.ndarray) -> bytes:
    return encoded.tobytes() if isinstance(encoded, np.ndarray) else bytes(encoded)


def admit_encoded_image(encoded: bytes | np.ndarray, max_bytes: int = MAX_ENCODED_BYTES,
                        max_pixels: int = MAX_IMAGE_PIXELS) -> ValueError | None:
    """None when the bytes may be decoded (a JPEG or PNG header of sane size), else a ValueError saying
    why (returned, not raised). Reads the header only: microseconds, no decoder involved."""
    data = _as_bytes(encoded)
    if not data:
        return ValueError(f"empty input: expected encoded image bytes ({_ACCEPTED_LIST})")
    if len(data) > max_bytes:
        return ValueError(f"encoded image is {len(data)} bytes, over the {max_bytes}-byte limit")
    fmt = next((name for name, magic in ACCEPTED_FORMATS.items() if data.startswith(magic)), None)
    if fmt is None:
        return ValueError(f"unsupported image format ({_sniff(data)}); send {_ACCEPTED_LIST}")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:  # header only, with that one plugin
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        return ValueError(f"not a decodable image: broken {fmt} header ({type(exc).__name__})")
    except Image.DecompressionBombError as exc:
        return ValueError(f"image too large: {exc}")
    if width < 1 or height < 1 or width * height > max_pixels:
        return ValueError(f"image is {width}x{height}; allowed 1 to {max_pixels} pixels")
    if fmt == "PNG" and _png_is_animated(data):
        return ValueError("animated PNG (APNG) is not accepted: send a single-frame PNG or a JPEG")
    return None


_APNG_CHUNKS = {b"acTL", b"fcTL", b"fdAT"}


def _png_is_animated(data: bytes) -> bool:
    """Whether the chunk walk (by each chunk's length, as decoders read it) meets an APNG chunk. OpenCV
    4.11's APNG reader, which nvImageCodec's CPU PNG decoding also runs, dies with SIGSEGV on a random acTL
    chunk (fuzzing; tests/reliability/fuzz_corpus); single-frame PNG decoding never enters it."""
    at = 8
    while at + 8 <= len(data):
        length, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        if kind in _APNG_CHUNKS:
            return True
        if kind == b"IEND":
            return False
        at += 12 + length
    return False


# Signatures of formats that are refused, so the error names what was sent.
_KNOWN_SIGNATURES = {b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"GIF8": "GIF",
                     b"\x00\x00\x00\x0cjP  ": "JPEG 2000", b"\xff\x4f\xff\x51": "JPEG 2000 codestream",
                     b"P6": "PPM", b"P5": "PGM", b"RIFF": "RIFF/WebP"}


def _sniff(data: bytes) -> str:
    return next((name for magic, name in _KNOWN_SIGNATURES.items() if data.startswith(magic)), "unknown")


def screen_decode(encoded: bytes | np.ndarray) -> ValueError | None:
    """A full CPU decode with Pillow: None when it decodes. Used only after a decoder failed a whole
    batch, to find the bad images without retrying each one on that decoder (see ``run_isolating_failures``).
    Call on admitted bytes only (Pillow's JPEG and PNG decoders are in the fuzzed routes)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(_as_bytes(encoded)), formats=list(ACCEPTED_FORMATS)) as image:
            image.load()
    except Exception as exc:  # Pillow raises many types for corrupt data; each means "bad image"
        return ValueError(f"cannot decode image: {type(exc).__name__}: {str(exc)[:200]}")
    return None


def run_isolating_failures(run_batch, encoded: list) -> list:
    """``run_batch(images)`` -> one result per image, or one Exception for the whole batch (DALI fails
    every image of a batch for one bad image, and dali_backend then rebuilds its pipeline).

    On a batch failure the images Pillow cannot decode get their error and the rest run again as one
    batch: one bad image costs one failed run (one pipeline reset) and one rerun. Only when Pillow finds
    nothing wrong, or the rerun fails too, does each remaining image run alone.
    """
    results = run_batch(encoded)
    if not isinstance(results, Exception):
        return results
    if len(encoded) == 1:
        return [results]
    screened = [screen_decode(e) for e in encoded]
    good = [i for i, problem in enumerate(screened) if problem is None]
    if 0 < len(good) < len(encoded):
        rerun = run_batch([encoded[i] for i in good])
        if not isinstance(rerun, Exception):
            for index, result in zip(good, rerun):
                screened[index] = result
            return screened
    for index in good:
        alone = run_batch([encoded[index]])
        screened[index] = alone if isinstance(alone, Exception) else alone[0]
    return screened


def letterbox_admitted(letterbox, encoded: list) -> list:
    """What every served route runs on a batch: admission first, then ``letterbox`` on the admitted
    images only. One result per image, in order: the letterbox's result or a ValueError."""
    checked = [admit_encoded_image(e) for e in encoded]
    admitted = [e for e, problem in zip(encoded, checked) if problem is None]
    decoded = iter(letterbox(admitted) if admitted else [])
    return [problem if problem is not None else next(decoded) for problem in checked]
