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
    assert admit_encoded_image(_encode(fmt)) is None


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
    assert seen == [jpeg, jpeg]
    assert results[0] == results[3] == ("image", len(jpeg))
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
