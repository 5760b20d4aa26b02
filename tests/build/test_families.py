"""Model families against upstream YOLOv6's own code: the same state-dict keys and shapes, the same eval
outputs before and after deploy fusion (references made by tests/upstream/make_refs.py from upstream's
sources, with weights both sides derive from the key names)."""

import json

import numpy as np
import pytest
import torch

from tests.upstream.make_refs import CONFIGS, NUM_CLASSES, REFS, reference_input
from tests.upstream.weights import fill
from yolov6_build.model.yolo import ModelSpec, build_model, fuse_for_deploy


def _filled_model(size: str, training_mode: str = "repvgg"):
    """A model of ``size`` in eval mode with the key-derived weights the references use."""
    model = build_model(ModelSpec(size, NUM_CLASSES, training_mode=training_mode))
    fill(model)
    return model.eval()


def _reference(name):
    ref = np.load(REFS / f"{name}.npz")
    return ref["output_eager"], ref["output_fused"], json.loads(str(ref["meta"]))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_family_matches_upstream_unfused_and_fused(name):
    eager, fused, meta = _reference(name)
    model = _filled_model(**CONFIGS[name][1])
    assert sorted([k, list(v.shape)] for k, v in model.state_dict().items()) == sorted(meta["train_keys"])
    x = torch.from_numpy(reference_input())
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), eager, rtol=1e-4, atol=1e-4)
        fuse_for_deploy(model)
        np.testing.assert_allclose(model(x).numpy(), fused, rtol=1e-4, atol=1e-4)


def test_qarepvgg_weights_load_as_qarepvgg_and_compute_the_same(tmp_path):
    """A plain state dict (no metadata): the block family is read from the weights."""
    from yolov6_build.model.checkpoint import load_checkpoint

    model = _filled_model("n", "qarepvggv2")
    torch.save({"model": model.state_dict()}, tmp_path / "qa.pt")
    loaded, info = load_checkpoint(tmp_path / "qa.pt")
    assert info.training_mode == "qarepvggv2" and info.size == "n" and not info.deploy
    x = torch.from_numpy(reference_input())
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)


def test_upstream_deploy_form_with_kept_batchnorms_loads(tmp_path):
    """Upstream's deploy QARepVGG keeps each block's BN beside the merged conv; it is folded on load."""
    from yolov6_build.model.checkpoint import load_checkpoint
    from yolov6_build.model.layers import QARepVGGBlockV2

    model = _filled_model("n", "qarepvggv2")
    x = torch.from_numpy(reference_input())
    with torch.no_grad():
        expected = model(x).numpy()
        kept = {name: (module.merged_branches(), {k: v.clone() for k, v in module.bn.state_dict().items()})
                for name, module in model.named_modules() if isinstance(module, QARepVGGBlockV2)}
        state = dict(fuse_for_deploy(model).state_dict())
    for name, ((kernel, bias), bn) in kept.items():
        state[f"{name}.rbr_reparam.weight"], state[f"{name}.rbr_reparam.bias"] = kernel, bias
        state.update({f"{name}.bn.{k}": v for k, v in bn.items()})
    torch.save(state, tmp_path / "qa_deploy.pt")
    loaded, info = load_checkpoint(tmp_path / "qa_deploy.pt")
    assert info.deploy
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", ["n6", "l6"])
def test_p6_weights_load_as_p6_at_1280(size, tmp_path):
    """n6 shares n's stem width: the stride-64 stage tells them apart. Upstream runs P6 models at 1280."""
    from yolov6_build.model.checkpoint import load_checkpoint

    model = _filled_model(size)
    torch.save(model.state_dict(), tmp_path / "p6.pt")
    loaded, info = load_checkpoint(tmp_path / "p6.pt")
    assert (info.size, info.input_hw) == (size, (1280, 1280)) and loaded.detect.strides == (8, 16, 32, 64)


@pytest.mark.parametrize("size", ["s_mbla", "l_mbla", "x_mbla"])
def test_mbla_weights_load_as_mbla(size, tmp_path):
    """l, l_mbla and x_mbla share a 64-channel SiLU stem; s_mbla shares s's width: the stages decide."""
    from yolov6_build.model.checkpoint import load_checkpoint

    model = _filled_model(size)
    torch.save(model.state_dict(), tmp_path / "mbla.pt")
    loaded, info = load_checkpoint(tmp_path / "mbla.pt")
    assert info.size == size
    x = torch.from_numpy(reference_input())
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)
        torch.save(fuse_for_deploy(model).state_dict(), tmp_path / "mbla_deploy.pt")
        fused, info = load_checkpoint(tmp_path / "mbla_deploy.pt")
        assert (info.size, info.deploy) == (size, True)
        np.testing.assert_allclose(fused(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_release_format_file_of_each_family_loads(name, tmp_path):
    """The pickled module in fp16 under model/ema, as upstream releases are saved: family, size and weights
    come back from the file alone."""
    from tests.upstream.release_file import save_release_format
    from yolov6_build.model.checkpoint import load_checkpoint

    spec = ModelSpec(num_classes=NUM_CLASSES, **CONFIGS[name][1])
    model = _filled_model(spec.size, spec.training_mode)
    loaded, info = load_checkpoint(save_release_format(model, tmp_path / f"{name}.pt"))
    assert (info.size, info.training_mode, info.source_format) == (spec.size, spec.training_mode, "release")
    x = torch.from_numpy(reference_input())
    with torch.no_grad():
        expected = model.half().float()(x).numpy()  # the fp16-rounded weights the file holds
        np.testing.assert_allclose(loaded(x).numpy(), expected, rtol=1e-4, atol=1e-3)


def test_upstream_deploy_form_of_lite_with_unfolded_depthwise_blocks_loads(tmp_path):
    """Upstream's deploy conversion folds ConvModules only: its Lite files keep each DPBlock's two BNs."""
    from yolov6_build.model.checkpoint import load_checkpoint
    from yolov6_build.model.layers import ConvModule

    model = _filled_model("lite_s")
    x = torch.from_numpy(reference_input())
    with torch.no_grad():
        expected = model(x).numpy()
        for module in model.modules():
            if isinstance(module, ConvModule):
                module.fuse()
    state = model.state_dict()
    assert any(".bn_1." in k for k in state) and not any(".block.bn." in k for k in state)
    torch.save(state, tmp_path / "lite_deploy.pt")
    loaded, info = load_checkpoint(tmp_path / "lite_deploy.pt")
    assert (info.size, info.deploy) == ("lite_s", True)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), expected, rtol=1e-4, atol=1e-4)
