"""PTQ with nvidia-modelopt, sensitivity ranking, partial PTQ and the exported INT8 graphs."""

import copy

import numpy as np
import onnx
import pytest
import torch

from yolov6_build.export.onnx import export_onnx
from yolov6_build.model.yolo import fuse_for_deploy
from yolov6_build.quantize.ort_int8 import conv_count, node_module, quantize_for_ort
from yolov6_build.quantize.ptq import (PtqConfig, executed_layers, layer_quantizers, quantize_ptq,
                                       set_float_layers)
from yolov6_build.quantize.sensitivity import analyse, rank, write_report

HW = (96, 96)


@pytest.fixture(scope="module")
def fused(model_n):
    return fuse_for_deploy(copy.deepcopy(model_n))


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(0)
    return [rng.random((4, 3, *HW), dtype=np.float32) for _ in range(2)]


@pytest.fixture(scope="module")
def quantized(fused, batches):
    return quantize_ptq(fused, batches, PtqConfig("max"), progress=False)


def test_float_stem_keeps_only_the_stem_float(fused, batches):
    layers = executed_layers(fused, HW)
    float_stem = quantize_ptq(fused, batches, PtqConfig("max", float_stem=True), progress=False)
    assert layers[0] == "backbone.stem.rbr_reparam"
    assert set(layer_quantizers(float_stem)) == set(layers[1:])


def test_every_executed_layer_is_quantized(fused, quantized):
    layers = executed_layers(fused, HW)
    assert "detect.proj_conv" not in layers  # n/s never run the DFL projection
    assert set(layer_quantizers(quantized)) == set(layers)
    weight_axes = {n: q.axis for n, q in quantized.named_modules() if n.endswith("weight_quantizer") and q.is_enabled}
    assert weight_axes["neck.Bifusion0.upsample.upsample_transpose.weight_quantizer"] == 1  # per output channel
    assert weight_axes["backbone.stem.rbr_reparam.weight_quantizer"] == 0


def test_calibration_sets_scales_from_data(fused, batches, quantized):
    stem_input = quantized.backbone.stem.rbr_reparam.input_quantizer
    assert float(stem_input.amax) == pytest.approx(max(float(b.max()) for b in batches), rel=1e-6)
    # One layer quantized, the rest float: the MSE and entropy searches cost minutes over all 143 quantizers
    layer = "neck.reduce_layer0.block.conv"
    others = tuple(name for name in executed_layers(fused, HW) if name != layer)
    amaxes = {}
    for calibrator in ("max", "percentile", "mse", "entropy"):
        q = quantize_ptq(fused, batches, PtqConfig(calibrator, percentile=99.0, exclude=others), progress=False)
        assert set(layer_quantizers(q)) == {layer}
        amaxes[calibrator] = float(q.neck.reduce_layer0.block.conv.input_quantizer.amax)
    maximum = amaxes.pop("max")
    assert all(0 < v <= maximum * (1 + 1e-6) for v in amaxes.values()), (amaxes, maximum)
    assert amaxes["percentile"] < maximum and len(set(amaxes.values())) == 3  # each method picks its own range


def test_quantized_layer_differs_and_excluded_layer_matches(fused, batches):
    layer = "neck.Rep_p4.conv1.rbr_reparam"
    q = quantize_ptq(fused, batches, PtqConfig("max", exclude=(layer,)), progress=False)
    assert layer not in layer_quantizers(q)
    x = torch.from_numpy(batches[0])
    with torch.no_grad():
        float_out = fused.backbone.stem(x)
        quant_out = q.backbone.stem(x)
        feats = fused.backbone(x)
        conv_in = fused.neck.Bifusion0([fused.neck.reduce_layer0(feats[3]), feats[2], feats[1]])
        excluded_fp = fused.neck.Rep_p4.conv1.rbr_reparam(conv_in)
        excluded_q = q.neck.Rep_p4.conv1.rbr_reparam(conv_in)
    assert not torch.allclose(float_out, quant_out)
    assert torch.equal(excluded_fp, excluded_q)
    with pytest.raises(Exception, match="not found"):
        quantize_ptq(fused, batches, PtqConfig("max", exclude=("no.such.layer",)), progress=False)


