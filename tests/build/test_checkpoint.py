"""Checkpoint loading: release pickles without upstream code, state dicts, project format, bad files."""

import io
import os
import pickle
import zipfile

import pytest
import torch

from yolov6_build.errors import CheckpointError, UnsafePickleError
from yolov6_build.model.checkpoint import load_checkpoint, save_checkpoint
from yolov6_build.model.yolo import ModelSpec, build_model, fuse_for_deploy


def test_release_file_loads_without_upstream(ref_dir, ref_n):
    model, info = load_checkpoint(ref_dir / "ckpt_n_release_format.pt")
    assert (info.size, info.num_classes, info.head, info.deploy, info.source_format) == ("n", 80, "plain", False,
                                                                                          "release")
    loaded = model.state_dict()
    for key, value in ref_n["weights_train_structure"].items():
        assert torch.equal(loaded[key], value.half().float()), key
    expected = torch.load(ref_dir / "ckpt_n_release_format_out.pt", weights_only=True)["output_eager_from_fp16_weights"]
    with torch.no_grad():
        out = model(ref_n["input"])
    torch.testing.assert_close(out[..., 5:], expected[..., 5:], atol=1e-3, rtol=0)
    assert (out[..., :4] - expected[..., :4]).abs().max() <= 1e-4 * expected[..., :4].abs().max()


def test_plain_and_wrapped_state_dicts_load(tmp_path, ref_model_n):
    sd = ref_model_n.state_dict()
    torch.save(sd, tmp_path / "plain.pt")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("plain.pt", "wrapped.pt"):
        model, info = load_checkpoint(tmp_path / name)
        assert info.source_format == "state_dict" and info.size == "n"
        assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_project_format_round_trip_with_metadata(tmp_path):
    model = build_model(ModelSpec("n", num_classes=3))
    names = ["circle", "square", "star"]
    save_checkpoint(model, tmp_path / "demo.pt", class_names=names, input_hw=(320, 320), note="test")
    loaded, info = load_checkpoint(tmp_path / "demo.pt")
    assert (info.num_classes, info.class_names, info.input_hw, info.source_format) == (3, names, (320, 320),
                                                                                        "project")
    assert info.extra == {"note": "test"}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.half().to(value.dtype) if value.is_floating_point()
                           else value)


def test_deploy_state_dict_loads_into_fused_model(tmp_path, ref_model_n):
    import copy

    fused = fuse_for_deploy(copy.deepcopy(ref_model_n))
    save_checkpoint(fused, tmp_path / "deploy.pt", half=False)
    model, info = load_checkpoint(tmp_path / "deploy.pt")
    assert info.deploy and model.is_deploy
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fused(x))


def test_distill_head_and_size_are_inferred(tmp_path):
    torch.save(build_model(ModelSpec("s", 80, "distill")).state_dict(), tmp_path / "s.pt")
    _, info = load_checkpoint(tmp_path / "s.pt")
    assert (info.size, info.head) == ("s", "distill")


def test_class_count_and_size_mismatch_are_reported(ref_dir):
    with pytest.raises(CheckpointError, match="has 80 classes, but 3 were asked"):
        load_checkpoint(ref_dir / "ckpt_n_release_format.pt", num_classes=3)
    with pytest.raises(CheckpointError, match="not the requested YOLOv6-s"):
        load_checkpoint(ref_dir / "ckpt_n_release_format.pt", size="s")


def test_not_a_yolov6_checkpoint(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a YOLOv6"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a torch.save zip"):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_truncated_release_file(tmp_path, ref_dir):
    data = (ref_dir / "ckpt_n_release_format.pt").read_bytes()
    for fraction in (0.5, 0.999):
        path = tmp_path / f"cut{fraction}.pt"
        path.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(CheckpointError):
            load_checkpoint(path)


def test_layout_mismatch_names_the_keys(tmp_path, ref_model_n):
    sd = dict(ref_model_n.state_dict())
    sd.pop("neck.Rep_p3.conv1.rbr_dense.conv.weight")
    torch.save(sd, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="1 missing .*Rep_p3"):
        load_checkpoint(tmp_path / "broken.pt")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip_with_pickle(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ckpt/data.pkl", payload)
        archive.writestr("ckpt/version", "3\n")


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    _zip_with_pickle(tmp_path / "evil.pt", pickle.dumps({"model": _Evil(marker)}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match="posix.system|os.system|not allowed"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_module_class_outside_allow_list_is_refused(tmp_path):
    # a pickled class from an arbitrary package, shaped like a module, is still refused
    payload = io.BytesIO()
    payload.write(b"\x80\x02cevil.package\nModel\nq\x00)\x81q\x01.")
    _zip_with_pickle(tmp_path / "evil2.pt", payload.getvalue())
    with pytest.raises(UnsafePickleError, match="evil.package.Model"):
        load_checkpoint(tmp_path / "evil2.pt")
