"""Admission (which bytes may reach a decoder) and the cost of a bad image in a DALI batch."""

import io

import numpy as np
import pytest
from PIL import Image

from yolov6_build.inputs import ACCEPTED_FORMATS, admit_encoded_image, letterbox_admitted, run_isolating_failures


def _encode(fmt: str, size=(40, 30), **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_jpeg_and_png_are_admitted(fmt):
    assert set(ACCEPTED_FORMATS) == {"JPEG", "PNG"}
    admitted = admit_encoded_image(_encode(fmt))
    assert isinstance(admitted, bytes) and admitted.startswith(ACCEPTED_FORMATS[fmt])


@pytest.mark.parametrize("fmt, named", [("BMP", "BMP"), ("TIFF", "TIFF"), ("JPEG2000", "JPEG 2000"),
                                        ("WEBP", "RIFF/WebP"), ("GIF", "GIF"), ("PPM", "PPM")])
def test_other_formats_are_refused_naming_what_was_sent_and_what_is_accepted(fmt, named):
    problem = admit_encoded_image(_encode(fmt))
    assert isinstance(problem, ValueError)
    assert str(problem) == f"unsupported image format ({named}); send JPEG or PNG"


def test_a_jpeg_signature_with_another_formats_body_is_refused():
    """Admission reads the header with the one plugin the signature names: no other parser runs."""
    png_body = _encode("PNG")
    problem = admit_encoded_image(b"\xff\xd8\xff" + png_body[3:])
    assert isinstance(problem, ValueError) and "broken JPEG header" in str(problem)


def test_letterbox_admitted_hands_the_decoder_only_admitted_images():
    seen = []

    def letterbox(encoded):
        seen.extend(encoded)
        return [("image", len(e)) for e in encoded]

    jpeg, bmp = _encode("JPEG"), _encode("BMP")
    results = letterbox_admitted(letterbox, [jpeg, bmp, b"", jpeg])
    assert [bytes(e) for e in seen] == [admit_encoded_image(jpeg)] * 2
    assert results[0] == results[3] == ("image", len(admit_encoded_image(jpeg)))
    assert isinstance(results[1], ValueError) and isinstance(results[2], ValueError)


class FakeDali:
    """Fails a whole batch when any image is in ``refuses``, like DALI; counts calls and resets."""

    def __init__(self, refuses):
        self.refuses, self.calls, self.resets = set(refuses), [], 0

    def __call__(self, encoded):
        self.calls.append(len(encoded))
        if any(e in self.refuses for e in encoded):
            self.resets += 1
            return ValueError("cannot decode image: DALI failed the batch")
        return [("ok", e) for e in encoded]


def test_a_bad_image_costs_one_reset_and_one_rerun_when_the_cpu_screen_finds_it():
    good, bad = _encode("JPEG"), _encode("JPEG")[:120]
    batch = [good, bad, good, good]
    dali = FakeDali(refuses={bad})
    results = run_isolating_failures(dali, batch)
    assert dali.calls == [4, 3] and dali.resets == 1
    assert isinstance(results[1], ValueError) and [r for i, r in enumerate(results) if i != 1] == [("ok", good)] * 3


def test_when_the_screen_disagrees_each_image_runs_alone():
    good = _encode("JPEG")
    odd = _encode("PNG")  # decodes on CPU, but this DALI refuses it
    dali = FakeDali(refuses={odd})
    results = run_isolating_failures(dali, [good, odd, good])
    assert dali.calls == [3, 1, 1, 1] and dali.resets == 2
    assert isinstance(results[1], ValueError) and results[0] == results[2] == ("ok", good)


def test_when_the_rerun_fails_too_the_remaining_images_run_alone():
    good, odd, bad = _encode("JPEG"), _encode("PNG"), _encode("JPEG")[:120]
    dali = FakeDali(refuses={odd, bad})
    results = run_isolating_failures(dali, [good, bad, odd])
    assert dali.calls == [3, 2, 1, 1]
    assert results[0] == ("ok", good) and isinstance(results[1], ValueError) and isinstance(results[2], ValueError)


def test_an_animated_png_is_refused_before_any_decoder():
    """An acTL chunk sends OpenCV 4.11 (and nvImageCodec's CPU PNG path) into APNG code that fuzzing crashed."""
    import struct
    import zlib

    png = _encode("PNG")
    actl = struct.pack(">I", 8) + b"acTL" + bytes(8) + struct.pack(">I", zlib.crc32(b"acTL" + bytes(8)))
    problem = admit_encoded_image(png[:33] + actl + png[33:])
    assert isinstance(problem, ValueError) and "animated PNG" in str(problem)


def _with_segments(jpeg: bytes, *segments: bytes) -> bytes:
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_jpeg_reaches_decoders_with_only_its_decoding_segments_and_its_orientation(orientation):
    """EXIF, XMP, ICC and comments are dropped; the orientation comes back in a minimal EXIF of our own,
    which Pillow (and OpenCV, and nvImageCodec) read as the original's."""
    from yolov6_build.inputs import jpeg_segments

    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "camera maker"
    original = _with_segments(_encode("JPEG", exif=exif.tobytes()), _segment(0xFE, b"a comment"),
                              _segment(0xE2, b"ICC_PROFILE\x00" + bytes(40)), _segment(0xE1, b"E\xacif\x00\x00junk"))
    admitted = admit_encoded_image(original)
    markers = [m for m, _, _ in jpeg_segments(admitted)]
    assert 0xFE not in markers and 0xE2 not in markers
    assert markers.count(0xE1) == (orientation != 1)
    with Image.open(io.BytesIO(admitted)) as image:
        assert image.getexif().get(0x0112, 1) == orientation and 0x010F not in image.getexif()
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(io.BytesIO(original))))
    assert admit_encoded_image(admitted) == admitted  # idempotent: offline decode_rgb admits again


def test_a_jpeg_whose_segments_never_reach_a_scan_is_refused():
    jpeg = _encode("JPEG")
    problem = admit_encoded_image(jpeg[:jpeg.index(b"\xff\xda")])
    assert isinstance(problem, ValueError) and "JPEG header" in str(problem)


def test_fill_bytes_before_a_marker_are_allowed():
    jpeg = _encode("JPEG")
    at = jpeg.index(b"\xff\xdb")
    padded = jpeg[:at] + b"\xff\xff\xff" + jpeg[at:]
    admitted = admit_encoded_image(padded)
    assert isinstance(admitted, bytes)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(admitted))), np.asarray(Image.open(io.BytesIO(jpeg))))
