"""The training loop: SGD with warm-up and cosine schedule, EMA, periodic val mAP, resumable."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    train_annotations: str
    val_annotations: str
    out_dir: str
    size: str = "n"
    input_hw: tuple[int, int] = (320, 320)
    epochs: int = 30
    batch_size: int = 16
    optimizer: str = "sgd"  # 'sgd' (upstream's) or 'adamw' (faster start for short CPU schedules)
    lr: float = 0.02
    final_lr_fraction: float = 0.05
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_iters: int = 300
    ema_decay: float = 0.9995
    eval_every: int = 5  # epochs; the last epoch is always evaluated
    eval_limit: int | None = None
    workers: int = 1
    seed: int = 0
    max_iters: int | None = None  # stop early (tests, smoke runs)
    init_checkpoint: str | None = None  # start from these weights instead of scratch
    training_mode: str = "repvgg"  # or 'hyper_search' / 'repopt' (train/repopt.py)
    repopt_scales: str | None = None  # hyper-search checkpoint, for training_mode 'repopt'
    scale_lr_mult: float = 1.0  # hyper_search: lr multiplier of the branch scales (a short search moves them little)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.training_mode == "repopt" and (self.optimizer != "sgd" or not self.repopt_scales):
            raise ConfigError("RepOpt training needs --optimizer sgd (Adam cancels the gradient scaling) and "
                              "--scales from a hyper-search run")


class ModelEMA:
    """Exponential moving average of weights, with upstream's ramp-up of the decay."""

    def __init__(self, model, decay: float, updates: int = 0):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, updates

    def update(self, model) -> None:
        import torch

        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 2000))
        with torch.no_grad():
            source = model.state_dict()
            for name, value in self.module.state_dict().items():
                if value.dtype.is_floating_point:
                    value.mul_(d).add_(source[name].detach(), alpha=1 - d)
                else:
                    value.copy_(source[name])


def _param_groups(model, weight_decay: float, scale_lr_mult: float = 1.0):
    """Weights with decay; biases and norms without; RepOpt branch scales without, at their own lr."""
    from ..model.layers import LinearAddBlock

    scales = {id(p) for m in model.modules() if isinstance(m, LinearAddBlock)
              for n, p in m.named_parameters(recurse=False) if n.startswith("scale_")}
    decay, no_decay, branch_scales = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in scales:
            branch_scales.append(param)
        else:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if branch_scales:
        groups.append({"params": branch_scales, "weight_decay": 0.0, "lr_mult": scale_lr_mult})
    return groups


def _lr_at(cfg: TrainConfig, iteration: int, total: int) -> float:
    cosine = cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * iteration / total))
    warm = min(1.0, (iteration + 1) / max(1, cfg.warmup_iters))
    return cfg.lr * cosine * warm


def train(cfg: TrainConfig) -> Path:
    """Train and write ``out_dir/last.pt`` (resumable), ``best.pt`` and ``model.pt`` (project format, EMA, fp16)."""
    import torch
    from ..progress import progress as progress_bar

    from ..data import CocoDataset, TrainDataset, collate
    from ..evaluate import EvalSettings, evaluate, torch_runner
    from ..model.checkpoint import load_checkpoint, save_checkpoint
    from ..model.yolo import ModelSpec, build_model
    from .loss import DetectionLoss

    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_set = CocoDataset(cfg.train_annotations)
    val_set = CocoDataset(cfg.val_annotations)
    if cfg.init_checkpoint:
        model, _ = load_checkpoint(cfg.init_checkpoint, num_classes=train_set.num_classes)
    else:
        model = build_model(ModelSpec(cfg.size, train_set.num_classes, training_mode=cfg.training_mode))
    model.train()
    if cfg.training_mode == "repopt":
        from .repopt import initialize_from_scales, repopt_optimizer, scales_from_checkpoint

        scales = scales_from_checkpoint(cfg.repopt_scales)
        initialize_from_scales(model, scales, cfg.seed)
    ema = ModelEMA(model, cfg.ema_decay)
    groups = _param_groups(model, cfg.weight_decay, cfg.scale_lr_mult)
    if cfg.training_mode == "repopt":
        optimizer = repopt_optimizer(model, scales, groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    else:
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    criterion = DetectionLoss(model.detect)
    dataset = TrainDataset(train_set, cfg.input_hw, augment=True, seed=cfg.seed)
    start_epoch, best, history = 0, -1.0, []
    resume_path = out / "last.pt"
    if resume_path.is_file():
        state = torch.load(resume_path, weights_only=True)
        model.load_state_dict(state["model"])
        ema.module.load_state_dict(state["ema"])
        ema.updates = state["ema_updates"]
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        log.info("resumed from %s at epoch %d", resume_path, start_epoch)

    steps_per_epoch = math.ceil(len(dataset) / cfg.batch_size)
    total_iters = cfg.epochs * steps_per_epoch
    iteration = start_epoch * steps_per_epoch
    started = time.monotonic()
    for epoch in range(start_epoch, cfg.epochs):
        dataset.epoch = epoch
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate,
                                             num_workers=cfg.workers, drop_last=False,
                                             generator=torch.Generator().manual_seed(cfg.seed + epoch))
        model.train()
        bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
        running = {}
        for images, targets, mask in bar:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(cfg, iteration, total_iters) * group.get("lr_mult", 1.0)
            loss, parts = criterion(model(images), targets, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            ema.update(model)
            iteration += 1
            running = {k: 0.9 * running.get(k, float(v)) + 0.1 * float(v) for k, v in
                       {"loss": loss.detach(), **parts}.items()}
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()}, refresh=False)
            if cfg.max_iters and iteration >= cfg.max_iters:
                break
        last_epoch = epoch == cfg.epochs - 1 or bool(cfg.max_iters and iteration >= cfg.max_iters)
        record = {"epoch": epoch + 1, "iteration": iteration, **{k: round(v, 4) for k, v in running.items()},
                  "minutes": round((time.monotonic() - started) / 60, 1)}
        if (epoch + 1) % cfg.eval_every == 0 or last_epoch:
            metrics = evaluate(torch_runner(ema.module), val_set, cfg.input_hw, EvalSettings(limit=cfg.eval_limit),
                               progress=False)
            record.update(val_map50_95=round(metrics["map50_95"], 4), val_map50=round(metrics["map50"], 4))
            if metrics["map50_95"] > best:
                best = metrics["map50_95"]
                save_checkpoint(ema.module, out / "best.pt", train_set.class_names, cfg.input_hw,
                                val_map50_95=best, epoch=epoch + 1)
        history.append(record)
        log.info("epoch %s", json.dumps(record))
        torch.save({"model": model.state_dict(), "ema": ema.module.state_dict(), "ema_updates": ema.updates,
                    "optimizer": optimizer.state_dict(), "epoch": epoch, "best": best, "history": history,
                    "config": asdict(cfg)}, resume_path)
        if last_epoch:
            break
    final = save_checkpoint(ema.module, out / "model.pt", train_set.class_names, cfg.input_hw,
                            history=history, train_config=asdict(cfg))
    (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    return final
