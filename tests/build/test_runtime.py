"""The CPU detector runtimes: the bundle's graphs load in OpenVINO and ONNX Runtime and agree."""

import numpy as np
import pytest

from yolov6_build import contract as c
from yolov6_build.runtime import OpenVinoDetector, OrtDetector, load_detector


@pytest.fixture(scope="module")
def letterboxed(images):
    from yolov6_build.dali.pipeline import CpuLetterbox

    return np.stack([r[0] for r in CpuLetterbox((320, 320), 4)([p.read_bytes() for p in images])])


def test_fp32_detector_graph_runs_the_same_in_openvino_and_ort(quantized, letterboxed):
    path = quantized / "detector_fp32.onnx"
    ov_boxes, ov_scores, ov_classes = OpenVinoDetector(path, 2)(letterboxed)
    ort_boxes, ort_scores, ort_classes = OrtDetector(path, 2)(letterboxed)
    assert ov_classes.dtype == np.int32 and ov_boxes.shape == ort_boxes.shape
    # every confident OpenVINO candidate is one of ONNX Runtime's (anchors of one object with near-equal
    # scores may swap places); tolerances allow OpenVINO's bf16 on CPUs that have it
    for image in range(len(letterboxed)):
        for i in range(20):
            same = ((ort_classes[image, :40] == ov_classes[image, i])
                    & (np.abs(ort_scores[image, :40] - ov_scores[image, i]) <= 0.01)
                    & (np.abs(ort_boxes[image, :40] - ov_boxes[image, i]).max(axis=1) <= 2.0))
            assert same.any(), (image, i, ov_scores[image, i], ov_classes[image, i])


@pytest.mark.parametrize("graph", ["detector_int8_ort.onnx", "detector_qdq.onnx"])  # served CPU, TensorRT's
def test_openvino_runs_every_conv_of_the_int8_graphs_in_int8(quantized, graph):
    import onnx

    detector = OpenVinoDetector(quantized / graph, 2)
    precisions = [op.get_rt_info()["runtimePrecision"].astype(str) for op in detector.compiled.get_runtime_model().get_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    graph_convs = sum(n.op_type == "Conv" for n in onnx.load(str(quantized / graph)).graph.node)
    assert len(precisions) == graph_convs and set(precisions) <= {"u8", "i8"}, precisions


def test_unknown_runtime_is_refused(quantized):
    with pytest.raises(Exception, match="runtime must be one of"):
        load_detector(quantized / "detector_fp32.onnx", "tensorflow")


def test_detector_outputs_are_the_contract_candidates(quantized, letterboxed):
    boxes, scores, classes = OpenVinoDetector(quantized / "detector_qdq.onnx")(letterboxed[:1])
    k = min(c.DEFAULT_TOPK, sum((320 // s) ** 2 for s in (8, 16, 32)))
    assert boxes.shape == (1, k, 4) and scores.shape == (1, k) and classes.shape == (1, k)
    assert np.all(np.diff(scores[0]) <= 0)  # top-k order survives the runtime
