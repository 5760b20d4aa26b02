"""bench-serving's arithmetic: Triton's statistics turned into a per-request time split, and the ratios
and targets of the report (made-up numbers); one live step reads a real server's statistics."""

from pathlib import Path

import pytest

from yolov6_build import contract as c
from yolov6_build.reports.bench_serving import markdown, ratios
from yolov6_build.reports.triton_stats import model_statistics, time_split


def _stats(success, inferences, executions, queue_ns, infer_ns):
    phase = lambda ns: {"count": success, "ns": ns}  # noqa: E731
    return {"inference_count": inferences, "execution_count": executions,
            "inference_stats": {"success": phase(queue_ns + infer_ns), "queue": phase(queue_ns),
                                "compute_input": phase(0), "compute_infer": phase(infer_ns),
                                "compute_output": phase(0)}}


def test_time_split_is_per_request_over_the_interval():
    before = {"yolov6_detector": _stats(10, 10, 10, 10e6, 100e6)}
    after = {"yolov6_detector": _stats(50, 50, 20, 90e6, 500e6), "idle_model": _stats(0, 0, 0, 0, 0)}
    split = time_split(before, after)
    assert set(split) == {"yolov6_detector"}  # no requests in the interval: no row
    detector = split["yolov6_detector"]
    assert detector["requests"] == 40 and detector["executions"] == 10 and detector["mean_batch"] == 4.0
    assert detector["queue_ms"] == 2.0 and detector["compute_infer_ms"] == 10.0


def test_the_in_process_baseline_is_the_mean_of_both_sides_of_the_sweep():
    from yolov6_build.reports.bench_serving import bracketed

    before = {"batch_1": 100.0, "batch_8": 200.0, "best": 200.0, "best_cpu_ms": 7.0}
    after = {"batch_1": 140.0, "batch_8": 160.0, "best": 160.0, "best_cpu_ms": 9.0}
    assert bracketed(before, after) == {"batch_1": 120.0, "batch_8": 180.0, "best": 180.0, "best_cpu_ms": 8.0,
                                        "best_before": 200.0, "best_after": 160.0}


def _run(in_process_best, steps):
    return {"runtime": "openvino", "preprocess": "opencv", "in_process": {"batch_1": 50.0, "batch_8": in_process_best, "best": in_process_best,
                                                  "best_cpu_ms": 18.0},
            "served": [{"users": u, "rps": rps, "vs_in_process": round(rps / in_process_best, 3), "failures": 0,
                        "p50_ms": 10.0, "models": {}, "cpu_efficiency": 0.9,
                        "cpu_ms": {"yolov6_detector": 10.0, "server": 20.0, "load generator": 4.0, "machine": 25.0}}
                       for u, rps in steps]}


def test_targets_need_both_c4_and_the_best_concurrency():
    report = {"input_hw": [320, 320], "images": 8, "batch": 8, "users": [1, 4, 8],
              "preprocess": {"dali": 300.0, "opencv": 150.0},
              "runs": {"int8 openvino": _run(100.0, [(1, 40.0), (4, 85.0), (8, 95.0)]),
                       "int8 ort": _run(100.0, [(1, 40.0), (4, 70.0), (8, 95.0)]),
                       "fp32": _run(60.0, [(1, 30.0), (4, 50.0), (8, 50.0)])}}
    r = ratios(report)
    assert r["int8 openvino"] == {"at_c4": 0.85, "best": 0.95, "best_users": 8, "cpu_efficiency_at_c4": 0.9,
                                  "targets_met": True}
    assert r["int8 ort"]["targets_met"] is False  # 0.70 at c=4
    assert r["int8_vs_fp32_served"] == 1.9 and r["zero_failures"]
    report["ratios"] = r
    text = markdown(report)
    assert "int8 openvino: met" in text and "int8 ort: NOT met" in text
    assert "| int8 openvino | 4 | 0.00 | 10.00 | 0.00 | 0.00 | 20.00 | 4.00 | 25.00 | 0.90 |" in text


