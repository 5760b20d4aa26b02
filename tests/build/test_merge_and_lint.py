"""Merged scales and the Q/DQ lint: zero findings on the bundle's graphs, findings on naive ones."""

import copy

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
    return _quantized_with(size, PtqConfig("percentile"), seed)


def _quantized_with(size, cfg, seed=0):
    torch.manual_seed(seed)
    model = fuse_for_deploy(build_model(ModelSpec(size, 8)))
    batches = [np.random.default_rng(seed).random((2, 3, *HW), dtype=np.float32)]
    return quantize_ptq(model, batches, cfg, progress=False)


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


def test_pooled_histogram_keeps_every_count_on_common_bins():
    from yolov6_build.quantize.merge import pooled_histogram

    rng = np.random.default_rng(0)
    narrow, wide = rng.random(10_000) * 0.5, rng.random(10_000) * 8.0
    members = [np.histogram(x, bins=2048, range=(0, x.max())) for x in (narrow, wide)]
    hist, edges = pooled_histogram(members)
    assert hist.sum() == 20_000 and edges[0] == 0 and np.isclose(edges[-1], wide.max())
    # the pooled median lies where the pooled data's median lies (within a bin or two)
    cdf = np.cumsum(hist) / hist.sum()
    median = edges[1:][np.searchsorted(cdf, 0.5)]
    assert abs(median - np.median(np.concatenate([narrow, wide]))) < 3 * (edges[1] - edges[0])


@pytest.mark.parametrize("calibrator", ["max", "percentile"])
def test_tied_groups_share_one_scale_no_larger_than_the_merged_one(calibrator, tmp_path):
    from yolov6_build.quantize.merge import share_scales

    quant = _quantized("n") if calibrator == "percentile" else _quantized_with("n", PtqConfig("max"))
    tied, merged = copy.deepcopy(quant), copy.deepcopy(quant)
    groups = share_scales(tied, "tie", PtqConfig(calibrator), HW)
    share_scales(merged, "merge", PtqConfig(calibrator), HW)
    tied_modules, merged_modules = dict(tied.named_modules()), dict(merged.named_modules())
    for group in groups:
        amaxes = {float(tied_modules[n].amax) for n in group}
        assert len(amaxes) == 1, group
        merged_amax = float(merged_modules[group[0]].amax)
        if calibrator == "max":  # pooled maxima are the largest maximum: tie == merge
            assert np.isclose(amaxes.pop(), merged_amax)
        else:  # pooled tails are no heavier than the heaviest member's (up to a bin of the pooled histogram)
            assert amaxes.pop() <= merged_amax * 1.01
    assert lint_qdq(export_onnx(tied, tmp_path / "tied.onnx", HW)) == []


def test_residual_adds_get_tied_quantizers_and_the_lint_sees_float_adds(tmp_path):
    quant = _quantized("m")
    adds = [n for n, _ in quant.named_modules() if n.endswith("add.residual_quantizer")]
    assert len(adds) == 24  # every BottleRep shortcut of YOLOv6-m
    merge_scales(quant, HW)
    assert lint_qdq(export_onnx(quant, tmp_path / "merged.onnx", HW)) == []
    for name, module in quant.named_modules():
        if name.endswith(("add.residual_quantizer", "add.input_quantizer")):
            module.disable()
    findings = lint_qdq(export_onnx(quant, tmp_path / "float_adds.onnx", HW))
    assert len(findings) == 24 and {f.kind for f in findings} == {"unquantized-add"}


def _scale_sets_at_joins(onnx_path) -> dict[str, set[float]]:
    """For every Concat/Add/MaxPool: the scales of the Q nodes on its tensors. A tensor's Q nodes are
    the QuantizeLinear nodes reading it, and the one behind it when it comes out of a DequantizeLinear
    (Cast/Identity in between are looked through, up and down).

    Written here from the ONNX graph alone, independent of ``merge.scale_groups`` and the lint's
    QdqGraph, so that a join both of them missed would still show up.
    """
    from collections import defaultdict

    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    readers, producer = defaultdict(list), {}
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
        for name in node.output:
            producer[name] = node

    def readers_q(tensor):
        found = []
        for reader in readers[tensor]:
            if reader.op_type == "QuantizeLinear":
                found.append(reader)
            elif reader.op_type in ("Cast", "Identity"):
                found += readers_q(reader.output[0])
        return found

    def quantizers(tensor):
        source = producer.get(tensor)
        while source is not None and source.op_type in ("Cast", "Identity"):  # up to the real tensor
            tensor, source = source.input[0], producer.get(source.input[0])
        found = readers_q(tensor)
        if source is not None and source.op_type == "DequantizeLinear":
            behind = producer.get(source.input[0])
            if behind is not None and behind.op_type == "QuantizeLinear":
                found.append(behind)
        return found

    joins = {}
    for node in graph.node:
        if node.op_type in ("Concat", "Add", "MaxPool"):
            tensors = [t for t in (*node.input, *node.output) if t not in constants]
            joins[node.name] = {round(float(constants[q.input[1]]), 9) for t in tensors for q in quantizers(t)}
    return joins


@pytest.mark.parametrize("size", ["n", "m"])
def test_every_join_has_one_scale_after_merging_by_an_independent_walk(size, tmp_path):
    quant = _quantized(size)
    unmerged = _scale_sets_at_joins(export_onnx(quant, tmp_path / "unmerged.onnx", HW))
    assert any(len(scales) > 1 for scales in unmerged.values())  # the check sees what merging must fix
    merge_scales(quant, HW)
    merged = _scale_sets_at_joins(export_onnx(quant, tmp_path / "merged.onnx", HW, topk=100))
    assert sum(len(scales) == 1 for scales in merged.values()) >= 9  # SPPF pools and concats, neck concats
    assert {name: scales for name, scales in merged.items() if len(scales) > 1} == {}
