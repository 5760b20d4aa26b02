"""bench-int8 measures, for the demo model, the graphs a built repository serves (not a fresh PTQ), and takes
its ratios within each round of the measurement."""

from pathlib import Path

import pytest

from yolov6_build.build_repo import served_int8_graph
from yolov6_build.errors import ConfigError
from yolov6_build.reports.bench_int8 import markdown, ratios, served_graphs


def test_bundle_paths_are_the_served_graph_and_its_qdq_source(repository, checkpoint, quantized):
    graphs = served_graphs(repository, checkpoint)
    served = quantized / served_int8_graph("cpu")
    assert graphs["bundle_openvino"] == ("openvino", served) and graphs["bundle_ort"] == ("ort", served)
    assert graphs["qdq_openvino"] == ("openvino", quantized / "detector_qdq.onnx")


def test_a_repository_of_another_checkpoint_is_refused(repository, tmp_path):
    with pytest.raises(ConfigError, match="not .*other.pt"):
        served_graphs(repository, tmp_path / "other.pt")


def _round(speed: float, served: float) -> dict:
    """img/s of every path in one round on a machine running at ``speed``: served ``served`` x NNCF."""
    return {"openvino_fp32": 60 * speed, "nncf_int8": 100 * speed, "ort_stock_int8": 80 * speed,
            "bundle_openvino": 100 * served * speed, "bundle_ort": 50 * speed, "qdq_openvino": 90 * speed}


def test_ratios_are_taken_within_each_round_not_across_the_drift():
    # the machine doubles its speed while the served path is measured in round 1: the medians over the
    # rounds (served 220, NNCF 100) would read 2.2x, the rounds' own ratios are 1.1, 2.2, 1.1
    by_round = [_round(1.0, 1.1), {**_round(1.0, 1.1), "bundle_openvino": 220.0}, _round(2.0, 1.1)]
    r = ratios(by_round)
    assert r["served_vs_fastest_stock_int8"] == 1.1
    assert r["served_vs_openvino_fp32"] == round(110 / 60, 2)
    assert r["ratio_ranges"]["served_vs_fastest_stock_int8"] == [1.1, 2.2]


def test_the_report_shows_each_ratio_with_its_range_across_rounds():
    row = {"model": "demo 320", "batch": 1, **_round(1.0, 1.2), **ratios([_round(1.0, 1.2), _round(1.5, 1.0)])}
    table = markdown({"rows": [row], "map50_95": {}})
    assert "| 1.1x (1.0-1.2) | 1.83x (1.67-2.0) |" in table
