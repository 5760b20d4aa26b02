"""Load and acceptance commands: loadtest, soak, bench-serving, bench-nms, gpu-check, fleet."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .common import CALIB_DIR, CPU_REPOSITORY, DEMO_CHECKPOINT, VAL_ANNOTATIONS, default_of, image_size, log, \
    users_list


def add_loadtest(sub) -> None:
    p = sub.add_parser("loadtest", help="Locust sweep over concurrency, headless and bounded (CSV, Markdown, PNG)")
    p.add_argument("repository", type=Path, nargs="?", default=CPU_REPOSITORY,
                   help=f"serve this repository on free loopback ports for the run (default {CPU_REPOSITORY})")
    p.add_argument("--target", action="append", default=None, metavar="URL",
                   help="load an already running server instead: grpc://host:port and/or http://host:port")
    p.add_argument("--protocols", default="grpc,http", help="with the embedded server: grpc,http")
    p.add_argument("--users", type=users_list, default="1,2,4,8,16,32", help="concurrency steps (Locust users)")
    p.add_argument("--step-seconds", type=float, default=15.0, help="length of each step")
    p.add_argument("--max-requests", type=int, default=5000, help="a step also ends after this many requests")
    p.add_argument("--images", type=Path, default=None, help="folder of images to send (default: generated)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    p.add_argument("--work-dir", type=Path, default=Path("artifacts/server_loadtest"))
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/loadtest"))
    p.set_defaults(func=run_loadtest)


def run_loadtest(args) -> int:
    from contextlib import nullcontext

    from ..reports.loadtest import sweep, write_report
    from ..server import ServerOptions, TritonServer

    urls = {url.split("://")[0]: url for url in args.target or []}
    if set(urls) - {"grpc", "http"}:
        raise ConfigError(f"--target must be grpc://host:port or http://host:port, got {args.target}")
    context = nullcontext() if urls else TritonServer(args.repository, args.work_dir, ServerOptions.on_free_ports())
    with context as server:
        if server is not None:
            urls = {p: f"{p}://{server.grpc_url if p == 'grpc' else server.http_url}"
                    for p in args.protocols.split(",")}
        results = sweep(urls, args.output, args.users, args.step_seconds, args.max_requests, args.images,
                        args.allow_remote)
    paths = write_report(results, args.output, f"Load test: {', '.join(urls.values())}")
    print(paths["md"].read_text())
    log.info("report: %s", ", ".join(str(p) for p in paths.values()))
    return 1 if any(r.failures for r in results) else 0


def add_soak(sub) -> None:
    p = sub.add_parser("soak", help="sustained load at a fraction of max QPS: errors, memory, latency over time")
    p.add_argument("repository", type=Path, nargs="?", default=CPU_REPOSITORY)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fraction", type=float, default=0.8, help="of the maximum QPS (default 0.8)")
    p.add_argument("--max-rps", type=float, default=None, help="skip measuring the maximum; use this")
    p.add_argument("--users", type=int, default=16)
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/soak"))
    p.set_defaults(func=run_soak)


def run_soak(args) -> int:
    from ..reports.soak import SoakConfig, soak

    report = soak(args.repository, args.output, SoakConfig(minutes=args.minutes, fraction=args.fraction,
                                                          max_rps=args.max_rps, users=args.users))
    print((args.output / "soak.md").read_text())
    return 0 if report["passed"] else 1


def _served_vs_in_process_options(p, users: str, seconds: float, output: str) -> None:
    """What bench-serving and bench-serving-ab share: the images, the served steps, the in-process measurement."""
    p.add_argument("--images", type=int, default=32, help="synthetic JPEGs of mixed sizes to send")
    p.add_argument("--users", type=users_list, default=users, help="server concurrency steps")
    p.add_argument("--step-seconds", type=float, default=8.0)
    p.add_argument("--seconds", type=float, default=seconds, help="per in-process measurement")
    p.add_argument("-o", "--output", type=Path, default=Path(output))


def add_bench_serving(sub) -> None:
    p = sub.add_parser("bench-serving", help="server vs in-process, DALI vs OpenCV decode, FP32 vs INT8 served (one run)")
    p.add_argument("repository", type=Path, nargs="?", default=CPU_REPOSITORY,
                   help="the built INT8 CPU repository (make build-repo)")
    p.add_argument("--checkpoint", type=Path, default=None, help="for the FP32 twin (default: the manifest's)")
    _served_vs_in_process_options(p, "1,2,4,8,16,32", 8.0, "artifacts/reports/bench_serving")
    p.set_defaults(func=run_bench_serving)


def run_bench_serving(args) -> int:
    from ..reports.bench_serving import bench_serving

    report = bench_serving(args.repository, args.output, args.checkpoint, args.images, args.users,
                           args.step_seconds, args.seconds)
    print((args.output / "bench_serving.md").read_text())
    return 0 if report["ratios"]["zero_failures"] else 1


def add_bench_serving_ab(sub) -> None:
    p = sub.add_parser("bench-serving-ab", help="two CPU repositories served in turn, round after round (medians, B / A)")
    p.add_argument("repository_a", type=Path)
    p.add_argument("repository_b", type=Path)
    p.add_argument("--labels", default="A,B", help="names of the two in the report (comma-separated)")
    p.add_argument("--rounds", type=int, default=3)
    _served_vs_in_process_options(p, "1,4,32", 6.0, "artifacts/reports/bench_serving_ab")
    p.set_defaults(func=run_bench_serving_ab)


def run_bench_serving_ab(args) -> int:
    from ..reports.serving_ab import serving_ab

    labels = [label.strip() for label in args.labels.split(",")]
    if len(labels) != 2 or len(set(labels)) != 2 or not all(labels):
        raise ConfigError(f"--labels takes two different names, got {args.labels!r}")
    report = serving_ab(dict(zip(labels, (args.repository_a, args.repository_b))), args.output, args.rounds,
                        args.users, args.step_seconds, args.seconds, args.images)
    print((args.output / "serving_ab.md").read_text())
    medians = report["summary"]["medians"]  # failures there count every round's
    return 1 if any(step["failures"] for arm in medians.values() for step in arm.values()) else 0


def add_bench_nms(sub) -> None:
    p = sub.add_parser("bench-nms", help="milliseconds per image of the NMS step (random worst case, real candidates)")
    p.add_argument("--detector-onnx", type=Path, default=None, help="detector graph for real candidates")
    p.add_argument("--img-size", type=image_size, default=(320, 320))
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/bench_nms"))
    p.set_defaults(func=run_bench_nms)


def run_bench_nms(args) -> int:
    from ..demo import sample_images
    from ..reports.bench_nms import bench_nms

    images = sample_images(Path(args.output) / "images", 8) if args.detector_onnx else None
    bench_nms(args.output, args.detector_onnx, images, args.img_size)
    print((Path(args.output) / "bench_nms.md").read_text())
    return 0


def add_gpu_check(sub) -> None:
    p = sub.add_parser("gpu-check", help="acceptance run on a GPU host with docker: plans, served detections and "
                       "mAP vs offline, DALI GPU vs CPU preprocessing QPS, GPU memory (stops at once without a GPU)")
    p.add_argument("checkpoint", type=Path, nargs="?", default=DEMO_CHECKPOINT)
    p.add_argument("--calib", type=Path, default=CALIB_DIR)
    p.add_argument("--annotations", type=Path, default=VAL_ANNOTATIONS)
    p.add_argument("--limit", type=int, default=300, help="val images scored through the server and offline")
    p.add_argument("--preflight-only", action="store_true",
                   help="only check the GPU, its driver, docker compose and the versions inside both images")
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/gpu_check"))
    p.set_defaults(func=run_gpu_check)


def run_gpu_check(args) -> int:
    from ..reports.gpu_check import gpu_check, image_versions, passed, preflight

    if args.preflight_only:
        host = preflight()
        print(f"GPU host ready: {host['gpu']}, driver {host['driver']} ({host['driver_note']})")
        versions = image_versions()
        print("images fit together: " + "; ".join(
            f"{service}: TensorRT {v['tensorrt']}, CUDA {v['cuda']}, DALI {v['dali']}, Python {v['python']}, "
            f"numpy {v['numpy']}" for service, v in versions.items()))
        return 0
    report = gpu_check(args.checkpoint, args.calib, args.annotations, args.output, args.limit)
    print((args.output / "gpu_check.md").read_text())
    return 0 if passed(report["checks"]) else 1


def add_fleet(sub) -> None:
    from ..scaleout.fleet import FleetSettings

    p = sub.add_parser("fleet", help="N embedded replicas behind HAProxy: throughput per N, and one replica stopped "
                       "mid-run (graceful, SIGKILL) with requests lost, retries and balancer reaction (report)")
    p.add_argument("repository", type=Path, nargs="?", default=CPU_REPOSITORY)
    for name, kind, text in (("replicas", int, "replicas at most (the scaling run measures 1..N)"),
                             ("users", int, "Locust users through the balancer"),
                             ("step_seconds", float, "seconds per scaling step"),
                             ("disruption_seconds", float, "seconds per disruption run"),
                             ("retries", int, "retries per request on transient errors")):
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=default_of(FleetSettings, name),
                       help=f"{text} (default %(default)s)")
    p.add_argument("--protocols", default="grpc,http", help="grpc, http or both (default %(default)s)")
    p.add_argument("-o", "--output", type=Path, default=Path("artifacts/reports/fleet"))
    p.set_defaults(func=run_fleet)


def run_fleet(args) -> int:
    from ..scaleout.fleet import FleetSettings, run_fleet as fleet

    protocols = tuple(args.protocols.split(","))
    if set(protocols) - {"grpc", "http"} or args.replicas < 2:
        raise ConfigError(f"--protocols takes grpc,http and --replicas at least 2, got {args.protocols}, {args.replicas}")
    settings = FleetSettings(replicas=args.replicas, users=args.users, step_seconds=args.step_seconds,
                             protocols=protocols, disruption_seconds=args.disruption_seconds, retries=args.retries)
    report = fleet(args.repository, args.output, settings)
    print((args.output / "fleet.md").read_text())
    return 1 if any(d["step"]["failures"] for d in report["disruptions"]) else 0


COMMANDS = (add_loadtest, add_soak, add_bench_serving, add_bench_serving_ab, add_bench_nms, add_gpu_check, add_fleet)
