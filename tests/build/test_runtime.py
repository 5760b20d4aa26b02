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
    # tolerances allow OpenVINO's bf16 on CPUs that have it
    _assert_same_candidates((ov_boxes, ov_scores, ov_classes), (ort_boxes, ort_scores, ort_classes), 0.01, 2.0)


def _assert_same_candidates(got, want, score_tolerance: float, box_tolerance: float, top: int = 20):
    """Every confident candidate of ``got`` is one of ``want``'s (anchors of one object with
    near-equal scores may swap places in the top-k order)."""
    (boxes, scores, classes), (want_boxes, want_scores, want_classes) = got, want
    for image in range(len(boxes)):
        for i in range(top):
            same = ((want_classes[image, :2 * top] == classes[image, i])
                    & (np.abs(want_scores[image, :2 * top] - scores[image, i]) <= score_tolerance)
                    & (np.abs(want_boxes[image, :2 * top] - boxes[image, i]).max(axis=1) <= box_tolerance))
            assert same.any(), (image, i, scores[image, i], classes[image, i])


@pytest.mark.parametrize("graph", ["detector_qdq_u8.onnx", "detector_int8_ort.onnx", "detector_qdq.onnx"])
def test_openvino_runs_every_conv_of_the_int8_graphs_in_int8(quantized, graph):
    import onnx

    detector = OpenVinoDetector(quantized / graph, 2)
    precisions = [op.get_rt_info()["runtimePrecision"].astype(str) for op in detector.compiled(1).get_runtime_model().get_ops()
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


def test_uint8_activations_keep_every_scale_and_move_zero_points_by_sign(quantized):
    """Same Q/DQ nodes and scales; an activation that can be negative gets uint8 zero point 128 (exact),
    one that cannot (a ReLU output, or MaxPool/Concat of such) gets 0."""
    import onnx
    from onnx import numpy_helper

    def quantizers(path):
        graph = onnx.load(str(path)).graph
        constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
        constants.update({i.name: numpy_helper.to_array(i) for i in graph.initializer})
        producers = {o: n for n in graph.node for o in n.output}
        return {n.name: (constants[n.input[1]], constants[n.input[2]], producers.get(n.input[0]))
                for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[2] in constants}

    int8, uint8 = quantizers(quantized / "detector_qdq.onnx"), quantizers(quantized / "detector_qdq_u8.onnx")
    assert int8.keys() == uint8.keys() and len(int8) > 100
    shifted, unsigned = 0, 0
    for name, (scale, zero_point, _) in int8.items():
        new_scale, new_zero_point, source = uint8[name]
        np.testing.assert_array_equal(new_scale, scale)
        if new_zero_point.dtype != np.uint8:
            np.testing.assert_array_equal(new_zero_point, zero_point)  # weights stay int8
            continue
        assert np.all(zero_point == 0) and zero_point.dtype == np.int8
        if name.endswith("/QuantizeLinear") and source is not None:
            if source.op_type == "Relu":
                assert new_zero_point == 0, name
            if source.op_type in ("Mul", "Add", "Conv"):  # SiLU, sums, raw convolutions can be negative
                assert new_zero_point == 128, name
        shifted += int(new_zero_point == 128)
        unsigned += int(new_zero_point == 0)
    assert shifted > 10 and unsigned > 50