@pytest.mark.slow
def test_cpu_use_charges_each_stub_and_the_load_generator(server, images):
    """Requests sent from a child process: the stubs that served them and that child (the load
    generator) took CPU; the machine took at least what the server and the generator did."""
    import subprocess
    import sys

    from yolov6_build.reports.bench_serving import PIPELINE_STEPS
    from yolov6_build.reports.cpu_use import CpuUse

    send = ("import sys\nfrom yolov6_client import TritonDetector\n"
            "with TritonDetector(sys.argv[1]) as d:\n    [d.detect(p) for _ in range(5) for p in sys.argv[2:]]\n")
    with CpuUse(server.process.pid, PIPELINE_STEPS) as use:
        subprocess.run([sys.executable, "-c", send, server.grpc_url, *map(str, images)], check=True)
    cpu = use.ms_per(5 * len(images))
    assert all(cpu[step] > 0 for step in PIPELINE_STEPS), cpu
    # the child's CPU (a Python client, start-up included: far above 1 ms per request) is the load generator's
    assert cpu["load generator"] > 1.0 and cpu["server"] > cpu["yolov6_detector"] + cpu["yolov6_preprocess"]
    assert cpu["machine"] >= 0.9 * (cpu["server"] + cpu["load generator"])


@pytest.mark.slow
def test_statistics_of_a_live_server_split_every_pipeline_step(server, images):
    from yolov6_client import TritonDetector

    before = model_statistics(server)
    with TritonDetector(server.grpc_url) as detector:
        for path in images:
            detector.detect(path)
    split = time_split(before, model_statistics(server))
    assert {"yolov6", "yolov6_preprocess", "yolov6_detector", "yolov6_nms"} <= set(split)
    assert all(split[m]["requests"] == len(images) for m in split)
    ensemble = split["yolov6"]["request_ms"]
    steps = ("yolov6_preprocess", "yolov6_detector", "yolov6_nms")

    def total(phases):
        return sum(split[m][f"{p}_ms"] for m in steps for p in phases)

    # The steps run one after another inside the ensemble's request, so their phases account for its
    # time: without the output hand-over (during which the next step may already start, so it can
    # overlap) they fit inside it; with it they cover nearly all of it.
    assert total(("queue", "compute_input", "compute_infer")) <= 1.02 * ensemble
    assert total(("queue", "compute_input", "compute_infer", "compute_output")) >= 0.8 * ensemble
    for m in ("yolov6_preprocess", "yolov6_detector", "yolov6_nms"):
        phases = sum(split[m][f"{p}_ms"] for p in ("queue", "compute_input", "compute_infer", "compute_output"))
        assert phases <= split[m]["request_ms"] * 1.01


@pytest.mark.slow
def test_closed_loop_load_counts_what_the_server_served_and_fails_bad_images_alone(server, images):
    """Every request the generator counts is one the server's ensemble served (plus its connecting
    request), and its threads' CPU is the load generator's; a corrupt image's requests are failures,
    the others' are not."""
    from yolov6_build.reports.bench_serving import PIPELINE_STEPS
    from yolov6_build.reports.cpu_use import CpuUse
    from yolov6_build.reports.grpc_load import closed_loop

    good = [p.read_bytes() for p in images]
    before = model_statistics(server)
    with CpuUse(server.process.pid, PIPELINE_STEPS) as use:
        step = closed_loop(server.grpc_url, good, users=3, seconds=1.5)
    served = time_split(before, model_statistics(server))["yolov6"]["requests"]
    assert step.requests >= 3 and step.failures == 0 and served == step.requests + 1
    assert 0 < step.p50_ms <= step.p95_ms <= step.p99_ms and step.rps > 0
    assert use.ms_per(step.requests)["load generator"] > 0.05

    # two users, each alternating good and corrupt from its own start: half the requests are corrupt
    corrupt = good[0][: len(good[0]) // 3]
    step = closed_loop(server.grpc_url, [good[0], corrupt], users=2, seconds=1.0)
    assert abs(step.failures - step.requests / 2) <= 1


def test_the_server_gets_the_malloc_settings_unless_the_environment_has_its_own(monkeypatch):
    from yolov6_build.server import MALLOC_SETTINGS, server_environment

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "123")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    env = server_environment()
    assert env["MALLOC_TRIM_THRESHOLD_"] == "123"
    assert env["MALLOC_MMAP_THRESHOLD_"] == MALLOC_SETTINGS["MALLOC_MMAP_THRESHOLD_"]


