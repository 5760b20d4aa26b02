"""Load YOLOv6 checkpoints (official releases, plain state dicts, this project's format) safely.

Size, class count and head variant are inferred from the weights; a deploy-form (fused) state dict
loads into a fused model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from pathlib import Path

from ..errors import CheckpointError
from .layers import BN_EPS, fold_bn
from .registry import VARIANTS
from .safe_pickle import PickledModule, load_torch_zip, module_state_dict

log = logging.getLogger(__name__)

PROJECT_FORMAT = "yolov6_build.checkpoint"
PROJECT_FORMAT_VERSION = 1
_META_FIELDS = ("size", "num_classes", "head", "class_names", "input_hw", "training_mode")


@dataclass
class CheckpointInfo:
    """What a checkpoint holds besides the weights."""

    size: str
    num_classes: int
    head: str
    deploy: bool  # weights are already fused (rbr_reparam, no BatchNorm)
    source_format: str  # 'release' | 'state_dict' | 'project'
    class_names: list[str] = field(default_factory=list)
    input_hw: tuple[int, int] = (640, 640)
    training_mode: str = "repvgg"
    extra: dict = field(default_factory=dict)


def extract_state_dict(obj) -> tuple[dict, str, dict]:
    """Find the weights in an unpickled checkpoint. Returns (state_dict, source_format, metadata)."""
    if isinstance(obj, dict) and obj.get("format") == PROJECT_FORMAT:
        return obj["state_dict"], "project", obj.get("meta", {})
    if isinstance(obj, dict):
        for key in ("ema", "model"):  # upstream: EMA weights when present, else the model
            if isinstance(obj.get(key), PickledModule):
                return module_state_dict(obj[key]), "release", {}
        for key in ("state_dict", "model", "ema"):
            if _looks_like_state_dict(obj.get(key)):
                return obj[key], "state_dict", {}
        if _looks_like_state_dict(obj):
            return obj, "state_dict", {}
    if isinstance(obj, PickledModule):
        return module_state_dict(obj), "release", {}
    raise CheckpointError("not a YOLOv6 checkpoint: no model, EMA model or state dict found inside")


def _looks_like_state_dict(obj) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def infer_architecture(state_dict: dict) -> tuple[str, int, str, bool]:
    """(size, num_classes, head, deploy) from key names and tensor shapes."""
    cls_key = "detect.cls_preds.0.weight"
    if cls_key not in state_dict:
        raise CheckpointError(f"not a YOLOv6 v3.0 checkpoint: {cls_key!r} is missing "
                              f"(first keys: {', '.join(list(state_dict)[:3])})")
    num_classes = int(state_dict[cls_key].shape[0])
    head = "distill" if "detect.reg_preds_dist.0.weight" in state_dict else "plain"
    deploy = any("rbr_reparam" in k for k in state_dict) or not any(".bn." in k or "rbr_identity" in k
                                                                     for k in state_dict)
    stem_channels = _stem_channels(state_dict)
    p6 = any(k.startswith("backbone.ERBlock_6.") for k in state_dict)  # the stride-64 stage
    candidates = [name for name, variant in VARIANTS.items()
                  if variant.p6 == p6 and variant.stem_channels == stem_channels]
    if len(candidates) > 1:  # e.g. l, l_mbla and x_mbla share a stem: the stages' keys and shapes tell them apart
        layout = {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
        candidates = [name for name in candidates
                      if _layout_of(name, num_classes, head, deploy, state_dict) == layout] or candidates[:1]
    if candidates:
        return candidates[0], num_classes, head, deploy
    family = "P6 " if p6 else ""
    raise CheckpointError(f"not a YOLOv6 v3.0 {family}n/s/m/l (or MBLA) checkpoint: stem has {stem_channels} "
                          "channels")


def _layout_of(size: str, num_classes: int, head: str, deploy: bool, state_dict: dict) -> dict:
    """The state-dict keys and shapes a model of ``size`` has (built on the meta device: no memory, no weights)."""
    import torch

    from .yolo import ModelSpec, build_model, fuse_for_deploy

    with torch.device("meta"):
        model = build_model(ModelSpec(size, num_classes, head, infer_training_mode(state_dict)))
        if deploy:
            fuse_for_deploy(model)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def infer_training_mode(state_dict: dict) -> str:
    """Which 3x3 block family the weights were trained with: RepVGG's branches each carry a BatchNorm;
    QARepVGG's 1x1 is a bare conv under one trailing BatchNorm (its first version differs from v2 only
    by a parameter-free average pool: such files load as v2); RepOpt's stages are RepBlocks of one conv-BN
    each (``block.conv``, the key a SiLU conv has too, but those sizes stack CSP stages); the hyper-search
    block is a bare conv with branch scales."""
    stem = "backbone.stem."
    if f"{stem}rbr_1x1.weight" in state_dict or f"{stem}bn.weight" in state_dict:
        return "qarepvggv2"
    if "backbone.ERBlock_2.1.conv1.block.conv.weight" in state_dict:
        return "repopt"
    if f"{stem}scale_conv" in state_dict:
        return "hyper_search"
    return "repvgg"


# (conv, BatchNorm) pairs upstream's deploy form leaves unfolded: QARepVGG keeps each block's trailing BN beside
# its merged conv; Lite's DPBlocks keep theirs (upstream's fuse_model folds ConvModules only)
KEPT_BATCHNORMS = (("rbr_reparam", "bn"), ("conv_dw_1", "bn_1"), ("conv_pw_1", "bn_2"))


def fold_kept_batchnorms(state_dict: dict) -> dict:
    """This project's deploy form has every BatchNorm folded: fold the ones upstream's deploy form keeps.
    A file whose ConvModules still have their BN (``block.bn``) is a training-form file: left as it is."""
    if any(".block.bn." in k or ".rbr_dense." in k for k in state_dict):
        return state_dict
    folded = dict(state_dict)
    for conv_name, bn_name in KEPT_BATCHNORMS:
        for key in [k for k in state_dict if k.endswith(f".{conv_name}.weight")]:
            conv, bn = key[: -len("weight")], f"{key[: -len(f'{conv_name}.weight')]}{bn_name}."
            if f"{bn}weight" not in state_dict:
                continue
            statistics = SimpleNamespace(eps=BN_EPS, **{name: folded.pop(f"{bn}{name}").float()
                                                        for name in ("weight", "bias", "running_mean", "running_var")})
            folded.pop(f"{bn}num_batches_tracked", None)
            bias = folded.get(f"{conv}bias")
            folded[key], folded[f"{conv}bias"] = fold_bn(folded[key].float(), None if bias is None else bias.float(),
                                                         statistics)
    return folded


def _stem_channels(state_dict: dict) -> int:
    for key in ("backbone.stem.rbr_dense.conv.weight", "backbone.stem.rbr_reparam.weight",
                "backbone.stem.block.conv.weight", "backbone.stem.conv.weight",  # hyper-search
                "backbone.conv_0.block.conv.weight"):  # Lite
        if key in state_dict:
            return int(state_dict[key].shape[0])
    raise CheckpointError("not a YOLOv6 v3.0 checkpoint: no backbone stem weights found")


def load_checkpoint(path: str | Path, num_classes: int | None = None, size: str | None = None):
    """Build the model a checkpoint describes and load its weights (float32, eval mode).

    Args:
        path: a release file, a torch-saved state dict, or a file written by ``save_checkpoint``.
        num_classes, size: optional expectations; a checkpoint that differs raises CheckpointError.

    Returns:
        (model, CheckpointInfo)
    """
    from .yolo import ModelSpec, build_model, fuse_for_deploy

    state_dict, source_format, meta = extract_state_dict(load_torch_zip(path))
    state_dict = fold_kept_batchnorms(state_dict)
    found_size, found_classes, head, deploy = infer_architecture(state_dict)
    training_mode = meta.get("training_mode") or infer_training_mode(state_dict)
    if size is not None and size != found_size:
        raise CheckpointError(f"{path} holds a YOLOv6-{found_size}, not the requested YOLOv6-{size}")
    if num_classes is not None and num_classes != found_classes:
        raise CheckpointError(f"{path} has {found_classes} classes, but {num_classes} were asked for "
                              "(pass the matching class names, or fine-tune a new head)")
    model = build_model(ModelSpec(found_size, found_classes, head, training_mode))
    if deploy:
        fuse_for_deploy(model)
    _load_weights(model, state_dict, path)
    info = CheckpointInfo(size=found_size, num_classes=found_classes, head=head, deploy=deploy,
                          source_format=source_format, class_names=list(meta.get("class_names", [])),
                          input_hw=tuple(meta.get("input_hw", (VARIANTS[found_size].input_size,) * 2)),
                          training_mode=training_mode,
                          extra={k: v for k, v in meta.items() if k not in _META_FIELDS})
    log.info("loaded YOLOv6-%s (%s, %d classes, %s head%s) from %s", found_size, training_mode, found_classes, head,
             ", deploy" if deploy else "", path)
    return model, info


def load_deploy_model(path: str | Path, num_classes: int | None = None, size: str | None = None):
    """``load_checkpoint`` followed by ``fuse_for_deploy``: the model every export and quantization starts from."""
    from .yolo import fuse_for_deploy

    model, info = load_checkpoint(path, num_classes, size)
    return fuse_for_deploy(model), info


def _load_weights(model, state_dict: dict, path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                   if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        problems = [f"{len(missing)} missing (e.g. {missing[:2]})" if missing else "",
                    f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})" if unexpected else "",
                    f"{len(wrong_shape)} with other shapes (e.g. {wrong_shape[:2]})" if wrong_shape else ""]
        raise CheckpointError(f"{path} does not match the YOLOv6 v3.0 layout: "
                              + "; ".join(p for p in problems if p))
    for key, target in expected.items():
        if key in state_dict:
            target.copy_(state_dict[key].to(target.dtype))


def save_checkpoint(model, path: str | Path, class_names: list[str] | None = None,
                    input_hw: tuple[int, int] = (640, 640), training_mode: str | None = None,
                    half: bool = True, **extra) -> Path:
    """Write weights plus metadata in the project's format (plain tensors and containers only)."""
    import torch

    spec = model.spec
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().clone()
             for k, v in model.state_dict().items()}
    meta = {"size": spec.size, "num_classes": spec.num_classes, "head": spec.head,
            "class_names": list(class_names or []), "input_hw": list(input_hw),
            "training_mode": training_mode or spec.training_mode, **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": PROJECT_FORMAT, "version": PROJECT_FORMAT_VERSION, "meta": meta, "state_dict": state},
               path)
    return path

