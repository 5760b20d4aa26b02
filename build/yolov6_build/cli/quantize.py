"""INT8 commands: quantize, lint-qdq, sensitivity and the accuracy/speed reports built on them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..model.registry import VARIANTS
from ..quantize.ptq import CALIBRATORS, PtqConfig
from ..quantize.qat import QatConfig
from ..quantize.stage import QuantizeStageConfig
from .common import CALIB_DIR, DEMO_CHECKPOINT, TRAIN_ANNOTATIONS, VAL_ANNOTATIONS, default_of, image_size

CALIBRATOR = default_of(PtqConfig, "calibrator")
CALIB_IMAGES = default_of(QuantizeStageConfig, "calib_images")


def add_calibration_options(p: argparse.ArgumentParser) -> None:
    """How activation ranges are calibrated and which layers stay float; shared by quantize, sensitivity and
    build-repo (``ptq_config`` reads them)."""
    p.add_argument("--calibrator", choices=CALIBRATORS, default=CALIBRATOR,
                   help=f"activation range method (default {CALIBRATOR})")
    p.add_argument("--percentile", type=float, default=default_of(PtqConfig, "percentile"),
                   help="for --calibrator percentile (default %(default)s)")
    p.add_argument("--calib-images", type=int, default=CALIB_IMAGES,
                   help=f"calibration images used (default {CALIB_IMAGES})")
    p.add_argument("--float-stem", action="store_true",
                   help="keep the stem (the first conv) float; by default it is INT8 like every other conv")
    p.add_argument("--exclude", nargs="*", default=[], metavar="LAYER",
                   help="layers kept in float, by module name (e.g. detect.cls_preds.0)")


def ptq_config(args) -> PtqConfig:
    return PtqConfig(calibrator=args.calibrator, percentile=args.percentile, exclude=tuple(args.exclude or ()),
                     float_stem=args.float_stem)


def add_qat_options(p: argparse.ArgumentParser) -> None:
    """QAT inside the quantize stage; shared by quantize and build-repo."""
    p.add_argument("--qat", type=Path, default=None, metavar="ANNOTATIONS",
                   help="after PTQ, fine-tune with QAT + channel-wise distillation on these labelled images (COCO "
                        "instances json); the scales stay as calibrated. Demo model served: -0.54 -> -0.16 mAP "
                        "points vs FP32")
    p.add_argument("--qat-iterations", type=int, default=default_of(QatConfig, "iterations"),
                   help=f"QAT iterations of --qat (default %(default)s, batch {default_of(QatConfig, 'batch_size')})")


def qat_config(args) -> QatConfig | None:
    return QatConfig(str(args.qat), iterations=args.qat_iterations) if args.qat else None


def add_scale_sharing(p: argparse.ArgumentParser) -> None:
    from ..quantize.merge import SHARING

    p.add_argument("--scale-sharing", choices=SHARING, default=default_of(QuantizeStageConfig, "scale_sharing"),
                   help="one scale per Concat/Add/MaxPool/shared input for TensorRT: merge = largest of the "
                        "per-quantizer scales (default), tie = calibrate each group on its pooled statistics, "
                        "none = per-branch scales (TensorRT reformats)")


def _add_ptq_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="input checkpoint (any supported format)")
    p.add_argument("--calib", type=Path, required=True, help="calibration images: a folder or a COCO instances_*.json")
    add_calibration_options(p)
    p.add_argument("--batch-size", type=int, default=default_of(QuantizeStageConfig, "batch_size"))


def _add_report_inputs(p: argparse.ArgumentParser, output: Path) -> None:
    """Checkpoint, val set, calibration images and output folder of the PTQ accuracy reports."""
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--val", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--calib", type=Path, default=CALIB_DIR)
    p.add_argument("--calib-images", type=int, default=CALIB_IMAGES)
    p.add_argument("--val-limit", type=int, default=None, help="first N val images (default all)")
    p.add_argument("-o", "--output", type=Path, default=output)


def add_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="PTQ: Q/DQ graph (TensorRT), its CPU forms (OpenVINO, ORT), partial PTQ")
    _add_ptq_options(p)
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/quantize"), help="output folder")
    p.add_argument("--float-top-k", type=int, default=0, help="also keep the k most sensitive layers float")
    p.add_argument("--auto-budget", type=float, default=None, metavar="POINTS",
                   help="smallest set of float layers whose mAP drop from FP32 is within POINTS (needs --val)")
    p.add_argument("--sensitivity-images", type=int, default=default_of(QuantizeStageConfig, "sensitivity_images"),
                   help="images for the sensitivity ranking")
    p.add_argument("--val", type=Path, default=None, help="COCO instances json for mAP (automatic partial PTQ)")
    p.add_argument("--val-limit", type=int, default=default_of(QuantizeStageConfig, "val_limit"),
                   help="val images used per mAP measurement")
    add_scale_sharing(p)
    add_qat_options(p)
    p.set_defaults(func=run_quantize)


def run_quantize(args) -> int:
    from ..quantize.stage import run_quantize as quantize

    cfg = QuantizeStageConfig(ptq=ptq_config(args), calib_images=args.calib_images, batch_size=args.batch_size,
                              float_top_k=args.float_top_k, auto_budget_points=args.auto_budget,
                              sensitivity_images=args.sensitivity_images,
                              val_annotations=str(args.val) if args.val else None, val_limit=args.val_limit,
                              scale_sharing=args.scale_sharing, qat=qat_config(args))
    report = quantize(args.checkpoint, args.calib, args.output, cfg)
    print(json.dumps({k: report[k] for k in ("float_layers", "seconds")}, indent=2))
    return 0


def add_lint_qdq(sub) -> None:
    p = sub.add_parser("lint-qdq", help="check a Q/DQ ONNX for scale mismatches and fusion blockers (TensorRT)")
    p.add_argument("onnx", type=Path, help="explicit-quantization ONNX graph")
    p.add_argument("--float-layers", nargs="*", default=[], help="layers meant to stay float")
    p.set_defaults(func=run_lint_qdq)


def run_lint_qdq(args) -> int:
    from ..export.lint import lint_qdq

    findings = lint_qdq(args.onnx, set(args.float_layers))
    for finding in findings:
        print(finding)
    print(f"{len(findings)} finding(s) in {args.onnx}")
    return 1 if findings else 0


def add_sensitivity(sub) -> None:
    p = sub.add_parser("sensitivity", help="per-layer INT8 sensitivity report (JSON, Markdown, PNG)")
    _add_ptq_options(p)
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/sensitivity"), help="report folder")
    p.add_argument("--images", type=int, default=32, help="images the output/neck errors are measured on")
    p.add_argument("--metric", default="output_snr_db",
                   choices=("output_snr_db", "output_mse", "output_cosine", "neck_snr_db", "map50_95"),
                   help="ranking metric (default output SNR)")
    p.add_argument("--val", type=Path, default=None, help="COCO instances json: adds the (slow) mAP measure")
    p.add_argument("--val-limit", type=int, default=100, help="val images per mAP measurement")
    p.set_defaults(func=run_sensitivity)


def run_sensitivity(args) -> int:
    from ..data import CocoDataset
    from ..evaluate import map_evaluator
    from ..model.checkpoint import load_deploy_model
    from ..quantize.calibration import load_batches
    from ..quantize.ptq import quantize_ptq
    from ..quantize.sensitivity import analyse, rank, write_report

    model, info = load_deploy_model(args.checkpoint)
    batches = load_batches(args.calib, info.input_hw, args.calib_images, args.batch_size)
    quant = quantize_ptq(model, batches, ptq_config(args))
    probe = load_batches(args.calib, info.input_hw, args.images, args.batch_size, seed=1)
    map_fn = map_evaluator(CocoDataset(args.val), info.input_hw, args.val_limit) if args.val else None
    results = analyse(model, quant, probe, map_fn)
    paths = write_report(results, args.output, args.metric)
    for i, r in enumerate(rank(results, args.metric)[:10], 1):
        print(f"{i:>2}. {r.layer:<45} {args.metric} {r.only[args.metric]:.4f}")
    print(f"report: {paths['md']}, {paths['png']}, {paths['json']}")
    return 0


def add_quant_report(sub) -> None:
    p = sub.add_parser("quant-report", help="mAP table: FP32, PTQ per calibrator, partial PTQ, stock ORT path")
    _add_report_inputs(p, Path("artifacts/reports/quantization"))
    p.add_argument("--budget", type=float, default=0.3, help="partial PTQ mAP budget in points (default 0.3)")
    p.set_defaults(func=run_quant_report)


def run_quant_report(args) -> int:
    from ..reports.quantization import quantization_report

    report = quantization_report(args.checkpoint, args.val, args.calib, args.output, args.calib_images,
                                 args.budget, args.val_limit)
    print((Path(args.output) / "quantization.md").read_text())
    return 0 if report["rows"] else 1


def add_scale_report(sub) -> None:
    from ..reports.scale_sharing import DEFAULT_CALIBRATORS

    p = sub.add_parser("scale-report", help="mAP and lint findings of per-branch, merged and tied INT8 scales")
    _add_report_inputs(p, Path("artifacts/reports/scale_sharing"))
    p.add_argument("--calibrators", nargs="+", choices=CALIBRATORS, default=list(DEFAULT_CALIBRATORS))
    p.set_defaults(func=run_scale_report)


def run_scale_report(args) -> int:
    from ..reports.scale_sharing import scale_sharing_report

    report = scale_sharing_report(args.checkpoint, args.val, args.calib, args.output, tuple(args.calibrators),
                                  args.calib_images, args.val_limit)
    print((args.output / "scale_sharing.md").read_text())
    return 0 if report["rows"] else 1


def add_qat(sub) -> None:
    p = sub.add_parser("qat", help="QAT (+ channel-wise distillation) from the PTQ model: mAP table and exports")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--train-annotations", type=Path, default=TRAIN_ANNOTATIONS)
    p.add_argument("--val-annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--calib", type=Path, default=CALIB_DIR)
    p.add_argument("--calib-images", type=int, default=CALIB_IMAGES)
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (1e-4 drifts off the PTQ optimum)")
    p.add_argument("--distill", nargs="+", default=["neck"], choices=("neck", "cls_logits"),
                   help="what the QAT + CWD run distils (default: the three neck outputs)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--distill-weight", type=float, default=1.0, help="initial CWD weight (cosine decay to 0)")
    p.add_argument("--limit", type=int, default=None, help="first N val images only")
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/qat"))
    p.set_defaults(func=run_qat)


def run_qat(args) -> int:
    from ..quantize.qat import QatConfig, qat_report

    cfg = QatConfig(str(args.train_annotations), iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
                    distill=tuple(args.distill), temperature=args.temperature, distill_weight=args.distill_weight)
    report = qat_report(args.checkpoint, args.train_annotations, args.val_annotations, args.calib, args.output, cfg,
                        calib_images=args.calib_images, val_limit=args.limit)
    print((args.output / "qat.md").read_text())
    return 0 if report else 1


# the equal-budget pair (both 12 epochs of SGD, lr 0.02) and the longer-trained AdamW demo model
DEFAULT_REPOPT_COMPARISON = (("RepVGG SGD 12ep", "models/yolov6n_repvgg_sgd12_synthetic_320.pt"),
                             ("RepOpt SGD 12ep", "models/yolov6n_repopt_synthetic_320.pt"),
                             ("QARepVGG SGD 12ep", "models/yolov6n_qarepvgg_sgd12_synthetic_320.pt"),
                             ("RepVGG AdamW 22ep (demo)", str(DEMO_CHECKPOINT)))


def _labelled_path(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=CHECKPOINT, got {text!r}")
    return label, path


def add_repopt_report(sub) -> None:
    p = sub.add_parser("repopt-report", help="RepVGG vs RepOpt vs QARepVGG models: FP32 mAP, PTQ drop by calibrator, "
                       "weight-range statistics")
    p.add_argument("--model", type=_labelled_path, action="append", metavar="LABEL=CHECKPOINT",
                   help="a model to compare (repeat); default: "
                        + ", ".join(f"{label}={path}" for label, path in DEFAULT_REPOPT_COMPARISON))
    p.add_argument("--val-annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--calib", type=Path, default=CALIB_DIR)
    p.add_argument("--limit", type=int, default=None, help="first N val images only")
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/repopt"))
    p.set_defaults(func=run_repopt_report)


def run_repopt_report(args) -> int:
    from ..reports.repopt import repopt_report

    models = dict(args.model or DEFAULT_REPOPT_COMPARISON)
    repopt_report({label: Path(path) for label, path in models.items()}, args.val_annotations, args.calib,
                  args.output, val_limit=args.limit)
    print((args.output / "repopt.md").read_text())
    return 0


def add_bench_int8(sub) -> None:
    p = sub.add_parser("bench-int8", help="served CPU INT8 vs OpenVINO FP32, NNCF and ORT stock INT8 (speed, demo mAP)")
    p.add_argument("--sizes", nargs="+", default=["n", "s"], choices=tuple(VARIANTS),
                   help="random-weight models timed (Lite sizes: lite_s, lite_m, lite_l; made for 320)")
    p.add_argument("--img-size", type=image_size, default=(640, 640))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--seconds", type=float, default=6.0,
                   help="timed seconds per path and batch size, split into interleaved rounds")
    p.add_argument("--demo-checkpoint", type=Path, default=DEMO_CHECKPOINT,
                   help="also measure this model at its own size, with mAP beside each speed")
    p.add_argument("--no-demo", action="store_true", help="random-weight speed rows only")
    p.add_argument("--demo-repository", type=Path,
                   help="a cpu repository built from the demo checkpoint (make build-repo: PTQ + QAT): measure "
                        "the graphs it serves as the bundle's (default: a fresh PTQ of the checkpoint)")
    p.add_argument("--annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--calib", type=Path, default=CALIB_DIR)
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/bench_int8"))
    p.set_defaults(func=run_bench_int8)


def run_bench_int8(args) -> int:
    from ..reports.bench_int8 import bench_int8

    demo = None if args.no_demo else args.demo_checkpoint
    bench_int8(args.output, tuple(args.sizes), args.img_size, tuple(args.batches), args.seconds, demo,
               args.annotations, args.calib, demo_repository=args.demo_repository)
    print((Path(args.output) / "bench_int8.md").read_text())
    return 0


def add_bench_silu(sub) -> None:
    p = sub.add_parser("bench-silu", help="OpenVINO's cost of one head conv by activation form (why SiLUs are tanh form)")
    p.add_argument("--runs", type=int, default=2000, help="timed inferences per variant")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--size", type=int, default=40, help="feature map height and width")
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/bench_silu"))
    p.set_defaults(func=run_bench_silu)


def run_bench_silu(args) -> int:
    from ..reports.silu_fusion import silu_fusion_report

    silu_fusion_report(args.output, args.runs, args.channels, args.size)
    print((Path(args.output) / "silu_fusion.md").read_text())
    return 0


COMMANDS = (add_quantize, add_lint_qdq, add_sensitivity, add_quant_report, add_scale_report, add_qat,
            add_repopt_report, add_bench_int8, add_bench_silu)
