"""The PyTorch YOLOv6 against upstream's manifests and reference outputs."""

import copy
import json

import pytest
import torch

from yolov6_build.model.registry import VARIANTS
from yolov6_build.model.yolo import ModelSpec, build_model, fuse_for_deploy

MANIFESTS = {"n": ("n", "plain"), "s": ("s", "plain"), "m": ("m", "plain"), "l": ("l", "plain"),
             "n_distill": ("n", "distill"), "s_distill": ("s", "distill")}


def _layout(state_dict):
    return [(k, list(v.shape)) for k, v in state_dict.items()]


@pytest.mark.parametrize("manifest", list(MANIFESTS))
def test_state_dict_layout_matches_upstream(ref_dir, manifest):
    size, head = MANIFESTS[manifest]
    expected = json.loads((ref_dir / f"manifest_{manifest}.json").read_text())
    model = build_model(ModelSpec(size, 80, head))
    assert _layout(model.state_dict()) == [(e["key"], e["shape"]) for e in expected["state_dict_train_structure"]]
    assert list(VARIANTS[size].repeats) == expected["config"]["effective_num_repeats(backbone5+neck4)"]
    assert list(VARIANTS[size].channels) == expected["config"]["effective_channels(backbone5+neck6)"]

    fuse_for_deploy(model)
    assert _layout(model.state_dict()) == [(e["key"], e["shape"]) for e in expected["state_dict_deploy"]]
    assert sum(p.numel() for p in model.parameters()) == expected["num_params_deploy"]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 96))
    assert list(out.shape) == [1, (8 * 12 + 4 * 6 + 2 * 3), 85]


def test_eager_outputs_match_upstream(ref_model_n, ref_n):
    with torch.no_grad():
        out = ref_model_n(ref_n["input"])
        feats = ref_model_n.neck_features(ref_n["input"])
        raw = ref_model_n.detect.raw_outputs(copy.deepcopy(feats))
    expected = ref_n["output_eager"]
    assert out.shape == expected.shape == (1, 2100, 85)
    torch.testing.assert_close(out[..., 5:], expected[..., 5:], atol=1e-3, rtol=0)
    assert (out[..., :4] - expected[..., :4]).abs().max() <= 1e-4 * expected[..., :4].abs().max()
    assert torch.equal(out[..., 4], torch.ones_like(out[..., 4]))
    for got, want in zip(feats, ref_n["neck_featmaps_eager"]):
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    # raw head outputs, level by level: logits (B, N, nc) and ltrb (B, N, 4)
    start = 0
    for level in range(3):
        logits = ref_n[f"raw_cls_logits_p{level}"]
        n = logits.shape[2] * logits.shape[3]
        torch.testing.assert_close(raw["cls_logits"][:, start:start + n], logits.flatten(2).permute(0, 2, 1),
                                   atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(raw["reg_dist"][:, start:start + n],
                                   ref_n[f"raw_reg_ltrb_p{level}"].flatten(2).permute(0, 2, 1), atol=1e-3, rtol=1e-4)
        start += n


def test_fused_model_matches_upstream_fusion(ref_model_n, ref_n):
    model = fuse_for_deploy(copy.deepcopy(ref_model_n))
    assert model.is_deploy
    fused = model.state_dict()
    for key, want in ref_n["weights_deploy_subset"].items():
        torch.testing.assert_close(fused[key], want, atol=1e-5, rtol=1e-4, msg=key)
    assert len(ref_n["weights_deploy_subset"]) == 46
    with torch.no_grad():
        out = model(ref_n["input"])
        feats = model.neck_features(ref_n["input"])
    expected = ref_n["output_fused"]
    torch.testing.assert_close(out[..., 5:], expected[..., 5:], atol=1e-3, rtol=0)
    assert (out[..., :4] - expected[..., :4]).abs().max() <= 1e-4 * expected[..., :4].abs().max()
    for got, want in zip(feats, ref_n["neck_featmaps_fused"]):
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_fusion_is_idempotent(model_n):
    model = fuse_for_deploy(copy.deepcopy(model_n))
    once = {k: v.clone() for k, v in model.state_dict().items()}
    fuse_for_deploy(model)
    twice = model.state_dict()
    assert once.keys() == twice.keys()
    assert all(torch.equal(once[k], twice[k]) for k in once)


def test_dfl_head_decodes_expected_distance():
    """m/l (DFL): a one-hot bin distribution must decode to that bin's distance."""
    model = build_model(ModelSpec("m", num_classes=3))
    head = model.detect
    reg = torch.full((1, 2, 4 * 17), -50.0)
    for side, bin_index in enumerate([0, 3, 7, 16]):
        reg[0, :, side * 17 + bin_index] = 50.0
    assert torch.allclose(head.distances(reg), torch.tensor([0.0, 3.0, 7.0, 16.0]).expand(1, 2, 4), atol=1e-4)


def test_custom_class_count_and_distill_head_inference():
    model = build_model(ModelSpec("s", num_classes=7, head="distill"))
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 84, 12)


def test_invalid_spec_is_rejected():
    from yolov6_build.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown YOLOv6 size"):
        ModelSpec("x")
    with pytest.raises(ConfigError):
        ModelSpec("n", num_classes=0)
