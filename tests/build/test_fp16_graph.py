"""The graphs TensorRT builds strongly typed: the body in FP16, the tail and I/O as the FP32 graph's."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from yolov6_build.export.fp16 import QDQ_OPSET, fp16_compute_nodes, to_fp16_compute


def _types(model) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    typed = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    typed.update({i.name: i.data_type for i in graph.initializer})
    return typed


@pytest.mark.parametrize("graph", ["detector_fp32.onnx", "detector_qdq.onnx"])
def test_every_convolution_computes_in_fp16_and_the_io_is_unchanged(quantized, graph):
    source = onnx.load(str(quantized / graph))
    typed = to_fp16_compute(source)
    types = _types(typed)
    io = [(v.name, v.type.tensor_type.elem_type) for v in [*typed.graph.input, *typed.graph.output]]
    assert io == [(v.name, v.type.tensor_type.elem_type) for v in [*source.graph.input, *source.graph.output]]
    convs = [node for node in typed.graph.node if node.op_type == "Conv"]
    assert convs and all(types[node.input[0]] == types[node.input[1]] == TensorProto.FLOAT16 for node in convs)
    topk = next(node for node in typed.graph.node if node.op_type == "TopK")
    assert types[topk.input[0]] == TensorProto.FLOAT  # scores are ranked in FP32
    dequantize = [node for node in typed.graph.node if node.op_type == "DequantizeLinear"]
    assert all(types[node.input[1]] == types[node.output[0]] == TensorProto.FLOAT16 for node in dequantize)
    if dequantize:
        assert typed.opset_import[0].version == QDQ_OPSET
    assert len(fp16_compute_nodes(source)) > len(convs)  # the activations and Q/DQ pairs between them too


def test_fp16_body_computes_what_the_fp32_body_does(quantized, images):
    """The network body run in real FP16 arithmetic (ONNX's reference evaluator, numpy float16) against the
    FP32 graph's body in ONNX Runtime, on a letterboxed sample: the head's outputs agree to FP16 precision."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from yolov6_build.geometry import letterbox_image
    from yolov6_build.data import decode_rgb

    source = onnx.shape_inference.infer_shapes(onnx.load(str(quantized / "detector_fp32.onnx")))
    typed = to_fp16_compute(source)
    borders = [node.output[0] for node in typed.graph.node if node.name.endswith("__to_fp32")]
    assert len(borders) == 6  # the head's class and box convolutions at three strides: the tail starts there
    body = onnx.utils.Extractor(typed).extract_model(["images"], borders)
    body_fp32 = onnx.utils.Extractor(source).extract_model(["images"], [b.removesuffix("__fp32") for b in borders])
    letterboxed, _ = letterbox_image(decode_rgb(images[0].read_bytes()), (320, 320))
    x = letterboxed[None].astype(np.float32)
    half = ReferenceEvaluator(body).run(None, {"images": x})
    full = ort.InferenceSession(body_fp32.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    for got, want in zip(half, full):
        error = np.abs(got - want).max()
        assert 0 < error < 0.02 * max(1.0, np.abs(want).max()), error  # rounded as FP16 does, no more


def test_typed_qdq_graph_stays_as_close_to_fp32_as_its_source(quantized, images):
    """FP16 scales move some INT8 roundings: noise of the kind quantization already adds, not more of it.
    (ONNX Runtime runs both on the CPU in FP32 arithmetic: this measures the scales, not FP16 compute.)"""
    import onnxruntime as ort

    from yolov6_build.data import decode_rgb
    from yolov6_build.geometry import letterbox_image

    batch = np.stack([letterbox_image(decode_rgb(p.read_bytes()), (320, 320))[0] for p in images]).astype(np.float32)
    fp32, qdq = (onnx.load(str(quantized / name)) for name in ("detector_fp32.onnx", "detector_qdq.onnx"))
    top = {}
    for name, model in (("fp32", fp32), ("qdq", qdq), ("typed", to_fp16_compute(qdq))):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        top[name] = np.sort(session.run(["candidate_scores"], {"images": batch})[0], axis=1)[:, ::-1][:, :50]
    quantization_noise = np.abs(top["qdq"] - top["fp32"]).mean()
    assert np.abs(top["typed"] - top["fp32"]).mean() <= 1.25 * quantization_noise
    assert np.abs(top["typed"] - top["qdq"]).max() < 0.1
