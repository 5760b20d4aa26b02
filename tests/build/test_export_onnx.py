"""FP32 ONNX export of the deploy model, checked with ONNX Runtime."""

import copy

import numpy as np
import onnx
import onnxruntime as ort
import torch

from yolov6_build.contract import DETECTOR_INPUT, DETECTOR_OUTPUT
from yolov6_build.export.onnx import export_onnx
from yolov6_build.model.yolo import fuse_for_deploy


def test_onnx_matches_torch_with_dynamic_batch(tmp_path, model_n):
    model = fuse_for_deploy(copy.deepcopy(model_n))
    path = export_onnx(model, tmp_path / "n.onnx", (320, 320))
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == [DETECTOR_INPUT]
    assert [o.name for o in graph.output] == [DETECTOR_OUTPUT]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    x = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    batch = torch.cat([x, torch.flip(x, dims=[3])]).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {DETECTOR_INPUT: batch})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(batch)).numpy()
    assert got.shape == (2, 2100, 85)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_export_inlines_bias_identities_for_ort_int8(tmp_path, model_n):
    """Biases routed through Identity nodes keep ORT from fusing QLinearConv (INT8 slower than FP32)."""
    model = fuse_for_deploy(copy.deepcopy(model_n))
    graph = onnx.load(str(export_onnx(model, tmp_path / "n.onnx", (96, 96), topk=50))).graph
    initializers = {i.name for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(all(name in initializers for name in n.input[1:]) for n in convs)
    assert not any(n.op_type == "Identity" and n.input[0] in initializers for n in graph.node)