@pytest.mark.slow
def test_the_preprocess_stub_keeps_its_memory_from_request_to_request(server, images):
    """With glibc's default thresholds the preprocess stub faulted in fresh pages for its image buffers on
    every request (85 per request on bench-serving's images, 428 on these); the server's malloc settings
    keep them."""
    from yolov6_build.reports.cpu_use import _server_processes
    from yolov6_build.reports.grpc_load import closed_loop

    stub = next(pid for pid, name in _server_processes(server.process.pid, [c.PREPROCESS_MODEL]).items()
                if name == c.PREPROCESS_MODEL)

    def minor_faults() -> int:  # /proc/PID/stat field 10, after the parenthesised command name
        return int(Path(f"/proc/{stub}/stat").read_text().rsplit(")", 1)[1].split()[7])

    encoded = [p.read_bytes() for p in images]
    closed_loop(server.grpc_url, encoded, users=2, seconds=0.5)  # every buffer size seen once
    before = minor_faults()
    step = closed_loop(server.grpc_url, encoded, users=2, seconds=1.5)
    assert step.requests >= 10 and step.failures == 0
    assert (minor_faults() - before) / step.requests < 10


def test_a_response_without_every_output_is_incomplete():
    from tritonclient.grpc import service_pb2

    from yolov6_build.reports.grpc_load import OUTPUTS, complete

    response = service_pb2.ModelInferResponse(model_name="yolov6")
    for name in OUTPUTS[:-1]:
        response.outputs.add(name=name)
        response.raw_output_contents.append(b"\0" * 4)
    assert not complete(response.SerializeToString())
    response.outputs.add(name=OUTPUTS[-1])
    response.raw_output_contents.append(b"\0" * 4)
    assert complete(response.SerializeToString())


def _arm(in_process, rps_by_users):
    return {"in_process": in_process,
            "served": {str(u): {"rps": rps, "failures": 0, "p50_ms": 1.0, "vs_in_process": round(rps / in_process, 3),
                                "machine_cpu_ms": 10.0} for u, rps in rps_by_users.items()}}


def test_ab_compares_within_each_round_then_takes_the_median():
    from yolov6_build.reports.serving_ab import markdown, summary

    # the machine slows down over the rounds, and B's lead changes: 1.05x, 1.2x, 1.0x. The median of the
    # rounds' ratios is 1.05; the ratio of the medians (180 / 150) would read 1.2
    rounds = [{"A": _arm(200.0, {4: a}), "B": _arm(200.0, {4: b})} for a, b in ((200.0, 210.0), (150.0, 180.0),
                                                                                (100.0, 100.0))]
    result = summary(rounds, ["A", "B"])
    assert result["b_vs_a"] == {"4": 1.05}
    assert result["medians"]["A"]["4"] == {"rps": 150.0, "vs_in_process": 0.75, "machine_cpu_ms": 10.0, "failures": 0}
    machine = {"cpu": "Example CPU", "cores": 2, "isa": ["avx2"]}
    text = markdown({"repositories": {"A": "a/cpu", "B": "b/cpu"}, "users": ["4"], "machine": machine, "rounds": rounds,
                     "summary": result})
    assert "| **B / A** req/s | 1.05 |" in text and "| 1 | B | 200.0 | 180.0 (0.90) | 0 |" in text
    assert "Machine: Example CPU, 2 cores (avx2); no CPU runtime." in text


@pytest.mark.slow
def test_ab_serves_both_repositories_in_every_round(repository, tmp_path):
    """Two rounds of the same repository under two labels: every arm served without failures, B / A is
    the median of the rounds' own ratios, and the report on disk reads back whole."""
    import json
    import statistics

    from yolov6_build.reports.serving_ab import markdown, serving_ab

    report = serving_ab({"A": repository, "B": repository}, tmp_path, rounds=2, users=(2,), step_seconds=1.0,
                        seconds=0.5, images=4)
    for measured in report["rounds"]:
        for arm in measured.values():
            step = arm["served"]["2"]
            assert arm["in_process"] > 0 and step["rps"] > 0 and step["failures"] == 0 and step["machine_cpu_ms"] > 0
    ratios = [r["B"]["served"]["2"]["rps"] / r["A"]["served"]["2"]["rps"] for r in report["rounds"]]
    assert report["summary"]["b_vs_a"]["2"] == round(statistics.median(ratios), 3)
    saved = json.loads((tmp_path / "serving_ab.json").read_text())
    assert saved == json.loads(json.dumps(report)) and markdown(saved) == (tmp_path / "serving_ab.md").read_text()
