"""The fuzzing tool (yolov6_build.fuzz) on its own terms and against the served routes: structure-aware
mutations reach past format checks, a short campaign through both cpu routes finds no crash, and live
servers (default OpenCV preprocess and --preprocess dali) keep every process under mutated images of
every format. Long campaigns are ``make fuzz`` (docs/hostile-images.md)."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolov6_build.fuzz.campaign import Campaign
from yolov6_build.fuzz.mutate import _png_structured, jpeg_fields, mutate, png_chunks
from yolov6_build.fuzz.seeds import FORMATS, make_seeds

CORPUS = Path(__file__).parent / "fuzz_corpus"
INPUTS_PER_FORMAT = 40 * 8  # per route, in batches of 8, fixed seed: the same inputs on every run (docs/hostile-images.md: 100,000+)


@pytest.fixture(scope="module")
def seeds():
    return make_seeds()


def test_seeds_cover_every_format_and_decode(seeds):
    assert set(seeds) == set(FORMATS)
    for family, files in seeds.items():
        for data in files:
            Image.open(io.BytesIO(data)).load()


def test_png_edits_keep_chunk_crcs_valid(seeds):
    """So libpng goes past its CRC check into the header, filters and pixel code."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        mutant, _ = _png_structured(seeds["png"][0], rng)
        for at, kind, payload in png_chunks(mutant):
            stored = struct.unpack(">I", mutant[at + 8 + len(payload):at + 12 + len(payload)])[0]
            assert stored == zlib.crc32(kind + payload)


def test_jpeg_fields_name_the_frame_header(seeds):
    data = seeds["jpeg"][0]  # 64x48
    fields = {f.name: int.from_bytes(data[f.offset:f.offset + f.size], "big") for f in jpeg_fields(data)}
    assert (fields["width"], fields["height"]) == (64, 48)


def test_mutations_are_reproducible_from_the_seed(seeds):
    first = [mutate(seeds["jpeg"][0], "jpeg", np.random.default_rng(7)) for _ in range(3)]
    again = [mutate(seeds["jpeg"][0], "jpeg", np.random.default_rng(7)) for _ in range(3)]
    assert first == again and first[0][0] != seeds["jpeg"][0]


def test_a_short_campaign_through_the_served_routes_finds_no_crash(tmp_path):
    campaign = Campaign(seconds=300, inputs_per_format=INPUTS_PER_FORMAT, seed=11, out_dir=tmp_path).run(progress=False)
    assert not campaign.crashes and not campaign.exceptions, campaign.markdown()
    for route, per_format in campaign.counts.items():
        assert [c.inputs for c in per_format.values()] == [INPUTS_PER_FORMAT] * len(FORMATS), campaign.markdown()
    assert (tmp_path / "fuzz.md").exists() and (tmp_path / "fuzz.json").exists()


def _stream(server, count: int):
    from yolov6_build.fuzz.server_stream import stream_mutants

    corpus = sorted(p for p in CORPUS.iterdir() if p.suffix != ".json")
    report = stream_mutants(server.grpc_url, server.process.pid, count, seed=3, extra_files=corpus)
    assert report.ok, report.markdown()
    assert report.outcomes["per-request error"] >= len(corpus) and report.outcomes["detections"] > 0, report.markdown()
    return report


@pytest.mark.triton
def test_default_server_keeps_its_processes_under_mutated_images(server):
    _stream(server, count=20 * len(FORMATS))
    assert server.is_ready()


@pytest.mark.triton
def test_dali_preprocess_server_keeps_its_processes_under_mutated_images(checkpoint, quantized, tmp_path_factory,
                                                                        launch_server):
    from tests.conftest import build_int8_repository
    from yolov6_build.repository import RepositoryConfig

    root = tmp_path_factory.mktemp("dali_server")
    repository = build_int8_repository(checkpoint, quantized, root / "cpu", RepositoryConfig.detector_runtime,
                                       cpu_preprocess="dali")
    server = launch_server(repository, root / "server")
    try:
        _stream(server, count=20 * len(FORMATS))
        assert server.is_ready()
    finally:
        server.stop()
