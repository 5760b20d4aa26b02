"""Merged scales and the Q/DQ lint: zero findings on the bundle's graphs, findings on naive ones."""

import numpy as np
import pytest
import torch

from yolov6_build.export.lint import lint_qdq
from yolov6_build.export.onnx import export_onnx
from yolov6_build.model.yolo import ModelSpec, build_model, fuse_for_deploy
from yolov6_build.quantize.merge import merge_scales
from yolov6_build.quantize.ptq import PtqConfig, quantize_ptq

HW = (64, 64)


def _quantized(size, seed=0):
    torch.manual_seed(seed)
    model = fuse_for_deploy(build_model(ModelSpec(size, 8)))
    batches = [np.random.default_rng(seed).random((2, 3, *HW), dtype=np.float32)]
    return quantize_ptq(model, batches, PtqConfig("percentile"), progress=False)


def test_naive_graph_has_findings(tmp_path):
    naive = lint_qdq(export_onnx(_quantized("n"), tmp_path / "naive.onnx", HW))
    assert any(f.kind == "mixed-scales" and "Concat" in f.node for f in naive), naive


@pytest.mark.parametrize("size", ["n", "s", "m", "l"])
def test_merged_graph_is_clean_and_a_perturbed_one_is_not(size, tmp_path):
    from yolov6_build.quantize.merge import scale_groups

    quant = _quantized(size)
    modules = dict(quant.named_modules())
    groups = scale_groups(quant, HW)
    assert groups and all(len(g) > 1 for g in groups)
    for group in groups:  # give each group one deviating member: a graph without tied scales
        modules[group[0]].amax = modules[group[0]].amax * 1.5
    naive = lint_qdq(export_onnx(quant, tmp_path / "naive.onnx", HW))
    assert len(naive) >= len(groups) // 2 and {f.kind for f in naive} <= {"mixed-scales", "shared-input-scales"}
    groups = merge_scales(quant, HW)
    assert groups and all(len(g) > 1 for g in groups)
    merged = lint_qdq(export_onnx(quant, tmp_path / "merged.onnx", HW, topk=100))
    assert merged == [], merged


def test_groups_follow_the_graph_not_names():
    groups = merge_scales(_quantized("n"), HW)
    flat = {name for g in groups for name in g}
    # SPPF pool (called three times) is tied to the concat's consumer
    assert any({"backbone.ERBlock_5.2.cspsppf.m.input_quantizer",
                "backbone.ERBlock_5.2.cspsppf.cv5.block.conv.input_quantizer"} <= set(g) for g in groups)
    # the backbone's P3 output feeds ERBlock_4 and the neck: one scale
    assert any({"backbone.ERBlock_4.0.rbr_reparam.input_quantizer"} <= set(g) for g in groups)
    assert all(name.endswith("input_quantizer") for name in flat)


def test_lint_reports_float_islands_and_accepts_intended_ones(tmp_path):
    from yolov6_build.quantize.ptq import set_float_layers

    quant = _quantized("n")
    merge_scales(quant, HW)
    set_float_layers(quant, {"detect.cls_preds.2"})
    path = export_onnx(quant, tmp_path / "partial.onnx", HW)
    findings = lint_qdq(path)
    assert [f.kind for f in findings] == ["unquantized-layer"] and "cls_preds.2" in findings[0].node
    assert lint_qdq(path, float_layers={"detect.cls_preds.2"}) == []