def test_sensitivity_ranks_a_damaged_layer_first(checkpoint, batches, tmp_path):
    """An outlier input channel (function-preserving rescale across a ReLU) ruins a per-tensor range.

    On a trained model (the demo checkpoint): in a random one the stem's own error can outrank it."""
    from yolov6_build.model.checkpoint import load_deploy_model

    fused, _ = load_deploy_model(checkpoint)
    damaged = copy.deepcopy(fused)
    producer = damaged.neck.Rep_p3.conv1.rbr_reparam  # its output (after ReLU) feeds the next block
    consumer = damaged.neck.Rep_p3.block[0].rbr_reparam
    channel = int(producer.bias.argmax())  # a channel the ReLU lets through: the outlier shows in the range
    with torch.no_grad():
        producer.weight[channel] *= 500.0
        producer.bias[channel] *= 500.0
        consumer.weight[:, channel] /= 500.0
    x = torch.from_numpy(batches[0])
    with torch.no_grad():
        torch.testing.assert_close(damaged(x), fused(x), rtol=1e-3, atol=1e-2)  # same function in float
    quant = quantize_ptq(damaged, batches, PtqConfig("max"), progress=False)
    results = analyse(damaged, quant, batches[:1], progress=False)
    assert rank(results)[0].layer == "neck.Rep_p3.block.0.rbr_reparam"
    paths = write_report(results, tmp_path)
    assert paths["png"].stat().st_size > 1000 and "Rep_p3.block.0" in paths["md"].read_text()
    # all quantizers are back on after the analysis
    assert all(q._if_quant for qs in layer_quantizers(quant).values() for q in qs)


def test_qdq_graph_has_qdq_on_quantized_convs_only(fused, batches, tmp_path):
    excluded = "detect.cls_preds.1"
    quant = quantize_ptq(fused, batches, PtqConfig("max"), progress=False)
    set_float_layers(quant, {excluded})
    path = export_onnx(quant, tmp_path / "qdq.onnx", HW, topk=100)
    graph = onnx.load(str(path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        weight_dq = getattr(producers.get(node.input[1]), "op_type", "") == "DequantizeLinear"
        input_dq = getattr(producers.get(node.input[0]), "op_type", "") == "DequantizeLinear"
        is_excluded = node_module(node.name) == excluded
        assert weight_dq == input_dq == (not is_excluded), node.name
    assert conv_count(path) == (70, 1)


def test_ort_int8_graph_quantizes_body_and_keeps_float_layers(fused, batches, tmp_path):
    fp32 = export_onnx(fused, tmp_path / "fp32.onnx", HW, topk=100)
    int8 = quantize_for_ort(fp32, tmp_path / "int8.onnx", batches, float_layers={"detect.reg_preds.2"},
                            calibrator="max")
    assert conv_count(int8) == (70, 1)
    import onnxruntime as ort

    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    boxes, scores, classes = session.run(None, {"images": batches[0]})
    assert boxes.shape == (4, 100, 4) and classes.dtype == np.int32


def test_node_module_names():
    assert node_module("/model/backbone/ERBlock_5/ERBlock_5.2/cspsppf/m/MaxPool_1") == "backbone.ERBlock_5.2.cspsppf.m"
    assert node_module("/model/neck/Rep_p3/block/block.0/rbr_reparam/Conv") == "neck.Rep_p3.block.0.rbr_reparam"
    assert node_module("/model/detect/cls_preds.0/Conv") == "detect.cls_preds.0"


def test_mse_amax_clips_outliers_but_not_uniform_data():
    from yolov6_build.quantize.ptq import mse_amax

    rng = np.random.default_rng(0)
    uniform = rng.random(50_000)
    hist, edges = np.histogram(uniform, bins=2048, range=(0, 1))
    assert mse_amax(hist, edges) > 0.98
    heavy = np.abs(rng.standard_t(2, 200_000))  # heavy tail: clipping the rare large values pays off
    hist, edges = np.histogram(heavy, bins=2048, range=(0, heavy.max()))
    amax = mse_amax(hist, edges)
    assert edges[129] < amax < 0.9 * heavy.max()  # clips the tail, yet not the degenerate smallest range



def test_qdq_graph_run_as_written_is_the_fake_quant_model(checkpoint, tmp_path):
    """`eval --qdq-as-written` compares a served graph with its quantization: ORT without graph optimizations
    computes what modelopt's fake-quant model computes (up to rounding-edge flips), closer than ORT's integer
    kernels do."""
    from yolov6_build.model.checkpoint import load_deploy_model
    from yolov6_build.quantize.calibration import load_batches
    from yolov6_build.runtime import OrtDetector
    from yolov6_build.synthetic import write_split

    model, info = load_deploy_model(checkpoint)
    hw = tuple(info.input_hw)
    images = load_batches(write_split(tmp_path / "data", "calib", 8, seed=5), hw, 8, 4, progress=False)
    quant = quantize_ptq(model, images, PtqConfig("max"), progress=False)
    path = export_onnx(quant, tmp_path / "qdq_raw.onnx", hw)  # raw outputs: every anchor, no top-k
    with torch.no_grad():
        expected = quant(torch.from_numpy(images[0])).numpy()
    as_written = OrtDetector(path, as_written=True).infer(images[0])[0]
    integer_kernels = OrtDetector(path).infer(images[0])[0]
    error = np.abs(as_written - expected)
    # Float convs accumulate in another order than PyTorch's, so a value landing on a rounding edge can
    # quantize one step apart: a few outputs differ a little (boxes by a pixel). Most are identical.
    assert np.median(error) < 1e-3
    assert error.mean() < 0.75 * np.abs(integer_kernels - expected).mean()
