"""What may reach an image decoder, and how a batch with a bad image costs only that image's request.

Every served route (cpu OpenCV, cpu ``--preprocess dali``, gpu DALI backend) admits an encoded image
with ``admit_encoded_image`` before any decoder sees it, and decoders see the bytes it returns (JPEG
metadata rewritten). Only JPEG and PNG are admitted: fuzzing
(``make fuzz``; docs/hostile-images.md) killed DALI 2.1.1's nvImageCodec decoders with BMP, TIFF and
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
                        max_pixels: int = MAX_IMAGE_PIXELS) -> bytes | ValueError:
    """The bytes a decoder may see, or a ValueError saying why not (returned, not raised).

    Admitted: a JPEG or PNG header of sane size, no animated PNG. A JPEG comes back with its metadata
    rewritten (``canonical_jpeg``). Reads headers only: microseconds, no decoder involved.
    """
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
            (width, height), orientation = image.size, _orientation(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        return ValueError(f"not a decodable image: broken {fmt} header ({type(exc).__name__})")
    except Image.DecompressionBombError as exc:
        return ValueError(f"image too large: {exc}")
    if width < 1 or height < 1 or width * height > max_pixels:
        return ValueError(f"image is {width}x{height}; allowed 1 to {max_pixels} pixels")
    if fmt == "PNG":
        return ValueError("unsupported image format (animated PNG); send a single-frame PNG or a JPEG") \
            if _png_is_animated(data) else data
    return canonical_jpeg(data, orientation)


def _orientation(image) -> int:
    """EXIF orientation 1-8 as Pillow parses it (in Python); 1 when absent or unreadable."""
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF is metadata we drop, not a reason to refuse the pixels
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset of its 0xFF, length with marker and length field) of each segment from SOI up to
    and including SOS, walked by the segments' own lengths (clamped to the data)."""
    out, at = [], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte before a marker (allowed by the standard)
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            out.append((marker, at, 2))
            at += 2
            continue
        length = min(int.from_bytes(data[at + 2:at + 4], "big") + 2, len(data) - at)
        out.append((marker, at, length))
        if marker == 0xDA:
            break
        at += length
    return out


# Segments a decoder needs before the scan: quantisation and Huffman tables, frame header, restart
# interval, arithmetic-coding conditioning, JFIF (APP0) and Adobe (APP14: the CMYK/YCCK transform flag).
_DECODING_SEGMENTS = {0xDB, 0xC4, 0xDD, 0xCC, 0xE0, 0xEE} | (set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC})


def canonical_jpeg(data: bytes, orientation: int = 1) -> bytes | ValueError:
    """The JPEG with every other segment before the scan dropped (EXIF, XMP, ICC, comments) and the
    orientation, when not 1, carried by a minimal EXIF segment this function writes.

    Why: DALI 2.1.1's nvImageCodec decoder, orienting by EXIF, died with SIGSEGV on a JPEG whose APP1
    was malformed and whose scan was corrupt (fuzzing; tests/reliability/fuzz_corpus). Every decoder
    now parses only EXIF written here, and orients the same way as before.
    """
    segments = jpeg_segments(data)
    if not segments or segments[-1][0] != 0xDA:
        return ValueError("not a decodable image: broken JPEG header (no scan after the segments)")
    kept = [data[at:at + length] for marker, at, length in segments if marker in _DECODING_SEGMENTS | {0xDA}]
    scan_end = segments[-1][1] + segments[-1][2]
    return b"\xff\xd8" + _exif_segment(orientation) + b"".join(kept) + data[scan_end:]


def _exif_segment(orientation: int) -> bytes:
    """APP1 "Exif": a big-endian TIFF header and one IFD holding only the orientation tag (SHORT)."""
    if orientation == 1:
        return b""
    ifd = (b"MM\x00\x2a" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big")
           + (0x0112).to_bytes(2, "big") + (3).to_bytes(2, "big") + (1).to_bytes(4, "big")
           + orientation.to_bytes(2, "big") + bytes(2) + bytes(4))
    payload = b"Exif\x00\x00" + ifd
    return b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload


_APNG_CHUNKS = {b"acTL", b"fcTL", b"fdAT"}


def _png_is_animated(data: bytes) -> bool:
    """Whether the chunk walk (by each chunk's length, as decoders read it) meets an APNG chunk. OpenCV
    4.11's APNG reader, which nvImageCodec's CPU PNG decoding also runs, died with SIGSEGV on a random
    acTL chunk (fuzzing; tests/reliability/fuzz_corpus); single-frame PNG decoding never enters it."""
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
    bytes only. One result per image, in order: the letterbox's result or a ValueError."""
    checked = [admit_encoded_image(e) for e in encoded]
    admitted = [np.frombuffer(a, np.uint8) for a in checked if not isinstance(a, ValueError)]
    decoded = iter(letterbox(admitted) if admitted else [])
    return [a if isinstance(a, ValueError) else next(decoded) for a in checked]
