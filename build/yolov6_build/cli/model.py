"""Checkpoint and dataset commands: inspect, fuse, export-onnx, make-dataset, train, eval."""

from __future__ import annotations

import json
from pathlib import Path

from ..contract import DEFAULT_INPUT_HW, ONNX_OPSET
from ..runtime import RUNTIMES
from .common import DATASET, VAL_ANNOTATIONS, default_of, image_size, log


def add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="print what a checkpoint holds (size, classes, head, format)")
    p.add_argument("checkpoint", type=Path, help="release .pt, torch-saved state dict, or project checkpoint")
    p.set_defaults(func=run_inspect)


def run_inspect(args) -> int:
    from ..model.checkpoint import load_checkpoint

    model, info = load_checkpoint(args.checkpoint)
    n_params = sum(p.numel() for p in model.parameters())
    summary = {"size": info.size, "num_classes": info.num_classes, "head": info.head, "deploy": info.deploy,
               "format": info.source_format, "input_hw": list(info.input_hw), "parameters": n_params,
               "class_names": info.class_names[:10] + (["..."] if len(info.class_names) > 10 else [])}
    print(json.dumps(summary, indent=2))
    return 0


def add_fuse(sub) -> None:
    p = sub.add_parser("fuse", help="fold BatchNorm and re-parameterise RepVGG blocks; save a deploy checkpoint")
    p.add_argument("checkpoint", type=Path, help="input checkpoint (any supported format)")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the deploy checkpoint")
    p.add_argument("--fp32", action="store_true", help="store float32 weights (default: float16, as releases)")
    p.set_defaults(func=run_fuse)


def run_fuse(args) -> int:
    from ..model.checkpoint import load_deploy_model, save_checkpoint

    model, info = load_deploy_model(args.checkpoint)
    save_checkpoint(model, args.output, info.class_names, info.input_hw, info.training_mode, half=not args.fp32,
                    **info.extra)  # keeps provenance such as the training history
    log.info("wrote deploy checkpoint %s", args.output)
    return 0


def add_export_onnx(sub) -> None:
    p = sub.add_parser("export-onnx", help="export the FP32 deploy model to ONNX (input 'images', dynamic batch)")
    p.add_argument("checkpoint", type=Path, help="input checkpoint (any supported format)")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the .onnx file")
    p.add_argument("--img-size", type=image_size, default=None,
                   help=f"network input, N or HxW, multiple of 32 (default: the checkpoint's, else "
                        f"{DEFAULT_INPUT_HW[0]})")
    p.add_argument("--opset", type=int, default=ONNX_OPSET, help=f"ONNX opset (default {ONNX_OPSET})")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis to 1")
    p.set_defaults(func=run_export_onnx)


def run_export_onnx(args) -> int:
    from ..export.onnx import export_onnx
    from ..model.checkpoint import load_deploy_model

    model, info = load_deploy_model(args.checkpoint)
    path = export_onnx(model, args.output, args.img_size or info.input_hw, opset=args.opset,
                       dynamic_batch=not args.static_batch)
    print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB, opset {args.opset})")
    return 0


def add_make_dataset(sub) -> None:
    from ..synthetic import SPLITS

    counts = "/".join(f"{split} {n}" for split, n in SPLITS.items())
    p = sub.add_parser("make-dataset", help="write the deterministic synthetic COCO-format dataset")
    p.add_argument("-o", "--output", type=Path, default=DATASET)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=None, help=f"images per split (default {counts})")
    p.set_defaults(func=run_make_dataset)


def run_make_dataset(args) -> int:
    from ..synthetic import SPLITS, generate

    generate(args.output, seed=args.seed, counts={split: args.count or n for split, n in SPLITS.items()})
    return 0


