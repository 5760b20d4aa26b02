"""QAT: fine-tune the calibrated PTQ model with fake quantization, optionally distilling from FP32.

Starts from ``quantize_ptq`` + merged scales and keeps every quantizer's amax fixed (so tied scales
stay tied and the Q/DQ export is unchanged in structure); only weights and biases learn, through
the straight-through estimator of the fake quantizers. The loss is the detection loss plus
channel-wise distillation (CWD) from the FP32 model: for each channel, a softmax over spatial
positions (temperature tau) for teacher and student, and their KL divergence, on the three neck
outputs and optionally on the class logits (per class over anchors). Its weight decays to zero
over the run (cosine): distillation steers early, the task loss finishes.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..deps import require
from ..errors import ConfigError

log = logging.getLogger(__name__)

DISTILL_TARGETS = ("neck", "cls_logits")


@dataclass(frozen=True)
class QatConfig:
    train_annotations: str
    iterations: int = 150
    batch_size: int = 8
    lr: float = 1e-5  # 1e-4 drifted: QAT -1.19, QAT + CWD -0.67 points on the demo model
    weight_decay: float = 5e-4
    distill: tuple[str, ...] = ("neck",)  # any of DISTILL_TARGETS; () = plain QAT
    temperature: float = 1.0
    distill_weight: float = 1.0  # at the start; decays to 0 (cosine)
    seed: int = 0

    def __post_init__(self):
        unknown = set(self.distill) - set(DISTILL_TARGETS)
        if unknown:
            raise ConfigError(f"distill targets must be in {DISTILL_TARGETS}, got {sorted(unknown)}")
        if self.iterations < 1 or self.temperature <= 0:
            raise ConfigError("iterations must be >= 1 and temperature > 0")


def channel_wise_distillation(student, teacher, temperature: float = 1.0):
    """CWD for [B, C, *spatial] maps: mean over B*C of tau^2 * KL(softmax(T/tau) || softmax(S/tau)),
    softmax over the spatial positions of each channel. Zero iff the two maps match per channel
    up to a constant shift."""
    torch = require("torch")
    s = student.flatten(2) / temperature
    t = teacher.flatten(2) / temperature
    kl = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="sum")
    return kl * temperature**2 / (s.shape[0] * s.shape[1])


class DistillationLoss:
    """Sum of CWD terms over the chosen targets; ``features`` dicts hold 'neck' and 'cls_logits'."""

    def __init__(self, targets: tuple[str, ...], temperature: float):
        self.targets, self.temperature = targets, temperature

    def __call__(self, student: dict, teacher: dict):
        total = 0.0
        for target in self.targets:
            pairs = zip(student["neck"], teacher["neck"]) if target == "neck" else \
                [(student["cls_logits"].transpose(1, 2), teacher["cls_logits"].transpose(1, 2))]  # [B, nc, N]
            total = total + sum(channel_wise_distillation(s, t.detach(), self.temperature) for s, t in pairs)
        return total


def _features(model, images):
    """Raw head outputs (train mode) plus the neck maps the head read."""
    neck = model.neck_features(images)
    raw = model.detect.raw_outputs(neck)
    return raw, {"neck": neck, "cls_logits": raw["cls_logits"]}


def combined_loss(model, teacher, criterion, distill: DistillationLoss, batch, kd_weight: float):
    """(task + kd_weight * CWD, task, CWD) for one (images, targets, mask) batch."""
    torch = require("torch")
    images, targets, mask = batch
    raw, student = _features(model, images)
    task, _ = criterion(raw, targets, mask)
    loss_kd = torch.zeros(())
    if distill.targets:
        with torch.no_grad():
            _, teacher_features = _features(teacher, images)
        loss_kd = distill(student, teacher_features)
    return task + kd_weight * loss_kd, task, loss_kd


def distill_weight_at(cfg: QatConfig, iteration: int) -> float:
    return cfg.distill_weight * 0.5 * (1 + math.cos(math.pi * iteration / cfg.iterations))


def train_qat(quant_model, teacher, cfg: QatConfig, input_hw: tuple[int, int], progress: bool = True) -> list[dict]:
    """Fine-tune ``quant_model`` in place; returns the loss history (every 10 iterations)."""
    torch = require("torch")
    from ..progress import progress as progress_bar

    from ..data import CocoDataset, TrainDataset, collate
    from ..train.loss import DetectionLoss

    torch.manual_seed(cfg.seed)
    teacher = teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    criterion = DetectionLoss(quant_model.detect)
    distill = DistillationLoss(cfg.distill, cfg.temperature)
    params = [p for p in quant_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    labelled = CocoDataset(cfg.train_annotations)
    if labelled.num_classes != quant_model.detect.nc:
        raise ConfigError(f"QAT needs images labelled with the model's classes: {cfg.train_annotations} has "
                          f"{labelled.num_classes}, the model {quant_model.detect.nc}")
    dataset = TrainDataset(labelled, input_hw, augment=True, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(cfg.seed), drop_last=True)
    history, iteration, running = [], 0, {}
    quant_model.train()
    bar = progress_bar(total=cfg.iterations, desc="QAT" + (" + CWD" if cfg.distill else ""), unit="it",
                       enabled=progress)
    while iteration < cfg.iterations:
        for batch in loader:
            loss, task, loss_kd = combined_loss(quant_model, teacher, criterion, distill, batch,
                                                distill_weight_at(cfg, iteration))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            iteration += 1
            bar.update()
            for key, value in (("task", float(task.detach())), ("cwd", float(loss_kd.detach()))):
                running[key] = value if key not in running else 0.9 * running[key] + 0.1 * value  # smoothed
            bar.set_postfix(task=f"{running['task']:.3f}", cwd=f"{running['cwd']:.4f}", refresh=False)
            if iteration % 10 == 0 or iteration == cfg.iterations:
                history.append({"iteration": iteration, "task": round(running["task"], 4),
                                "cwd": round(running["cwd"], 5), "kd_weight": round(distill_weight_at(cfg, iteration), 4)})
            if iteration >= cfg.iterations:
                break
    bar.close()
    quant_model.eval()
    return history


def qat_report(checkpoint: Path, train_annotations: Path, val_annotations: Path, calib_source: Path,
               out_dir: Path, cfg: QatConfig | None = None, calib_images: int = 128, float_top_k: int = 4,
               val_limit: int | None = None) -> dict:
    """mAP of FP32, PTQ, partial PTQ, QAT and QAT + CWD on one val set; exports the QAT + CWD model."""
    from ..data import CocoDataset
    from ..evaluate import EvalSettings, detector_runner, evaluate, map_evaluator
    from ..export.onnx import export_onnx
    from ..model.checkpoint import load_deploy_model
    from ..runtime import RUNTIMES
    from .calibration import load_batches
    from .cpu_qdq import uint8_activations
    from .merge import merge_scales
    from .partial import top_k
    from .ptq import PtqConfig, quantize_ptq, set_float_layers
    from .sensitivity import analyse

    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = cfg or QatConfig(str(train_annotations))
    teacher, info = load_deploy_model(checkpoint)
    hw = tuple(info.input_hw)
    val = CocoDataset(val_annotations)
    torch_map = map_evaluator(val, hw, val_limit)
    batches = load_batches(calib_source, hw, calib_images, 16)
    ptq = quantize_ptq(teacher, batches, PtqConfig("max"))  # every layer INT8: what QAT recovers
    merge_scales(ptq, hw)
    rows = {"FP32": torch_map(teacher), "PTQ (max, merged scales)": torch_map(ptq)}
    partial = copy.deepcopy(ptq)
    float_layers = top_k(analyse(teacher, ptq, batches[:2], progress=False), float_top_k)
    set_float_layers(partial, set(float_layers))
    rows[f"partial PTQ ({len(float_layers)} float layers)"] = torch_map(partial)
    histories = {}
    for name, distill in (("QAT", ()), ("QAT + CWD", cfg.distill or ("neck",))):
        student = copy.deepcopy(ptq)
        histories[name] = train_qat(student, teacher, QatConfig(**{**asdict(cfg), "distill": distill}), hw)
        rows[name] = torch_map(student)
        log.info("%s: %.4f", name, rows[name])
    # Artifacts of the last (QAT + CWD) model: explicit Q/DQ for TensorRT, and its CPU form (the same
    # QAT scales, uint8 activations), which the cpu flavour serves on either runtime.
    qat_qdq = export_onnx(student, out / "detector_qat_qdq.onnx", hw, topk=1000)
    qat_cpu = uint8_activations(qat_qdq, out / "detector_qat_qdq_u8.onnx")
    for runtime in RUNTIMES:
        rows[f"QAT + CWD, served CPU graph on {runtime}"] = evaluate(
            detector_runner(qat_cpu, runtime), val, hw, EvalSettings(limit=val_limit), progress=False)["map50_95"]
    report = {"checkpoint": str(checkpoint), "config": asdict(cfg), "val_images": val_limit or len(val),
              "map50_95": {k: round(v, 4) for k, v in rows.items()}, "float_layers": float_layers,
              "history": histories, "minutes": round((time.monotonic() - started) / 60, 1)}
    (out / "qat.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "qat.md").write_text(markdown(report))
    plot_history(histories, out / "qat_losses.png")
    return report


def markdown(report: dict) -> str:
    fp32 = report["map50_95"]["FP32"]
    lines = [f"# QAT on {report['checkpoint']} ({report['val_images']} val images, mAP@0.5:0.95)", "",
             "| variant | mAP | vs FP32 (points) |", "|---|---|---|"]
    lines += [f"| {name} | {value:.4f} | {100 * (value - fp32):+.2f} |" for name, value in report["map50_95"].items()]
    c = report["config"]
    lines += ["", f"QAT: {c['iterations']} iterations, batch {c['batch_size']}, AdamW lr {c['lr']}; CWD on "
              f"{', '.join(c['distill']) or 'neck'}, tau {c['temperature']}, weight {c['distill_weight']} "
              f"(cosine to 0). All layers quantized in QAT. {report['minutes']} min."]
    return "\n".join(lines) + "\n"


def plot_history(histories: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_task, ax_kd) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, history in histories.items():
        ax_task.plot([h["iteration"] for h in history], [h["task"] for h in history], label=name)
        if any(h["cwd"] for h in history):
            ax_kd.plot([h["iteration"] for h in history], [h["cwd"] for h in history], label=name)
    ax_task.set_title("detection loss")
    ax_kd.set_title("channel-wise distillation loss")
    for ax in (ax_task, ax_kd):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
