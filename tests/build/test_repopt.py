"""RepOpt: the hyper-search and plain blocks, the gradient rule, and deployment without merging."""

import copy

import numpy as np
import pytest
import torch

from yolov6_build.model.layers import LinearAddBlock, RealVGGBlock, RepVGGBlock
from yolov6_build.model.yolo import ModelSpec, build_model, fuse_for_deploy
from yolov6_build.train.repopt import (RepOptSGD, extract_scales, gradient_multiplier, initialize_from_scales,
                                       repopt_optimizer)


@pytest.fixture(scope="module")
def scales():
    torch.manual_seed(0)
    hs = build_model(ModelSpec("n", 8, training_mode="hyper_search"))
    for m in hs.modules():
        if isinstance(m, LinearAddBlock):  # as if learned: distinct per channel
            for p in (m.scale_conv, m.scale_1x1, m.scale_identity):
                if p is not None:
                    p.data.uniform_(0.2, 1.5)
    return extract_scales(hs)


def test_modes_swap_only_the_3x3_block():
    counts = {mode: {cls: sum(isinstance(m, cls) for m in build_model(ModelSpec("n", 8, training_mode=mode)).modules())
                     for cls in (RepVGGBlock, RealVGGBlock, LinearAddBlock)} for mode in ("repvgg", "repopt", "hyper_search")}
    n = counts["repvgg"][RepVGGBlock]
    assert n > 20 and counts["repopt"][RealVGGBlock] == n and counts["hyper_search"][LinearAddBlock] == n


def test_repopt_update_differs_from_sgd_exactly_by_the_scale_rule(scales):
    torch.manual_seed(1)
    model = build_model(ModelSpec("n", 8, training_mode="repopt")).train()
    initialize_from_scales(model, scales)
    reference = copy.deepcopy(model)
    options = dict(lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)
    repopt = repopt_optimizer(model, scales, model.parameters(), **options)
    sgd = torch.optim.SGD(reference.parameters(), **options)
    images = torch.rand(2, 3, 64, 64)
    for _ in range(2):  # two steps: momentum buffers follow the scaled gradients too
        for net, opt in ((model, repopt), (reference, sgd)):
            opt.zero_grad()
            sum(o.square().mean() for o in net.detect.raw_outputs(net.neck_features(images)).values()
                if isinstance(o, torch.Tensor) and o.is_floating_point()).backward()
        masks = {name: gradient_multiplier(block, *scales[name][:2]) for name, block in reference.named_modules()
                 if isinstance(block, RealVGGBlock)}
        for name, block in reference.named_modules():
            if name in masks:
                block.block.conv.weight.grad.mul_(masks[name])  # the rule, applied by hand
        repopt.step()
        sgd.step()
    for (name, a), (_, b) in zip(model.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    block = next(m for m in model.modules() if isinstance(m, RealVGGBlock))
    mask = repopt.multipliers[block.block.conv.weight]
    assert not torch.allclose(mask, torch.ones_like(mask))  # the rule is not the identity


def test_multiplier_and_initialisation_follow_the_branch_algebra(scales):
    model = build_model(ModelSpec("n", 8, training_mode="repopt"))
    initialize_from_scales(model, scales, seed=3)
    name, block = next((n, m) for n, m in model.named_modules() if isinstance(m, RealVGGBlock) and m.has_identity)
    s3, s1, s0 = scales[name]
    mask = gradient_multiplier(block, s3, s1)
    np.testing.assert_allclose(mask[:, :, 0, 0], (s3**2)[:, None].expand(-1, mask.shape[1]), rtol=1e-6)
    np.testing.assert_allclose(mask[:, :, 1, 1], (s3**2 + s1**2)[:, None].expand(-1, mask.shape[1]), rtol=1e-6)
    # initialisation: replay the same draws (W3 then W1, block by block) and build s3*W3 + s1*W1 + s0*I
    generator = torch.Generator().manual_seed(3)
    for other_name, other in model.named_modules():
        if not isinstance(other, RealVGGBlock):
            continue
        out_c, in_c = other.block.conv.weight.shape[:2]
        bound3, bound1 = 1 / (in_c * 9) ** 0.5, 1 / in_c ** 0.5
        w3 = (torch.rand((out_c, in_c, 3, 3), generator=generator) * 2 - 1) * bound3
        w1 = (torch.rand((out_c, in_c, 1, 1), generator=generator) * 2 - 1) * bound1
        if other_name == name:
            break
    expected = s3.view(-1, 1, 1, 1) * w3
    expected[:, :, 1, 1] += s1.view(-1, 1) * w1[:, :, 0, 0]
    expected[torch.arange(out_c), torch.arange(out_c), 1, 1] += s0
    torch.testing.assert_close(block.block.conv.weight.detach(), expected)


def test_repopt_model_deploys_without_reparameterisation(tmp_path):
    import onnxruntime as ort

    from yolov6_build.export.onnx import export_onnx

    torch.manual_seed(2)
    model = build_model(ModelSpec("n", 8, training_mode="repopt"))
    convs = lambda m: sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())  # noqa: E731
    before = convs(model)
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        eager = model(x)
        fuse_for_deploy(model)  # only folds BN: no branch is merged, no conv appears or disappears
        assert convs(model) == before and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        torch.testing.assert_close(model(x), eager, rtol=1e-4, atol=1e-3)
    path = export_onnx(model, tmp_path / "repopt.onnx", (320, 320))
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(out, eager.numpy(), rtol=1e-3, atol=1e-2)


