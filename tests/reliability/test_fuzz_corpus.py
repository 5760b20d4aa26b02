"""The crash corpus (fuzz_corpus/): inputs that killed DALI's or OpenCV's decoders when they reached them.
Through every served route each gets a per-request error (or, the JPEG, an image), in a child process that
must survive; without
admission they still kill the pinned decoders, which shows the corpus (and this test) has teeth."""

import json
from pathlib import Path

import pytest

from yolov6_build.fuzz.harness import Answered, WorkerSpec, Worker, run_fresh
from yolov6_build.fuzz.routes import ROUTES

CORPUS = Path(__file__).parent / "fuzz_corpus"
INDEX = json.loads((CORPUS / "corpus.json").read_text())


def _read(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def _batches() -> list[list[bytes]]:
    return [[_read(name)] for name in INDEX["alone"]] + [[_read(n) for n in b["files"]] for b in INDEX["batches"]]


@pytest.mark.parametrize("route", ROUTES)
def test_every_corpus_input_gets_an_error_and_the_served_route_survives(route, images):
    good = images[0].read_bytes()
    worker = Worker(WorkerSpec(route, guarded=True, batch_size=8))
    try:
        for batch in _batches():
            errors = []
            for sent in (batch, [good, *batch, good]):  # alone, and between good neighbours
                outcome = worker.run(sent)
                assert isinstance(outcome, Answered), f"{route} died ({outcome.how}) on a corpus batch"
                assert not outcome.exception, outcome.exception
                errors.append(outcome.errors)
            # an image or an error each (admission rewrote the JPEG into one that decodes); neighbours unharmed
            assert errors[0] == errors[1] and (errors[0] == len(batch) or batch[0].startswith(b"\xff\xd8")), errors
    finally:
        worker.close()


# Single files only: they die every time (5 of 5, idle or busy). The batch groups die depending on timing
# and heap layout (the JPEG 2000 pair: 4 of 4 on a busy machine, 0 of 6 idle in the letterbox pipeline).
@pytest.mark.parametrize("name", ["8bfab7f62cca506d.jp2", "12267fe8c814f54c.jp2", "fb47f8adfe07048a.bmp",
                                  "5ceaf912caed23dc.png", "5b8cb169e7bcdc66.jpg"])
def test_without_admission_a_corpus_file_still_kills_its_decoder(name):
    entry = INDEX["alone"][name]
    died = run_fresh(WorkerSpec(entry["crashes"], guarded=False, batch_size=1), [_read(name)])
    assert died is not None and died.how == entry["signal"], (name, died)
