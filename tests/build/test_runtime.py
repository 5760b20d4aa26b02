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


@pytest.mark.parametrize("graph", ["detector_qdq_u8.onnx", "detector_qdq.onnx"])
def test_openvino_runs_every_quantized_conv_in_int8(quantized, graph):
    import onnx

    detector = OpenVinoDetector(quantized / graph, 2)
    precisions = [op.get_rt_info()["runtimePrecision"].astype(str) for op in detector.compiled(1).get_runtime_model().get_ops()
                  if op.get_rt_info()["layerType"].astype(str) in ("Convolution", "Deconvolution")]
    nodes = onnx.load(str(quantized / graph)).graph.node
    producers = {o: n for n in nodes for o in n.output}
    convs = [n for n in nodes if n.op_type in ("Conv", "ConvTranspose")]
    assert all(getattr(producers.get(n.input[1]), "op_type", "") == "DequantizeLinear" for n in convs)
    assert len(precisions) == len(convs) and set(precisions) <= {"u8", "i8"}, precisions


@pytest.mark.parametrize("runtime", ["openvino", "ort"])
def test_a_float_graph_takes_uint8_pixels_as_the_same_images(quantized, letterboxed, runtime):
    """The cpu flavour hands every detector uint8 pixels; an FP32 graph gets them back as pixels / 255."""
    detector = load_detector(quantized / "detector_fp32.onnx", runtime, 2)
    assert detector.pixels == np.float32
    pixels = np.rint(letterboxed * 255).astype(np.uint8)
    for a, b in zip(detector(pixels), detector(pixels.astype(np.float32) / 255)):
        np.testing.assert_array_equal(a, b)


def test_pixel_forms_convert_only_from_pixels():
    from yolov6_build.runtime import as_pixels

    pixels = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    as_float = as_pixels(pixels, np.float32)
    assert as_float.dtype == np.float32 and as_float.max() == 1.0
    np.testing.assert_array_equal(as_pixels(as_float, np.uint8), pixels)
    np.testing.assert_array_equal(as_pixels(as_float.astype(np.float64), np.float32), as_float)  # not / 255 again
    with pytest.raises(TypeError, match="uint8 pixels or float"):
        as_pixels(pixels.astype(np.int32), np.uint8)


def test_openvino_runs_every_quantizer_of_the_served_graph_inside_a_kernel(quantized):
    """Compiled as served (static batch), no FakeQuantize is left to run on its own; each is fused into the
    conv before it. With a dynamic batch axis the stem's output quantizer was not."""
    ops = OpenVinoDetector(quantized / "detector_qdq_u8.onnx", 2).compiled(1).get_runtime_model().get_ops()
    assert [op.get_friendly_name() for op in ops if op.get_rt_info()["layerType"].astype(str) == "FakeQuantize"] == []


