"""Repository and server commands: build-repo, build-engine, serve, demo, eval-server."""

from __future__ import annotations

import json
from pathlib import Path

from ..demo import DEMO_QAT_IMAGES
from ..errors import BuildError, ConfigError
from ..repository import FLAVOURS, RepositoryConfig
from ..pipeline import PREPROCESSORS
from ..runtime import RUNTIMES
from .common import CPU_REPOSITORY, DEMO_CHECKPOINT, VAL_ANNOTATIONS, add_server_options, default_of, image_size, \
    log, server_from_args
from .quantize import add_calibration_options, add_qat_options, add_scale_sharing, ptq_config, qat_config

# build-repo flag -> (RepositoryConfig field, type, help); an unset flag keeps the config's default
REPOSITORY_OPTIONS = {
    "--max-batch-size": ("max_batch_size", int, "max batch of every model"),
    "--max-queue-delay-us": ("max_queue_delay_us", int, "dynamic batching delay"),
    "--preprocess-instances": ("preprocess_instances", int, "preprocess instances"),
    "--detector-instances": ("detector_instances", int, "detector instances"),
    "--nms-instances": ("nms_instances", int, "NMS instances"),
    "--conf": ("conf_threshold", float, "default score threshold"),
    "--iou": ("iou_threshold", float, "default NMS IoU threshold"),
    "--max-det": ("max_detections", int, "detections per image, output size"),
    "--threads": ("intra_op_threads", int,
                  "detector threads per instance, 0 = the CPUs the server may use (affinity, cgroup quota)"),
}


def add_build_repo(sub) -> None:
    p = sub.add_parser("build-repo", help="write a Triton model repository (configs, model.py, detector model)")
    p.add_argument("checkpoint", type=Path, help="input checkpoint (any supported format)")
    p.add_argument("--flavour", choices=FLAVOURS, default=default_of(RepositoryConfig, "flavour"),
                   help="cpu: embedded server, OpenVINO/ORT detector; gpu: DALI backend + TensorRT plan "
                        "(default %(default)s)")
    p.add_argument("-o", "--output", type=Path, default=None, help="repository folder (default model_repository/FLAVOUR)")
    p.add_argument("--calib", type=Path, default=None,
                   help="calibration images (folder or COCO json): serve INT8 (PTQ); without it, FP32")
    add_calibration_options(p)
    add_scale_sharing(p)
    add_qat_options(p)
    p.add_argument("--detector-onnx", type=Path, default=None,
                   help="use this detector graph (e.g. from `quantize`) instead of building one")
    p.add_argument("--img-size", dest="input_hw", type=image_size, default=None, metavar="SIZE",
                   help="network input, N or HxW (default: the checkpoint's)")
    for flag, (name, kind, text) in REPOSITORY_OPTIONS.items():
        default = default_of(RepositoryConfig, name)
        p.add_argument(flag, dest=name, type=kind, default=None, metavar="N", help=f"{text} (default {default})")
    runtime = default_of(RepositoryConfig, "detector_runtime")
    p.add_argument("--runtime", dest="detector_runtime", choices=RUNTIMES, default=None,
                   help=f"cpu flavour: detector runtime (default {runtime}: faster at equal accuracy, see docs/benchmarks.md)")
    preprocess = default_of(RepositoryConfig, "cpu_preprocess")
    p.add_argument("--preprocess", dest="cpu_preprocess", choices=PREPROCESSORS, default=None,
                   help=f"cpu flavour: letterbox in the preprocess step (default {preprocess}: no per-batch cost; "
                        "dali runs the GPU flavour's pipeline on CPU)")
    p.set_defaults(func=run_build_repo)


def run_build_repo(args) -> int:
    from ..build_repo import build_repository

    names = ("input_hw", "detector_runtime", "cpu_preprocess", *(name for name, _, _ in REPOSITORY_OPTIONS.values()))
    overrides = {name: getattr(args, name) for name in names}
    quantize_config = None
    if args.calib:
        from ..quantize.stage import QuantizeStageConfig

        quantize_config = QuantizeStageConfig(ptq=ptq_config(args), calib_images=args.calib_images,
                                              scale_sharing=args.scale_sharing, qat=qat_config(args))
    elif args.qat:
        raise ConfigError("--qat fine-tunes the calibrated model: give --calib too")
    build_repository(args.checkpoint, args.output or Path("model_repository") / args.flavour, args.flavour,
                     detector_onnx=args.detector_onnx, calib=args.calib, quantize_config=quantize_config, **overrides)
    return 0


def add_build_engine(sub) -> None:
    from ..engine import cli as engine_cli

    p = sub.add_parser("build-engine", help="TensorRT plan of a gpu repository (its manifest sets size, batch, "
                       "precision); runs in the TensorRT container")
    engine_cli.add_arguments(p)
    p.set_defaults(func=engine_cli.run)


SERVE_GRPC_MAX_CONNECTION_AGE_S = 60  # what a deployed server reconnects its gRPC clients after