def add_train(sub) -> None:
    from ..train.loop import TrainConfig

    def option(name: str, help: str = "", **kwargs):  # --name-with-dashes, default from TrainConfig
        p.add_argument("--" + name.replace("_", "-"), default=default_of(TrainConfig, name),
                       help=f"{help} (default %(default)s)".lstrip(), **kwargs)

    p = sub.add_parser("train", help="train YOLOv6 on a COCO-format dataset (CPU)")
    p.add_argument("--data", type=Path, default=DATASET,
                   help="dataset root with annotations/instances_{train,val}.json and image folders")
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/train"), help="run folder (resumes if present)")
    option("size", choices=("n", "s", "m", "l"))
    p.add_argument("--img-size", type=image_size, default=default_of(TrainConfig, "input_hw"))
    option("epochs", type=int)
    option("batch_size", type=int)
    option("optimizer", choices=("sgd", "adamw"))
    option("lr", type=float)
    option("weight_decay", type=float)
    option("eval_every", type=int, help="epochs between val mAP checks")
    option("eval_limit", type=int, help="val images used for the periodic check")
    option("workers", type=int, help="data loader processes")
    option("seed", type=int)
    option("max_iters", type=int, help="stop after this many iterations (smoke runs)")
    option("training_mode", choices=("repvgg", "repopt", "hyper_search", "qarepvggv2"),
           help="repvgg (branches, merged at deploy); hyper_search (learn RepOpt scales); repopt (plain "
                "blocks + RepOpt SGD, needs --scales); qarepvggv2 (QARepVGG branches, merged at deploy)")
    p.add_argument("--scales", type=Path, default=None, help="hyper-search model.pt (for --training-mode repopt)")
    option("scale_lr_mult", type=float, help="hyper_search: learning-rate multiplier of the branch scales")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from ..train.loop import TrainConfig, train

    data = args.data / "annotations"
    cfg = TrainConfig(train_annotations=str(data / "instances_train.json"),
                      val_annotations=str(data / "instances_val.json"), out_dir=str(args.output), size=args.size,
                      input_hw=args.img_size, epochs=args.epochs, batch_size=args.batch_size,
                      optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, eval_every=args.eval_every,
                      eval_limit=args.eval_limit, workers=args.workers, seed=args.seed, max_iters=args.max_iters,
                      training_mode=args.training_mode, repopt_scales=str(args.scales) if args.scales else None,
                      scale_lr_mult=args.scale_lr_mult)
    log.info("trained model written to %s", train(cfg))
    return 0


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="COCO mAP of a checkpoint (PyTorch) or an ONNX graph (OpenVINO or ONNX Runtime)")
    p.add_argument("model", type=Path, help=".pt checkpoint or .onnx graph")
    p.add_argument("--runtime", choices=RUNTIMES, default="ort", help=".onnx: the CPU runtime that runs it (default ort)")
    p.add_argument("--qdq-as-written", action="store_true",
                   help=".onnx: run every Q/DQ node as written, in float (ORT, no graph optimizations): the "
                        "graph's fake-quant numerics, to compare a served INT8 graph with its own quantization")
    p.add_argument("--annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--images", type=Path, default=None, help="image folder (default: next to the annotations)")
    p.add_argument("--img-size", type=image_size, default=None, help="network input (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the result as JSON")
    p.set_defaults(func=run_eval)


def _static_input_hw(onnx_path: Path) -> tuple[int, int] | None:
    """(H, W) of an ONNX graph's image input when the graph fixes them, else None."""
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    height, width = (d.dim_value for d in dims[2:4])
    return (height, width) if height and width else None


def run_eval(args) -> int:
    from ..data import CocoDataset
    from ..evaluate import EvalSettings, detector_runner, evaluate, torch_runner, write_result

    dataset = CocoDataset(args.annotations, args.images)
    if args.model.suffix == ".onnx":
        if args.qdq_as_written:
            from ..runtime import OrtDetector

            runner = OrtDetector(args.model, as_written=True)
        else:
            runner = detector_runner(args.model, args.runtime)
        input_hw = args.img_size or _static_input_hw(args.model) or DEFAULT_INPUT_HW
    else:
        from ..model.checkpoint import load_checkpoint

        model, info = load_checkpoint(args.model)
        runner, input_hw = torch_runner(model), args.img_size or info.input_hw
    metrics = evaluate(runner, dataset, input_hw, EvalSettings(batch_size=args.batch_size, limit=args.limit))
    print(f"{'model':<40} {'mAP@0.5:0.95':>12} {'mAP@0.5':>8} {'images':>7}")
    print(f"{str(args.model):<40} {metrics['map50_95']:>12.4f} {metrics['map50']:>8.4f} {metrics['images']:>7}")
    if args.output:
        write_result(args.output, str(args.model), metrics, {"input_hw": list(input_hw)})
    return 0


COMMANDS = (add_inspect, add_fuse, add_export_onnx, add_make_dataset, add_train, add_eval)
