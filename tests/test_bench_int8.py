"""bench-int8 measures, for the demo model, the graphs a built repository serves (not a fresh PTQ)."""

from pathlib import Path

import pytest

from yolov6_build.build_repo import served_int8_graph
from yolov6_build.errors import ConfigError
from yolov6_build.reports.bench_int8 import served_graphs


def test_bundle_paths_are_the_served_graph_and_its_qdq_source(repository, checkpoint, quantized):
    graphs = served_graphs(repository, checkpoint)
    served = quantized / served_int8_graph("cpu")
    assert graphs["bundle_openvino"] == ("openvino", served) and graphs["bundle_ort"] == ("ort", served)
    assert graphs["qdq_openvino"] == ("openvino", quantized / "detector_qdq.onnx")


def test_a_repository_of_another_checkpoint_is_refused(repository, tmp_path):
    with pytest.raises(ConfigError, match="not .*other.pt"):
        served_graphs(repository, tmp_path / "other.pt")
