"""The gpu flavour's own logic served by the real embedded Triton (select with ``pytest -k gpu``).

Only what needs a GPU is stood in (tests/gpu_standin): the DALI backend model runs the same
pipeline definition on CPU and the TensorRT plan is the ONNX Runtime detector. Everything else is
the gpu repository as build-repo writes it: the preprocess BLS (whole batch first, then image by
image), DLPack hand-over, ensemble wiring and NMS.
"""

import numpy as np
import pytest

from yolov6_build import contract as c
from yolov6_build.server import GRPC_ADMIN_HEADER
from tests.conftest import detect_concurrently
from yolov6_client import ServerError, TritonDetector

pytestmark = pytest.mark.triton
LOW_CONF = 0.001
BATCHING_DELAY_US = 200_000  # long enough that concurrent requests share one dynamic batch


@pytest.fixture(scope="module")
def gpu_standin_server(checkpoint, repository, tmp_path_factory, launch_server):
    from tests.gpu_standin.repository import standin_repository
    from yolov6_build.build_repo import build_repository

    root = tmp_path_factory.mktemp("gpu")
    build_repository(checkpoint, root / "gpu", "gpu", max_batch_size=4, max_queue_delay_us=BATCHING_DELAY_US)
    served = standin_repository(root / "gpu", repository, root / "served")
    server = launch_server(served, root / "server")
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_gpu_flavour_detects_as_its_pipeline_in_process(gpu_standin_server, repository, images, protocol):
    """The DALI letterbox, the cpu repository's detector (what the stand-in serves) and NMS, in-process.
    (The cpu flavour itself letterboxes with OpenCV, one grey level apart from DALI.)"""
    from tests.conftest import served_settings
    from yolov6_build.pipeline import InProcessPipeline

    pipeline = InProcessPipeline(repository / c.DETECTOR_MODEL / "1" / "model.onnx", (320, 320),
                                 conf_threshold=LOW_CONF, preprocess="dali",
                                 runtime=served_settings(repository)["detector_runtime"])
    url = gpu_standin_server.grpc_url if protocol == "grpc" else gpu_standin_server.http_url
    with TritonDetector(url, protocol) as detector:
        served = [detector.detect(path, conf_threshold=LOW_CONF) for path in images]
    for got, want in zip(served, pipeline([p.read_bytes() for p in images])):
        assert len(got) == len(want) > 0
        np.testing.assert_array_equal(got.class_ids, want.class_ids)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        np.testing.assert_allclose(got.boxes_xyxy, want.boxes_xyxy, atol=1e-2)


def _statistics(triton, model):
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        stats = client.get_inference_statistics(model, as_json=True,
                                                headers={GRPC_ADMIN_HEADER: triton.admin_key})["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def _requests_by_size(triton):
    """The stand-in DALI model's count of requests by images per request, and of its pipeline resets
    (its custom metrics)."""
    import re
    import urllib.request

    text = urllib.request.urlopen(f"http://{triton.options.host}:{triton.options.metrics_port}/metrics").read().decode()
    counts = {int(n): float(v) for n, v in re.findall(r'standin_dali_requests\{images="(\d+)"\} (\S+)', text)}
    resets = re.search(r'standin_dali_resets\{cause="error"\} (\S+)', text)
    return counts, float(resets.group(1)) if resets else 0.0


def test_gpu_corrupt_image_fails_alone_in_one_dynamic_batch(gpu_standin_server, images):
    good = images[0].read_bytes()
    corrupt = good[: len(good) // 3]  # a valid JPEG header: only the decoder finds it broken
    payloads = [good, corrupt, good, good]
    dali_before = _statistics(gpu_standin_server, c.DALI_MODEL)
    pre_before = _statistics(gpu_standin_server, c.PREPROCESS_MODEL)
    requests_before, resets_before = _requests_by_size(gpu_standin_server)
    results = detect_concurrently(gpu_standin_server, payloads, conf_threshold=LOW_CONF)
    assert isinstance(results[1], ServerError) and "decode" in str(results[1])
    for result in (results[0], results[2], results[3]):
        assert not isinstance(result, Exception) and len(result) > 0
        np.testing.assert_array_equal(result.boxes_xyxy, results[0].boxes_xyxy)

    pre_after = _statistics(gpu_standin_server, c.PREPROCESS_MODEL)
    dali_after = _statistics(gpu_standin_server, c.DALI_MODEL)
    requests_after, resets_after = _requests_by_size(gpu_standin_server)
    # the four requests reached the preprocess as one dynamic batch, which went to DALI as one request
    assert pre_after.get(4, 0) - pre_before.get(4, 0) == 1, (pre_before, pre_after)
    assert requests_after.get(4, 0) - requests_before.get(4, 0) == 1, (requests_before, requests_after)
    assert dali_after.get(4, 0) - dali_before.get(4, 0) == 1, (dali_before, dali_after)
    # DALI failed that batch as a whole; the CPU screen found the bad image, the other three ran again as one
    # request: the bad image cost one reset and one extra call, and no image ran alone
    assert requests_after.get(3, 0) - requests_before.get(3, 0) == 1, (requests_before, requests_after)
    assert requests_after.get(1, 0) - requests_before.get(1, 0) == 0, (requests_before, requests_after)
    assert resets_after - resets_before == 1


def test_gpu_server_stays_up_after_bad_batches(gpu_standin_server, images):
    good = images[1].read_bytes()
    truncated = good[: len(good) // 3]  # passes the header check; DALI fails it, then rebuilds its pipeline
    with TritonDetector(gpu_standin_server.grpc_url, retries=0) as detector:
        for _ in range(3):
            with pytest.raises(ServerError, match="decode"):
                detector.detect(truncated)
        assert len(detector.detect(images[1], conf_threshold=LOW_CONF)) > 0


def test_gpu_preprocess_admits_before_its_bls_call_and_keeps_every_process(gpu_standin_server):
    """Mutated images of every format and the crash corpus: clear answers, no server process lost."""
    from pathlib import Path

    from yolov6_build.fuzz.seeds import FORMATS
    from yolov6_build.fuzz.server_stream import stream_mutants

    corpus = sorted(p for p in (Path(__file__).parents[1] / "reliability" / "fuzz_corpus").iterdir() if p.suffix != ".json")
    report = stream_mutants(gpu_standin_server.grpc_url, gpu_standin_server.process.pid, 10 * len(FORMATS),
                            seed=5, extra_files=corpus)
    assert report.ok, report.markdown()


def test_gpu_check_corrupt_image_batch_passes_on_the_stand_in(gpu_standin_server, images):
    """gpu-check's own batch (three sizes and a truncated JPEG at once), run against the stand-in."""
    from yolov6_build.reports.gpu_check import corrupt_image_in_a_batch

    result = corrupt_image_in_a_batch(gpu_standin_server.grpc_url, images)
    assert result["corrupt_failed_alone"] and result["others_as_alone"], result
    assert "decode" in result["error"]
