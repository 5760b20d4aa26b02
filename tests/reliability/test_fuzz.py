"""Fuzz the preprocessing (header checks + each CPU letterbox: OpenCV and DALI) with random and mutated
image bytes for a bounded time: every input gets an image or a ValueError, never a crash or a hang."""

import io
import os
import re
import time

import numpy as np
import pytest
from PIL import Image

from yolov6_build.inputs import check_encoded_image
from yolov6_build.pipeline import PREPROCESSORS, make_preprocessor

FUZZ_SECONDS = 12
MAX_INPUTS = 600
INPUT_HW = (320, 320)


def _seeds(images) -> list[bytes]:
    scene = Image.open(images[0]).convert("RGB").resize((200, 150))
    out = [images[0].read_bytes()]
    for fmt, options in (("PNG", {}), ("JPEG", {"progressive": True}), ("BMP", {}), ("WEBP", {"quality": 60})):
        buffer = io.BytesIO()
        scene.save(buffer, format=fmt, **options)
        out.append(buffer.getvalue())
    return out


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(data)
    kind = rng.integers(0, 5)
    if kind == 0:  # flip bytes
        for i in rng.integers(0, len(data), int(rng.integers(1, 64))):
            data[i] = int(rng.integers(0, 256))
    elif kind == 1:  # truncate
        data = data[: int(rng.integers(0, len(data)))]
    elif kind == 2:  # duplicate a chunk
        start = int(rng.integers(0, len(data)))
        data[start:start] = data[start:start + int(rng.integers(1, 4096))]
    elif kind == 3:  # corrupt the header region, where sizes and tables live
        for i in rng.integers(0, min(len(data), 600), int(rng.integers(1, 8))):
            data[i] = int(rng.integers(0, 256))
    else:  # random bytes behind a valid magic number
        data = data[:4] + bytearray(rng.integers(0, 256, int(rng.integers(0, 20000)), dtype=np.uint8))
    return bytes(data)


def _fuzz_seed() -> int:
    """FUZZ_SEED=<n> picks the mutations (FUZZ_SEED=random: a new seed, printed in any failure).

    The suite's default is fixed so CI is repeatable: a random seed once crashed DALI 2.1.1's CPU
    decoding (segmentation fault, seed not recorded; README, known limits)."""
    value = os.environ.get("FUZZ_SEED", "0")
    return time.time_ns() % 2**32 if value == "random" else int(value)


@pytest.mark.parametrize("kind", PREPROCESSORS)
def test_preprocessing_survives_random_and_mutated_bytes(images, kind):
    seed = _fuzz_seed()
    rng = np.random.default_rng(seed)
    seed = f"replay with FUZZ_SEED={seed}"
    seeds = _seeds(images)
    letterbox = make_preprocessor(kind, INPUT_HW, max_batch_size=4)
    deadline, tried, decoded = time.monotonic() + FUZZ_SECONDS, 0, 0
    while time.monotonic() < deadline and tried < MAX_INPUTS:  # the same inputs on any machine fast enough
        batch = [_mutate(seeds[int(rng.integers(0, len(seeds)))], rng) for _ in range(4)]
        accepted = [b for b in batch if check_encoded_image(b) is None]
        for result in letterbox(accepted) if accepted else []:
            if isinstance(result, Exception):
                assert isinstance(result, ValueError) and "decode" in str(result), f"{seed}: {result!r}"
                continue
            image, box = result
            assert image.shape == (3, *INPUT_HW) and np.isfinite(image).all(), seed
            assert 0.0 <= image.min() and image.max() <= 1.0 and box.shape == (6,)
            decoded += 1
        tried += len(batch)
    assert tried > 100 and decoded > 0  # it ran, and some mutants were still images


@pytest.mark.triton
def test_server_survives_fuzzed_requests(server, images):
    from concurrent.futures import ThreadPoolExecutor

    from yolov6_client import ServerError, TritonDetector

    seed = _fuzz_seed()
    rng = np.random.default_rng(seed)
    seeds = _seeds(images)
    payloads = [_mutate(seeds[i % len(seeds)], rng) for i in range(60)]

    def send(data):
        with TritonDetector(server.grpc_url, retries=0, timeout_s=60) as detector:
            try:
                return detector.detect(data)
            except ServerError as exc:
                return exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, payloads))
    # a bad image is the client's error, answered as such; an internal error (a crash in a model) is not
    for result in results:
        if isinstance(result, ServerError):
            assert result.status == "StatusCode.INVALID_ARGUMENT", f"replay with FUZZ_SEED={seed}: {result}"
            assert re.search(r"decod|image|header|format|allowed", str(result)), f"FUZZ_SEED={seed}: {result}"
    assert server.is_ready()
    assert not isinstance(send(seeds[0]), ServerError)