def test_adam_is_refused_for_repopt():
    from yolov6_build.errors import ConfigError
    from yolov6_build.train.loop import TrainConfig

    with pytest.raises(ConfigError, match="sgd"):
        TrainConfig("a.json", "b.json", "out", training_mode="repopt", optimizer="adamw", repopt_scales="hs.pt")
    assert isinstance(RepOptSGD([torch.nn.Parameter(torch.ones(1))], {}, lr=0.1), torch.optim.SGD)


def test_weight_stats_see_the_outliers_a_merged_identity_makes():
    from yolov6_build.reports.repopt import _int8_snr_db, weight_stats

    torch.manual_seed(4)
    merged = {r["layer"]: r for r in weight_stats(fuse_for_deploy(build_model(ModelSpec("n", 8))))}
    plain = {r["layer"]: r for r in weight_stats(fuse_for_deploy(build_model(ModelSpec("n", 8, training_mode="repopt"))))}
    assert len(merged) == len(plain) > 20
    ratio = lambda rows: np.median([r["max_over_std"] for r in rows.values()])  # noqa: E731
    assert ratio(merged) > 2 * ratio(plain)  # identity 1s on the centre diagonal vs Kaiming-only kernels
    w = np.random.default_rng(0).normal(size=(8, 4, 3, 3)) * np.arange(1, 9)[:, None, None, None]
    assert _int8_snr_db(w, (1, 2, 3)) > _int8_snr_db(w, None) > 20


def test_repopt_model_takes_the_same_int8_path(tmp_path):
    """PTQ (tied scales, residual adds of m included), a clean Q/DQ lint, and the ORT INT8 artifact."""
    from yolov6_build.export.lint import lint_qdq
    from yolov6_build.export.onnx import export_onnx
    from yolov6_build.quantize.merge import share_scales
    from yolov6_build.quantize.ort_int8 import conv_count, quantize_for_ort
    from yolov6_build.quantize.ptq import PtqConfig, quantize_ptq

    torch.manual_seed(3)
    model = fuse_for_deploy(build_model(ModelSpec("m", 8, training_mode="repopt")))
    hw, cfg = (64, 64), PtqConfig("percentile")
    batches = [np.random.default_rng(3).random((2, 3, *hw), dtype=np.float32)]
    quant = quantize_ptq(model, batches, cfg, progress=False)
    assert share_scales(quant, "tie", cfg, hw)
    assert lint_qdq(export_onnx(quant, tmp_path / "qdq.onnx", hw)) == []
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", hw)
    quantized, float_convs = conv_count(quantize_for_ort(fp32, tmp_path / "int8.onnx", batches))
    assert quantized > 100 and float_convs == 0


def test_branch_scales_get_their_own_learning_rate_and_no_decay():
    from yolov6_build.train.loop import _param_groups

    model = build_model(ModelSpec("n", 8, training_mode="hyper_search"))
    groups = _param_groups(model, weight_decay=5e-4, scale_lr_mult=30.0)
    scales = [p for m in model.modules() if isinstance(m, LinearAddBlock)
              for n, p in m.named_parameters(recurse=False) if n.startswith("scale_")]
    assert {id(p) for p in groups[-1]["params"]} == {id(p) for p in scales}
    assert groups[-1]["lr_mult"] == 30.0 and groups[-1]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    assert len(_param_groups(build_model(ModelSpec("n", 8)), 5e-4)) == 2  # RepVGG: no scale group


def test_report_tabulates_the_ptq_drop_of_every_calibrator():
    from yolov6_build.reports.repopt import markdown

    weights = {"max_over_std": 5.0, "snr_tensor_db": 30.0, "snr_channel_db": 35.0}

    def model(fp32, by_calibrator):
        return {"fp32": fp32, "ptq": by_calibrator["max"], "ptq_drop_points": round(100 * (by_calibrator["max"] - fp32), 2),
                "ort_int8": fp32, "ort_drop_points": 0.0, "weights": weights, "ptq_by_calibrator": by_calibrator,
                "drop_by_calibrator": {c: round(100 * (v - fp32), 2) for c, v in by_calibrator.items()}}

    text = markdown({"val_images": 300, "models": {
        "RepVGG": model(0.70, {"max": 0.69, "mse": 0.695}), "QARepVGG": model(0.70, {"max": 0.699, "mse": 0.70})}})
    assert "| model | max | mse |" in text
    assert "| RepVGG | -1.00 | -0.50 |" in text and "| QARepVGG | -0.10 | +0.00 |" in text