def _ort_optimized_ops(path, tmp_path) -> list:
    """(op type, name) of the graph ONNX Runtime runs after its own fusions."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.ort.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [(n.op_type, n.name) for n in onnx.load(options.optimized_model_filepath).graph.node]


def test_ort_runs_the_cpu_graphs_backbone_convs_as_integer_kernels(quantized, tmp_path):
    """Every backbone conv (ReLU, zero point 0) becomes a QLinearConv once the Q/DQ pairs sit where ORT
    fuses; the modelopt form, Q/DQ at conv inputs only, leaves the convs feeding Concats float."""
    import onnx

    ops = _ort_optimized_ops(quantized / "detector_qdq_u8.onnx", tmp_path)
    float_backbone = [name for op, name in ops if op in ("Conv", "FusedConv") and name.startswith("/model/backbone")]
    assert float_backbone == [], float_backbone
    model = onnx.load(str(quantized / "detector_qdq_u8.onnx"))
    before = sum(op == "QLinearConv" for op, _ in _ort_optimized_ops(_unplaced(quantized, tmp_path), tmp_path))
    assert sum(op == "QLinearConv" for op, _ in ops) > before
    assert sum(n.op_type == "Conv" for n in model.graph.node) == sum(op in ("QLinearConv", "Conv", "FusedConv")
                                                                     for op, _ in ops)


def _unplaced(quantized, tmp_path):
    """The CPU form without ``place_for_ort`` (zero points moved, Q/DQ where modelopt put them)."""
    from yolov6_build.quantize.cpu_qdq import uint8_activations

    return uint8_activations(quantized / "detector_qdq.onnx", tmp_path / "unplaced.onnx", placed_for_ort=False)


def test_placing_qdq_for_ort_changes_no_value(quantized, letterboxed, tmp_path):
    """Reference Q/DQ arithmetic (ORT with its fusions off) gives the same candidates before and after."""
    def reference(path):
        return OrtDetector(path, as_written=True)(letterboxed)

    for placed, unplaced in zip(reference(quantized / "detector_qdq_u8.onnx"),
                                reference(_unplaced(quantized, tmp_path))):
        np.testing.assert_array_equal(placed, unplaced)


def _quantized_silus(model) -> list[str]:
    """Outputs of x * sigmoid(x) that a QuantizeLinear reads."""
    nodes = model.graph.node
    producers = {o: n for n in nodes for o in n.output}
    quantized_tensors = {n.input[0] for n in nodes if n.op_type == "QuantizeLinear"}
    return [n.output[0] for n in nodes if n.op_type == "Mul" and n.output[0] in quantized_tensors
            and any(getattr(producers.get(i), "op_type", "") == "Sigmoid" and producers[i].input[0] in n.input
                    for i in n.input)]


def test_the_cpu_form_writes_quantized_silus_in_tanh_form_with_the_same_values(quantized, letterboxed, tmp_path):
    """Every SiLU before a quantizer (the head's nine) becomes h * (1 + tanh h); the reference Q/DQ
    arithmetic gives the same candidates (float rounding may move a value across a rounding edge)."""
    import onnx

    from yolov6_build.quantize.cpu_qdq import uint8_activations

    sigmoid_form = uint8_activations(quantized / "detector_qdq.onnx", tmp_path / "sigmoid.onnx", tanh_silu=False)
    silus = _quantized_silus(onnx.load(str(sigmoid_form)))
    served = onnx.load(str(quantized / "detector_qdq_u8.onnx"))
    assert len(silus) == 9 and _quantized_silus(served) == []
    assert sum(n.op_type == "Tanh" for n in served.graph.node) == len(silus)
    tanh_outputs = OrtDetector(quantized / "detector_qdq_u8.onnx", as_written=True)(letterboxed)
    sigmoid_outputs = OrtDetector(sigmoid_form, as_written=True)(letterboxed)
    _assert_same_candidates(tanh_outputs, sigmoid_outputs, 1e-3, 0.5)


def test_openvino_keeps_the_quantized_silus_out_of_the_int8_convs(quantized):
    """No compiled conv carries the activation (its tanh or its product) as a post-op: the fused SiLU and
    requantize was the slow kernel. The sigmoid form fuses the product into the conv."""
    ops = OpenVinoDetector(quantized / "detector_qdq_u8.onnx", 2).compiled(1).get_runtime_model().get_ops()
    fused = {op.get_friendly_name(): op.get_rt_info()["originalLayersNames"].astype(str).split(",") for op in ops
             if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    activations = {name: [layer for layer in layers if layer.endswith(("/act/Mul", "/tanh_silu/tanh"))]
                   for name, layers in fused.items()}
    assert fused and not any(activations.values()), activations


def test_unknown_runtime_is_refused(quantized):
    with pytest.raises(Exception, match="runtime must be one of"):
        load_detector(quantized / "detector_fp32.onnx", "tensorflow")


def test_ort_pool_threads_sleep_when_idle(quantized):
    """Served, spinning pool threads take the cores the other steps' stubs need (docs/benchmarks.md)."""
    options = OrtDetector(quantized / "detector_fp32.onnx").session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_detector_outputs_are_the_contract_candidates(quantized, letterboxed):
    boxes, scores, classes = OpenVinoDetector(quantized / "detector_qdq.onnx")(letterboxed[:1])
    k = min(c.DEFAULT_TOPK, sum((320 // s) ** 2 for s in (8, 16, 32)))
    assert boxes.shape == (1, k, 4) and scores.shape == (1, k) and classes.shape == (1, k)
    assert np.all(np.diff(scores[0]) <= 0)  # top-k order survives the runtime


def test_uint8_activations_keep_every_scale_and_move_zero_points_by_sign(quantized, tmp_path):
    """Same Q/DQ nodes and scales (the image input's aside: its own test); an activation that can be
    negative gets uint8 zero point 128 (exact), one that cannot (a ReLU output, or MaxPool/Concat of
    such) gets 0."""
    import onnx
    from onnx import numpy_helper

    from yolov6_build.quantize.cpu_qdq import uint8_activations

    def quantizers(path):
        graph = onnx.load(str(path)).graph
        constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
        constants.update({i.name: numpy_helper.to_array(i) for i in graph.initializer})
        producers = {o: n for n in graph.node for o in n.output}
        def quantized_tensor(n):
            return n.input[0] if n.op_type == "QuantizeLinear" else producers[n.input[0]].input[0]

        return {n.name: (constants[n.input[1]], constants[n.input[2]], producers.get(n.input[0]))
                for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[2] in constants
                and quantized_tensor(n) != c.DETECTOR_INPUT}

    int8, uint8 = quantizers(quantized / "detector_qdq.onnx"), quantizers(
        uint8_activations(quantized / "detector_qdq.onnx", tmp_path / "unplaced.onnx", placed_for_ort=False,
                          uint8_pixels=False))
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


def _small_cpu_form(model_n, tmp_path, ptq, uint8_pixels: bool = True):
    """The CPU form's ONNX graph of ``model_n`` at 64x64, calibrated by PTQ (``ptq``: a PtqConfig) on
    random images."""
    import copy

    import onnx

    from yolov6_build.export.onnx import export_onnx
    from yolov6_build.model.yolo import fuse_for_deploy
    from yolov6_build.quantize.cpu_qdq import uint8_activations
    from yolov6_build.quantize.ptq import quantize_ptq

    hw = (64, 64)
    batches = [np.random.default_rng(0).random((2, 3, *hw), dtype=np.float32)]
    quant = quantize_ptq(fuse_for_deploy(copy.deepcopy(model_n)), batches, ptq, progress=False)
    return onnx.load(str(uint8_activations(export_onnx(quant, tmp_path / "qdq.onnx", hw, topk=10),
                                           tmp_path / "cpu.onnx", uint8_pixels=uint8_pixels))).graph


def test_the_quantized_stem_reads_every_pixel_level_exactly(model_n, tmp_path):
    """The image input's quantizer gets scale 1/255, zero point 0: the 256 grey levels of the
    contract's input (RGB / 255) pass unchanged, where int8 at amax 1 keeps 128."""
    from onnx import numpy_helper

    from yolov6_build.quantize.cpu_qdq import PIXEL_SCALE
    from yolov6_build.quantize.ptq import PtqConfig

    graph = _small_cpu_form(model_n, tmp_path, PtqConfig(), uint8_pixels=False)
    constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    (input_q,) = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == c.DETECTOR_INPUT]
    assert constants[input_q.input[1]] == PIXEL_SCALE and constants[input_q.input[2]] == np.uint8(0)
    pixels = np.arange(256, dtype=np.float32) / 255
    np.testing.assert_array_equal(np.round(pixels / PIXEL_SCALE), np.arange(256))  # one step per grey level


def test_a_float_stem_keeps_float_input_in_the_cpu_form(model_n, tmp_path):
    """Only a quantized stem reads pixels exactly on the uint8 grid; a float stem keeps float input."""
    import onnx

    from yolov6_build.quantize.ptq import PtqConfig

    for float_stem, elem_type in ((True, onnx.TensorProto.FLOAT), (False, onnx.TensorProto.UINT8)):
        graph = _small_cpu_form(model_n, tmp_path, PtqConfig(float_stem=float_stem))
        assert graph.input[0].type.tensor_type.elem_type == elem_type, float_stem


@pytest.mark.parametrize("runtime", ["openvino", "ort"])
def test_the_cpu_form_reads_uint8_pixels_with_the_float_forms_results(quantized, letterboxed, runtime, tmp_path):
    """The served CPU graph takes uint8 pixels (its input quantizer, exact on the pixel grid, is gone) and
    gives bit for bit what the same graph with float input and that quantizer gives; each detector takes
    either pixel form."""
    import onnx

    from yolov6_build.quantize.cpu_qdq import uint8_activations

    served = quantized / "detector_qdq_u8.onnx"
    graph = onnx.load(str(served)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert not [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == c.DETECTOR_INPUT]
    float_form = uint8_activations(quantized / "detector_qdq.onnx", tmp_path / "float_input.onnx", uint8_pixels=False)
    pixels = np.rint(letterboxed * 255).astype(np.uint8)
    assert np.abs(pixels / 255 - letterboxed).max() < 1e-6  # the letterbox's grid (DALI: k * (1/255))
    detector = load_detector(served, runtime, 2)
    assert detector.pixels == np.uint8
    expected = load_detector(float_form, runtime, 2)(letterboxed)
    for got in (detector(pixels), detector(letterboxed)):
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


def test_profiles_of_both_runtimes_split_the_served_graph_by_op_group(quantized, letterboxed):
    from yolov6_build.reports.profile_cpu import GROUPS, profile_paths

    graph = quantized / "detector_qdq_u8.onnx"
    result = profile_paths({"openvino": ("openvino", graph), "ort": ("ort", graph)}, letterboxed[:1], threads=1,
                           rounds=2, runs=2)
    assert all(set(groups) <= set(GROUPS) and groups["conv int8"] > 0 for groups in result.values())
    assert "conv float" not in result["openvino"]  # every conv of the served graph runs in int8 there


def test_kernel_precision_reads_both_spellings_of_openvino_kernel_names():
    from yolov6_build.reports.profile_cpu import _group, kernel_precision

    # VNNI kernels end in "_I8", AMX kernels in "_i8": both are integer convolutions
    for name in ("brgconv_avx512_core_vnni_I8", "brgconv_avx512_amx_i8", "jit_avx512_amx_1x1_i8"):
        assert _group("Convolution", kernel_precision(name)) == "conv int8"
    assert kernel_precision("brgconv_avx512_amx_bf16") == "BF16" and kernel_precision("unknown") == ""
    assert _group("Convolution", kernel_precision("brgconv_avx512_amx_bf16")) == "conv float"
