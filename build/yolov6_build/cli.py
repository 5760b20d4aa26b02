"""Command line of the build pipeline: ``python -m yolov6_build <subcommand>`` (the only argparse).

Exit codes: 0 ok, 1 a build step failed (one-line reason on stderr), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .contract import DEFAULT_INPUT_HW
from .errors import BuildError, ConfigError
from .runtime import RUNTIMES

log = logging.getLogger("yolov6_build")
# the synthetic dataset `make dataset` writes: the default data of every report command
DATASET = Path("artifacts/datasets/synthetic")
TRAIN_ANNOTATIONS = DATASET / "annotations" / "instances_train.json"
VAL_ANNOTATIONS = DATASET / "annotations" / "instances_val.json"
CALIB_DIR = DATASET / "calib"
CALIBRATOR_CHOICES = ("max", "percentile", "mse", "entropy")  # quantize.ptq.CALIBRATORS, without importing torch
DEFAULT_CALIBRATOR = "max"  # quantize.ptq.PtqConfig.calibrator, likewise


def _hw(text: str) -> tuple[int, int]:
    """'640' -> (640, 640); '384x640' -> (384, 640) as height x width; multiples of 32."""
    parts = [int(p) for p in text.lower().split("x")]
    hw = (parts[0], parts[0]) if len(parts) == 1 else tuple(parts)
    if len(hw) != 2 or any(v <= 0 or v % 32 for v in hw):
        raise argparse.ArgumentTypeError(f"image size must be N or HxW with multiples of 32, got {text!r}")
    return hw


def cmd_inspect(args) -> int:
    from .model.checkpoint import load_checkpoint

    model, info = load_checkpoint(args.checkpoint)
    n_params = sum(p.numel() for p in model.parameters())
    summary = {"size": info.size, "num_classes": info.num_classes, "head": info.head, "deploy": info.deploy,
               "format": info.source_format, "input_hw": list(info.input_hw), "parameters": n_params,
               "class_names": info.class_names[:10] + (["..."] if len(info.class_names) > 10 else [])}
    print(json.dumps(summary, indent=2))
    return 0


def cmd_fuse(args) -> int:
    from .model.checkpoint import load_deploy_model, save_checkpoint

    model, info = load_deploy_model(args.checkpoint)
    save_checkpoint(model, args.output, info.class_names, info.input_hw, info.training_mode, half=not args.fp32,
                    **info.extra)  # keeps provenance such as the training history
    log.info("wrote deploy checkpoint %s", args.output)
    return 0


def cmd_export_onnx(args) -> int:
    from .export.onnx import export_onnx
    from .model.checkpoint import load_deploy_model

    model, info = load_deploy_model(args.checkpoint)
    export_onnx(model, args.output, args.img_size or info.input_hw, opset=args.opset,
                dynamic_batch=not args.static_batch)
    return 0


def cmd_build_repo(args) -> int:
    from .build_repo import build_repository

    overrides = {"input_hw": args.img_size, "max_batch_size": args.max_batch_size,
                 "max_queue_delay_us": args.max_queue_delay_us, "preprocess_instances": args.preprocess_instances,
                 "detector_instances": args.detector_instances, "nms_instances": args.nms_instances,
                 "conf_threshold": args.conf, "iou_threshold": args.iou, "max_detections": args.max_det,
                 "intra_op_threads": args.threads, "detector_runtime": args.runtime}
    out = args.output or Path("model_repository") / args.flavour
    quantize_config = None
    if args.calib:
        from .quantize.ptq import PtqConfig
        from .quantize.stage import QuantizeStageConfig

        quantize_config = QuantizeStageConfig(ptq=PtqConfig(calibrator=args.calibrator), calib_images=args.calib_images,
                                              scale_sharing=args.scale_sharing)
    build_repository(args.checkpoint, out, args.flavour, detector_onnx=args.detector_onnx, calib=args.calib,
                     quantize_config=quantize_config, **overrides)
    return 0


def _server(args):
    from .server import ServerOptions, TritonServer

    options = ServerOptions(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                            metrics_port=args.metrics_port)
    return TritonServer(args.repository, args.work_dir, options)


def cmd_serve(args) -> int:
    import signal
    import threading

    server = _server(args).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("serving %s: http %s, grpc %s (Ctrl-C stops)", args.repository, server.http_url, server.grpc_url)
    try:
        while not stop.wait(1.0):
            if server.process.poll() is not None:
                raise BuildError(f"Triton exited with code {server.process.returncode}:\n{server.log_tail()}")
    finally:
        server.stop()
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    annotated = run_demo(args.checkpoint, args.repository, args.out_dir, _server(args), args.images, args.calib,
                         report=print)
    print(f"annotated images: {annotated}")
    return 0


def cmd_make_dataset(args) -> int:
    from .synthetic import SPLITS, generate

    counts = {split: args.count or n for split, n in SPLITS.items()}
    generate(args.output, seed=args.seed, counts=counts)
    return 0


def cmd_train(args) -> int:
    from .train.loop import TrainConfig, train

    data = args.data / "annotations"
    cfg = TrainConfig(train_annotations=str(data / "instances_train.json"),
                      val_annotations=str(data / "instances_val.json"), out_dir=str(args.output), size=args.size,
                      input_hw=args.img_size, epochs=args.epochs, batch_size=args.batch_size,
                      optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, eval_every=args.eval_every,
                      eval_limit=args.eval_limit, workers=args.workers, seed=args.seed, max_iters=args.max_iters,
                      training_mode=args.training_mode, repopt_scales=str(args.scales) if args.scales else None,
                      scale_lr_mult=args.scale_lr_mult)
    final = train(cfg)
    log.info("trained model written to %s", final)
    return 0


def cmd_eval(args) -> int:
    from .data import CocoDataset
    from .evaluate import EvalSettings, detector_runner, evaluate, torch_runner, write_result

    dataset = CocoDataset(args.annotations, args.images)
    if args.model.suffix == ".onnx":
        runner = detector_runner(args.model, args.runtime)
        input_hw = args.img_size or DEFAULT_INPUT_HW
    else:
        from .model.checkpoint import load_checkpoint

        model, info = load_checkpoint(args.model)
        runner, input_hw = torch_runner(model), args.img_size or info.input_hw
    metrics = evaluate(runner, dataset, input_hw, EvalSettings(batch_size=args.batch_size, limit=args.limit))
    print(f"{'model':<40} {'mAP@0.5:0.95':>12} {'mAP@0.5':>8} {'images':>7}")
    print(f"{str(args.model):<40} {metrics['map50_95']:>12.4f} {metrics['map50']:>8.4f} {metrics['images']:>7}")
    if args.output:
        write_result(args.output, str(args.model), metrics, {"input_hw": list(input_hw)})
    return 0


def _add_scale_sharing(parser) -> None:
    from .quantize.merge import SHARING

    parser.add_argument("--scale-sharing", choices=SHARING, default="merge",
                        help="one scale per Concat/Add/MaxPool/shared input for TensorRT: merge = largest of the "
                             "per-quantizer scales (default), tie = calibrate each group on its pooled statistics, "
                             "none = per-branch scales (TensorRT reformats)")


def _add_report_inputs(parser, output: Path) -> None:
    """Checkpoint, val set, calibration images and output folder of the PTQ accuracy reports."""
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--val", type=Path, default=VAL_ANNOTATIONS)
    parser.add_argument("--calib", type=Path, default=CALIB_DIR)
    parser.add_argument("--calib-images", type=int, default=128)
    parser.add_argument("--val-limit", type=int, default=None, help="first N val images (default all)")
    parser.add_argument("-o", "--output", type=Path, default=output)


def _ptq_config(args):
    from .quantize.ptq import PtqConfig

    return PtqConfig(calibrator=args.calibrator, percentile=args.percentile, exclude=tuple(args.exclude or ()))


def cmd_quantize(args) -> int:
    from .quantize.stage import QuantizeStageConfig, run_quantize

    cfg = QuantizeStageConfig(ptq=_ptq_config(args), calib_images=args.calib_images, batch_size=args.batch_size,
                              float_top_k=args.float_top_k, auto_budget_points=args.auto_budget,
                              sensitivity_images=args.sensitivity_images,
                              val_annotations=str(args.val) if args.val else None, val_limit=args.val_limit,
                              scale_sharing=args.scale_sharing)
    report = run_quantize(args.checkpoint, args.calib, args.output, cfg)
    print(json.dumps({k: report[k] for k in ("float_layers", "seconds")}, indent=2))
    return 0


def cmd_sensitivity(args) -> int:
    from .data import CocoDataset
    from .evaluate import map_evaluator
    from .model.checkpoint import load_deploy_model
    from .quantize.calibration import load_batches
    from .quantize.ptq import quantize_ptq
    from .quantize.sensitivity import analyse, rank, write_report

    model, info = load_deploy_model(args.checkpoint)
    batches = load_batches(args.calib, info.input_hw, args.calib_images, args.batch_size)
    quant = quantize_ptq(model, batches, _ptq_config(args))
    probe = load_batches(args.calib, info.input_hw, args.images, args.batch_size, seed=1)
    map_fn = map_evaluator(CocoDataset(args.val), info.input_hw, args.val_limit) if args.val else None
    results = analyse(model, quant, probe, map_fn)
    paths = write_report(results, args.output, args.metric)
    for i, r in enumerate(rank(results, args.metric)[:10], 1):
        print(f"{i:>2}. {r.layer:<45} {args.metric} {r.only[args.metric]:.4f}")
    print(f"report: {paths['md']}, {paths['png']}, {paths['json']}")
    return 0


def cmd_quant_report(args) -> int:
    from .reports.quantization import quantization_report

    report = quantization_report(args.checkpoint, args.val, args.calib, args.output, args.calib_images,
                                 args.budget, args.val_limit)
    print((Path(args.output) / "quantization.md").read_text())
    return 0 if report["rows"] else 1


def cmd_scale_report(args) -> int:
    from .reports.scale_sharing import scale_sharing_report

    report = scale_sharing_report(args.checkpoint, args.val, args.calib, args.output, tuple(args.calibrators),
                                  args.calib_images, args.val_limit)
    print((args.output / "scale_sharing.md").read_text())
    return 0 if report["rows"] else 1


def cmd_qat(args) -> int:
    from .quantize.qat import QatConfig, qat_report

    cfg = QatConfig(str(args.train_annotations), iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
                    distill=tuple(args.distill), temperature=args.temperature, distill_weight=args.distill_weight)
    report = qat_report(args.checkpoint, args.train_annotations, args.val_annotations, args.calib, args.output, cfg,
                        calib_images=args.calib_images, val_limit=args.limit)
    print((args.output / "qat.md").read_text())
    return 0 if report else 1


# the equal-budget pair (both 12 epochs of SGD, lr 0.02) and the longer-trained AdamW demo model
DEFAULT_REPOPT_COMPARISON = (("RepVGG SGD 12ep", "models/yolov6n_repvgg_sgd12_synthetic_320.pt"),
                             ("RepOpt SGD 12ep", "models/yolov6n_repopt_synthetic_320.pt"),
                             ("RepVGG AdamW 22ep (demo)", "models/yolov6n_synthetic_320.pt"))


def _labelled_path(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=CHECKPOINT, got {text!r}")
    return label, path


def cmd_repopt_report(args) -> int:
    from .reports.repopt import repopt_report

    models = dict(args.model or DEFAULT_REPOPT_COMPARISON)
    repopt_report({label: Path(path) for label, path in models.items()}, args.val_annotations, args.calib,
                  args.output, val_limit=args.limit)
    print((args.output / "repopt.md").read_text())
    return 0


def cmd_bench_int8(args) -> int:
    from .reports.bench_int8 import bench_int8

    demo = None if args.no_demo else args.demo_checkpoint
    bench_int8(args.output, tuple(args.sizes), args.img_size, tuple(args.batches), args.seconds, demo,
               args.annotations, args.calib)
    print((Path(args.output) / "bench_int8.md").read_text())
    return 0


def cmd_lint_qdq(args) -> int:
    from .export.lint import lint_qdq

    findings = lint_qdq(args.onnx, set(args.float_layers))
    for finding in findings:
        print(finding)
    print(f"{len(findings)} finding(s) in {args.onnx}")
    return 1 if findings else 0


def cmd_bench_nms(args) -> int:
    from .reports.bench_nms import bench_nms
    from .demo import sample_images

    images = sample_images(Path(args.output) / "images", 8) if args.detector_onnx else None
    bench_nms(args.output, args.detector_onnx, images, args.img_size)
    print((Path(args.output) / "bench_nms.md").read_text())
    return 0


def cmd_loadtest(args) -> int:
    from contextlib import nullcontext

    from .reports.loadtest import sweep, write_report
    from .server import ServerOptions, TritonServer

    users = [int(u) for u in args.users.split(",")]
    urls = {url.split("://")[0]: url for url in args.target or []}
    if set(urls) - {"grpc", "http"}:
        raise ConfigError(f"--target must be grpc://host:port or http://host:port, got {args.target}")
    context = nullcontext() if urls else TritonServer(args.repository, args.work_dir, ServerOptions.on_free_ports())
    with context as server:
        if server is not None:
            urls = {p: f"{p}://{server.grpc_url if p == 'grpc' else server.http_url}"
                    for p in args.protocols.split(",")}
        results = sweep(urls, args.output, users, args.step_seconds, args.max_requests, args.images,
                        args.allow_remote)
    paths = write_report(results, args.output, f"Load test: {', '.join(urls.values())}")
    print(paths["md"].read_text())
    log.info("report: %s", ", ".join(str(p) for p in paths.values()))
    return 1 if any(r.failures for r in results) else 0


def cmd_eval_server(args) -> int:
    from yolov6_client.cli import main as client_main

    from .server import ServerOptions, TritonServer

    detector = args.repository / "yolov6_detector" / "1" / "model.onnx"
    with TritonServer(args.repository, args.work_dir, ServerOptions.on_free_ports()) as server:
        argv = ["eval", "--url", server.grpc_url, "--annotations", str(args.annotations), "-o", str(args.output)]
        runtime = json.loads((args.repository / "repository.json").read_text()).get("detector_runtime", "ort")
        argv += ["--compare-onnx", str(detector), "--compare-runtime", runtime] if detector.is_file() else []
        argv += ["--limit", str(args.limit)] if args.limit else []
        return client_main(argv)


def cmd_gpu_check(args) -> int:
    from .reports.gpu_check import gpu_check, preflight

    if args.preflight_only:
        print(f"GPU host ready: {preflight()}")
        return 0
    report = gpu_check(args.checkpoint, args.calib, args.annotations, args.output, args.limit)
    print((args.output / "gpu_check.md").read_text())
    return 0 if report["checks"]["detections_match"] and report["checks"]["map_within_tolerance"] else 1


def cmd_soak(args) -> int:
    from .reports.soak import SoakConfig, soak

    report = soak(args.repository, args.output, SoakConfig(minutes=args.minutes, fraction=args.fraction,
                                                          max_rps=args.max_rps, users=args.users))
    print((args.output / "soak.md").read_text())
    return 0 if report["passed"] else 1


def cmd_bench_serving(args) -> int:
    from .reports.bench_serving import bench_serving

    report = bench_serving(args.repository, args.output, args.checkpoint, args.images,
                           [int(u) for u in args.users.split(",")], args.step_seconds, args.seconds)
    print((args.output / "bench_serving.md").read_text())
    return 0 if report["ratios"]["zero_failures"] else 1


def _add_ptq_options(p) -> None:
    p.add_argument("checkpoint", type=Path, help="input checkpoint (any supported format)")
    p.add_argument("--calib", type=Path, required=True, help="calibration images: a folder or a COCO instances_*.json")
    p.add_argument("--calibrator", choices=CALIBRATOR_CHOICES, default=DEFAULT_CALIBRATOR,
                   help=f"activation range method (default {DEFAULT_CALIBRATOR})")
    p.add_argument("--percentile", type=float, default=99.99, help="for --calibrator percentile (default 99.99)")
    p.add_argument("--calib-images", type=int, default=128, help="calibration images used (default 128)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--exclude", nargs="*", default=[], metavar="LAYER",
                   help="layers kept in float, by module name (e.g. detect.cls_preds.0)")


def _add_server_options(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--work-dir", type=Path, default=Path("artifacts/server"),
                   help="where the server binary is laid out and logs are written")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yolov6_build", description="YOLOv6 checkpoint -> INT8 Triton model repository: build pipeline steps.",
        epilog="Exit codes: 0 ok, 1 a step failed (one-line reason on stderr), 2 bad usage.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="print what a checkpoint holds (size, classes, head, format)")
    p.add_argument("checkpoint", type=Path, help="release .pt, torch-saved state dict, or project checkpoint")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("fuse", help="fold BatchNorm and re-parameterise RepVGG blocks; save a deploy checkpoint")
    p.add_argument("checkpoint", type=Path, help="input checkpoint (any supported format)")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the deploy checkpoint")
    p.add_argument("--fp32", action="store_true", help="store float32 weights (default: float16, as releases)")
    p.set_defaults(func=cmd_fuse)

    p = sub.add_parser("export-onnx", help="export the FP32 deploy model to ONNX (input 'images', dynamic batch)")
    p.add_argument("checkpoint", type=Path, help="input checkpoint (any supported format)")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the .onnx file")
    p.add_argument("--img-size", type=_hw, default=None,
                   help=f"network input, N or HxW, multiple of 32 (default: the checkpoint's, else "
                        f"{DEFAULT_INPUT_HW[0]})")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis to 1")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("build-repo", help="write a Triton model repository (configs, model.py, detector model)")
    p.add_argument("checkpoint", type=Path, help="input checkpoint (any supported format)")
    p.add_argument("--flavour", choices=("cpu", "gpu"), default="cpu",
                   help="cpu: embedded server, ORT detector; gpu: DALI backend + TensorRT plan (default cpu)")
    p.add_argument("-o", "--output", type=Path, default=None, help="repository folder (default model_repository/FLAVOUR)")
    p.add_argument("--calib", type=Path, default=None,
                   help="calibration images (folder or COCO json): serve INT8 (PTQ); without it, FP32")
    p.add_argument("--calibrator", choices=CALIBRATOR_CHOICES, default=DEFAULT_CALIBRATOR,
                   help=f"with --calib: activation range method (default {DEFAULT_CALIBRATOR})")
    p.add_argument("--calib-images", type=int, default=128, help="with --calib: images used (default 128)")
    _add_scale_sharing(p)
    p.add_argument("--detector-onnx", type=Path, default=None,
                   help="use this detector graph (e.g. from `quantize`) instead of building one")
    p.add_argument("--img-size", type=_hw, default=None, help="network input, N or HxW (default: the checkpoint's)")
    p.add_argument("--max-batch-size", type=int, default=None, help="max batch of every model (default 8)")
    p.add_argument("--max-queue-delay-us", type=int, default=None, help="dynamic batching delay (default 2000)")
    p.add_argument("--preprocess-instances", type=int, default=None, help="preprocess instances (default 1)")
    p.add_argument("--detector-instances", type=int, default=None, help="detector instances (default 1)")
    p.add_argument("--nms-instances", type=int, default=None, help="NMS instances (default 1)")
    p.add_argument("--conf", type=float, default=None, help="default score threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=None, help="default NMS IoU threshold (default 0.45)")
    p.add_argument("--max-det", type=int, default=None, help="detections per image, output size (default 100)")
    p.add_argument("--threads", type=int, default=None, help="detector threads per instance (0 = all cores)")
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help="cpu flavour: detector runtime (default openvino: faster at equal accuracy, see README)")
    p.set_defaults(func=cmd_build_repo)

    p = sub.add_parser("serve", help="run the embedded Triton server on a repository until Ctrl-C")
    p.add_argument("repository", type=Path, nargs="?", default=Path("model_repository/cpu"),
                   help="model repository (default model_repository/cpu)")
    _add_server_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="build the CPU repository, serve it, detect sample images over gRPC, stop")
    p.add_argument("--checkpoint", type=Path, default=Path("models/yolov6n_synthetic_320.pt"),
                   help="checkpoint to serve (default: the bundled demo model)")
    p.add_argument("--repository", type=Path, default=Path("model_repository/cpu"), help="repository to build into")
    p.add_argument("--images", type=Path, default=None, help="folder of images (default: generated samples)")
    p.add_argument("--calib", type=Path, default=None,
                   help="calibration images for INT8 (default: 64 generated synthetic calibration images)")
    p.add_argument("--out-dir", type=Path, default=Path("artifacts/demo"), help="where annotated images go")
    _add_server_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("make-dataset", help="write the deterministic synthetic COCO-format dataset")
    p.add_argument("-o", "--output", type=Path, default=DATASET)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=None, help="images per split (default train 2000/val 300/calib 256)")
    p.set_defaults(func=cmd_make_dataset)

    p = sub.add_parser("train", help="train YOLOv6 on a COCO-format dataset (CPU)")
    p.add_argument("--data", type=Path, default=DATASET,
                   help="dataset root with annotations/instances_{train,val}.json and image folders")
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/train"), help="run folder (resumes if present)")
    p.add_argument("--size", choices=("n", "s", "m", "l"), default="n")
    p.add_argument("--img-size", type=_hw, default=(320, 320))
    p.add_argument("--epochs", type=int, default=35)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw")
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--eval-every", type=int, default=5, help="epochs between val mAP checks")
    p.add_argument("--eval-limit", type=int, default=100, help="val images used for the periodic check")
    p.add_argument("--workers", type=int, default=1, help="data loader processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-iters", type=int, default=None, help="stop after this many iterations (smoke runs)")
    p.add_argument("--training-mode", choices=("repvgg", "repopt", "hyper_search"), default="repvgg",
                   help="repvgg (branches, merged at deploy); hyper_search (learn RepOpt scales); repopt (plain "
                        "blocks + RepOpt SGD, needs --scales)")
    p.add_argument("--scales", type=Path, default=None, help="hyper-search model.pt (for --training-mode repopt)")
    p.add_argument("--scale-lr-mult", type=float, default=1.0,
                   help="hyper_search: learning-rate multiplier of the branch scales (default 1)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("quantize", help="PTQ: write Q/DQ (TensorRT) and ORT INT8 detector graphs, partial PTQ")
    _add_ptq_options(p)
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/quantize"), help="output folder")
    p.add_argument("--float-top-k", type=int, default=0, help="also keep the k most sensitive layers float")
    p.add_argument("--auto-budget", type=float, default=None, metavar="POINTS",
                   help="smallest set of float layers whose mAP drop from FP32 is within POINTS (needs --val)")
    p.add_argument("--sensitivity-images", type=int, default=32, help="images for the sensitivity ranking")
    p.add_argument("--val", type=Path, default=None, help="COCO instances json for mAP (automatic partial PTQ)")
    p.add_argument("--val-limit", type=int, default=150, help="val images used per mAP measurement")
    _add_scale_sharing(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("lint-qdq", help="check a Q/DQ ONNX for scale mismatches and fusion blockers (TensorRT)")
    p.add_argument("onnx", type=Path, help="explicit-quantization ONNX graph")
    p.add_argument("--float-layers", nargs="*", default=[], help="layers meant to stay float")
    p.set_defaults(func=cmd_lint_qdq)

    p = sub.add_parser("sensitivity", help="per-layer INT8 sensitivity report (JSON, Markdown, PNG)")
    _add_ptq_options(p)
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/sensitivity"), help="report folder")
    p.add_argument("--images", type=int, default=32, help="images the output/neck errors are measured on")
    p.add_argument("--metric", default="output_snr_db",
                   choices=("output_snr_db", "output_mse", "output_cosine", "neck_snr_db", "map50_95"),
                   help="ranking metric (default output SNR)")
    p.add_argument("--val", type=Path, default=None, help="COCO instances json: adds the (slow) mAP measure")
    p.add_argument("--val-limit", type=int, default=100, help="val images per mAP measurement")
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("quant-report", help="mAP table: FP32, PTQ per calibrator, partial PTQ, stock ORT path")
    _add_report_inputs(p, Path("artifacts/reports/quantization"))
    p.add_argument("--budget", type=float, default=0.3, help="partial PTQ mAP budget in points (default 0.3)")
    p.set_defaults(func=cmd_quant_report)

    p = sub.add_parser("scale-report", help="mAP and lint findings of per-branch, merged and tied INT8 scales")
    _add_report_inputs(p, Path("artifacts/reports/scale_sharing"))
    p.add_argument("--calibrators", nargs="+", choices=CALIBRATOR_CHOICES, default=["max", "percentile", "mse"])
    p.set_defaults(func=cmd_scale_report)

    p = sub.add_parser("qat", help="QAT (+ channel-wise distillation) from the PTQ model: mAP table and exports")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--train-annotations", type=Path, default=TRAIN_ANNOTATIONS)
    p.add_argument("--val-annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--calib", type=Path, default=CALIB_DIR)
    p.add_argument("--calib-images", type=int, default=128)
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (1e-4 drifts off the PTQ optimum)")
    p.add_argument("--distill", nargs="+", default=["neck"], choices=("neck", "cls_logits"),
                   help="what the QAT + CWD run distils (default: the three neck outputs)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--distill-weight", type=float, default=1.0, help="initial CWD weight (cosine decay to 0)")
    p.add_argument("--limit", type=int, default=None, help="first N val images only")
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/qat"))
    p.set_defaults(func=cmd_qat)

    p = sub.add_parser("repopt-report", help="RepVGG vs RepOpt model: FP32 mAP, PTQ drop, weight-range statistics")
    p.add_argument("--model", type=_labelled_path, action="append", metavar="LABEL=CHECKPOINT",
                   help="a model to compare (repeat); default: "
                        + ", ".join(f"{label}={path}" for label, path in DEFAULT_REPOPT_COMPARISON))
    p.add_argument("--val-annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--calib", type=Path, default=CALIB_DIR)
    p.add_argument("--limit", type=int, default=None, help="first N val images only")
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/repopt"))
    p.set_defaults(func=cmd_repopt_report)

    p = sub.add_parser("bench-int8", help="served CPU INT8 vs OpenVINO FP32, NNCF and ORT stock INT8 (speed, demo mAP)")
    p.add_argument("--sizes", nargs="+", default=["n", "s"], choices=("n", "s", "m", "l"))
    p.add_argument("--img-size", type=_hw, default=(640, 640))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement")
    p.add_argument("--demo-checkpoint", type=Path, default=Path("models/yolov6n_synthetic_320.pt"),
                   help="also measure this model at its own size, with mAP beside each speed")
    p.add_argument("--no-demo", action="store_true", help="random-weight speed rows only")
    p.add_argument("--annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--calib", type=Path, default=CALIB_DIR)
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/bench_int8"))
    p.set_defaults(func=cmd_bench_int8)

    from .engine import cli as engine_cli

    p = sub.add_parser("build-engine", help="TensorRT plan of a gpu repository (its manifest sets size, batch, "
                       "precision); runs in the TensorRT container")
    engine_cli.add_arguments(p)
    p.set_defaults(func=engine_cli.run)

    p = sub.add_parser("bench-nms", help="milliseconds per image of the NMS step (random worst case, real candidates)")
    p.add_argument("--detector-onnx", type=Path, default=None, help="detector graph for real candidates")
    p.add_argument("--img-size", type=_hw, default=(320, 320))
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/bench_nms"))
    p.set_defaults(func=cmd_bench_nms)

    p = sub.add_parser("loadtest", help="Locust sweep over concurrency, headless and bounded (CSV, Markdown, PNG)")
    p.add_argument("repository", type=Path, nargs="?", default=Path("model_repository/cpu"),
                   help="serve this repository on free loopback ports for the run (default model_repository/cpu)")
    p.add_argument("--target", action="append", default=None, metavar="URL",
                   help="load an already running server instead: grpc://host:port and/or http://host:port")
    p.add_argument("--protocols", default="grpc,http", help="with the embedded server: grpc,http")
    p.add_argument("--users", default="1,2,4,8,16,32", help="concurrency steps (Locust users)")
    p.add_argument("--step-seconds", type=float, default=15.0, help="length of each step")
    p.add_argument("--max-requests", type=int, default=5000, help="a step also ends after this many requests")
    p.add_argument("--images", type=Path, default=None, help="folder of images to send (default: generated)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    p.add_argument("--work-dir", type=Path, default=Path("artifacts/server_loadtest"))
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/loadtest"))
    p.set_defaults(func=cmd_loadtest)

    p = sub.add_parser("gpu-check", help="acceptance run on a GPU host with docker: plans, served detections and "
                       "mAP vs offline, DALI GPU vs CPU preprocessing QPS, GPU memory (stops at once without a GPU)")
    p.add_argument("checkpoint", type=Path, nargs="?", default=Path("models/yolov6n_synthetic_320.pt"))
    p.add_argument("--calib", type=Path, default=CALIB_DIR)
    p.add_argument("--annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--limit", type=int, default=300, help="val images scored through the server and offline")
    p.add_argument("--preflight-only", action="store_true", help="only check for a GPU, its driver and docker compose")
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/gpu_check"))
    p.set_defaults(func=cmd_gpu_check)

    p = sub.add_parser("soak", help="sustained load at a fraction of max QPS: errors, memory, latency over time")
    p.add_argument("repository", type=Path, nargs="?", default=Path("model_repository/cpu"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fraction", type=float, default=0.8, help="of the maximum QPS (default 0.8)")
    p.add_argument("--max-rps", type=float, default=None, help="skip measuring the maximum; use this")
    p.add_argument("--users", type=int, default=16)
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/soak"))
    p.set_defaults(func=cmd_soak)

    p = sub.add_parser("eval-server", help="serve a repository and score a COCO set through it (vs offline)")
    p.add_argument("repository", type=Path, nargs="?", default=Path("model_repository/cpu"))
    p.add_argument("--annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--work-dir", type=Path, default=Path("artifacts/server_eval"))
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/eval/server_int8.json"))
    p.set_defaults(func=cmd_eval_server)

    p = sub.add_parser("bench-serving", help="server vs in-process, DALI vs OpenCV decode, FP32 vs INT8 served (one run)")
    p.add_argument("repository", type=Path, nargs="?", default=Path("model_repository/cpu"),
                   help="the built INT8 CPU repository (make build-repo)")
    p.add_argument("--checkpoint", type=Path, default=None, help="for the FP32 twin (default: the manifest's)")
    p.add_argument("--images", type=int, default=32, help="synthetic JPEGs of mixed sizes to send")
    p.add_argument("--users", default="1,2,4,8,16,32", help="server concurrency steps")
    p.add_argument("--step-seconds", type=float, default=8.0)
    p.add_argument("--seconds", type=float, default=8.0, help="per in-process measurement")
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/bench_serving"))
    p.set_defaults(func=cmd_bench_serving)

    p = sub.add_parser("eval", help="COCO mAP of a checkpoint (PyTorch) or an ONNX graph (ONNX Runtime)")
    p.add_argument("model", type=Path, help=".pt checkpoint or .onnx graph")
    p.add_argument("--runtime", choices=RUNTIMES, default="ort", help=".onnx: the CPU runtime that runs it (default ort)")
    p.add_argument("--annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--images", type=Path, default=None, help="image folder (default: next to the annotations)")
    p.add_argument("--img-size", type=_hw, default=None, help="network input (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the result as JSON")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