def add_serve(sub) -> None:
    from ..server import READY_TIMEOUT_S

    p = sub.add_parser("serve", help="run the embedded Triton server on a repository until Ctrl-C or SIGTERM")
    p.add_argument("repository", type=Path, nargs="?", default=CPU_REPOSITORY,
                   help=f"model repository (default {CPU_REPOSITORY})")
    add_server_options(p)
    p.add_argument("--grpc-max-connection-age", type=int, default=SERVE_GRPC_MAX_CONNECTION_AGE_S, metavar="S",
                   help="reconnect gRPC clients after S seconds, so a Service's new pods get their share "
                        "(default %(default)s; 0 = never)")
    p.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S, metavar="S",
                   help="give up when the models are not loaded after S seconds (default %(default)g: the "
                        "Kubernetes startup probe's budget)")
    p.set_defaults(func=run_serve)


def run_serve(args) -> int:
    import signal
    import threading

    # Handlers before anything slow: as a container's PID 1, Python ignores a SIGTERM it has no handler for,
    # and the kubelet would wait out the grace period during a model load.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = server_from_args(args)
    try:
        server.start(args.ready_timeout, interrupted=stop.is_set)
        if server.ready:
            log.info("serving %s: http %s, grpc %s (Ctrl-C stops)", args.repository, server.http_url,
                     server.grpc_url)
        while server.ready and not stop.wait(1.0):
            if server.process.poll() is not None:
                raise BuildError(f"Triton exited with code {server.process.returncode}:\n{server.log_tail()}")
    finally:
        server.stop()
    return 0


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="build the CPU repository, serve it, detect sample images over gRPC, stop")
    p.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT,
                   help="checkpoint to serve (default: the bundled demo model)")
    p.add_argument("--repository", type=Path, default=CPU_REPOSITORY, help="repository to build into")
    p.add_argument("--images", type=Path, default=None, help="folder of images (default: generated samples)")
    p.add_argument("--calib", type=Path, default=None,
                   help="calibration images for INT8 (default: 64 generated synthetic calibration images)")
    p.add_argument("--out-dir", type=Path, default=Path("artifacts/demo"), help="where annotated images go")
    p.add_argument("--qat-images", type=int, default=None, metavar="N",
                   help=f"QAT + CWD after PTQ on N synthetic training images (default {DEMO_QAT_IMAGES} for the "
                        "bundled demo model, which was trained on them; 0 for any other checkpoint: PTQ only)")
    add_server_options(p)
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from ..demo import run_demo as demo

    qat_images = args.qat_images
    if qat_images is None:
        qat_images = DEMO_QAT_IMAGES if args.checkpoint.resolve() == DEMO_CHECKPOINT.resolve() else 0
    annotated = demo(args.checkpoint, args.repository, args.out_dir, server_from_args(args), args.images, args.calib,
                     report=print, qat_images=qat_images)
    print(demo_next_steps(annotated, args.repository))
    return 0


def demo_next_steps(annotated: Path, repository: Path) -> str:
    """What the demo left behind and what to try next, as the last thing it prints."""
    default = repository.resolve() == CPU_REPOSITORY.resolve()
    steps = [("make serve" if default else f".venv/bin/python -m yolov6_build serve {repository}",
              "serve it until Ctrl-C"),
             (".venv/bin/python -m yolov6_client your_images/ --annotate out/", "then, in a second shell"),
             ("make build-repo CHECKPOINT=yolov6s.pt CALIB=calibration_images/", "your own checkpoint"),
             ("make help", "every target; README.md for the GPU and Kubernetes paths")]
    width = max(len(command) for command, _ in steps)
    return "\n".join(["", f"annotated images: {annotated}/",
                      f"model repository: {repository}/ (its manifest.json says what was built)", "next:",
                      *(f"  {command:<{width}}  # {why}" for command, why in steps)])


def add_eval_server(sub) -> None:
    p = sub.add_parser("eval-server", help="serve a repository and score a COCO set through it (vs offline)")
    p.add_argument("repository", type=Path, nargs="?", default=CPU_REPOSITORY)
    p.add_argument("--annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--work-dir", type=Path, default=Path("artifacts/server_eval"))
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/eval/server_int8.json"))
    p.set_defaults(func=run_eval_server)


def run_eval_server(args) -> int:
    from yolov6_client.cli import main as client_main

    from ..build_repo import served_cpu_detector
    from ..server import ServerOptions, TritonServer

    detector = served_cpu_detector(args.repository)
    settings = json.loads((args.repository / "repository.json").read_text())
    served = ["--compare-runtime", settings.get("detector_runtime", "ort"),
              "--compare-preprocess", settings.get("cpu_preprocess", "dali")]  # repositories before the option: dali
    with TritonServer(args.repository, args.work_dir, ServerOptions.on_free_ports()) as server:
        argv = ["eval", "--url", server.grpc_url, "--annotations", str(args.annotations), "-o", str(args.output)]
        argv += ["--compare-onnx", str(detector), *served] if detector.is_file() else []
        argv += ["--limit", str(args.limit)] if args.limit else []
        return client_main(argv)


COMMANDS = (add_build_repo, add_build_engine, add_serve, add_demo, add_eval_server)
