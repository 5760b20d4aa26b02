"""``build-engine``: the plan of a gpu repository, built in the TensorRT container of the pinned release.

Shared by ``python -m yolov6_build.engine`` (the TensorRT image's entry point, which must not import
the rest of the CLI) and ``python -m yolov6_build build-engine``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

# Folder of a gpu repository image (docker/Dockerfile.repository) for timing caches made on a GPU like the
# nodes' (`make gpu-check` writes them): they seed the pod's plan build and are not copied into what Triton serves.
TIMING_CACHES = "timing-caches"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repository", type=Path, help="gpu repository written by `build-repo --flavour gpu` "
                        "(input size, max batch and precision come from its manifest.json)")
    parser.add_argument("--precision", choices=("int8", "fp16"), default=None,
                        help="override the manifest's precision (fp16 builds the FP16 baseline graph)")
    parser.add_argument("--workspace-mib", type=int, default=None)
    parser.add_argument("--timing-cache-dir", type=Path, default=Path("artifacts/engines"),
                        help="timing caches, one per TensorRT version and GPU (default artifacts/engines)")
    parser.add_argument("--copy-from", type=Path, default=None, metavar="DIR",
                        help="first copy the repository in DIR (read-only, e.g. the image's /repository) into "
                             f"REPOSITORY, seeding --timing-cache-dir from DIR/{TIMING_CACHES} "
                             "(the Kubernetes init container)")
    parser.add_argument("--opt-batch", dest="opt_batch_size", type=int, default=None, metavar="N",
                        help="the batch the profile is tuned for (default: 2, what light load runs; at most the "
                             "max batch)")
    parser.add_argument("--benchmark", action="store_true", help="measure the plan with trtexec after building")
    parser.add_argument("--compare-fp16", action="store_true",
                        help="also build the FP16 baseline and the INT8 plan tuned for the max batch, and benchmark "
                             "all three (INT8/FP16 and opt-batch tables in --report-dir)")
    parser.add_argument("--report-dir", type=Path, default=Path("artifacts/engines"),
                        help="with --compare-fp16: the extra plans and engines.{json,md} (default artifacts/engines)")


def copy_repository(source: Path, target: Path, timing_cache_dir: Path) -> None:
    """``source`` into ``target`` (which may exist, empty: a pod's volume) without its timing caches; those
    seed ``timing_cache_dir`` where it has none of the same name (one per TensorRT version and GPU)."""
    from ..errors import ConfigError

    if not (source / "manifest.json").is_file():
        raise ConfigError(f"{source} is not a gpu repository written by build-repo (no manifest.json)")
    shutil.copytree(source, target, dirs_exist_ok=True,
                    ignore=lambda folder, names: [TIMING_CACHES] if Path(folder) == source else [])
    timing_cache_dir.mkdir(parents=True, exist_ok=True)
    for cache in sorted((source / TIMING_CACHES).glob("*.cache")):
        if not (timing_cache_dir / cache.name).exists():
            shutil.copyfile(cache, timing_cache_dir / cache.name)


def run(args) -> int:
    from ..errors import BuildError
    from .trt import benchmark_plan, build_engine, compare_engines, engines_markdown, plan_from_manifest, \
        tensorrt_available

    if args.copy_from:
        copy_repository(args.copy_from, args.repository, args.timing_cache_dir)
    plan = plan_from_manifest(args.repository, precision=args.precision, workspace_mib=args.workspace_mib,
                              timing_cache_dir=str(args.timing_cache_dir), opt_batch_size=args.opt_batch_size)
    if not tensorrt_available():
        raise BuildError("TensorRT and a GPU are needed to build a plan: run it in the TensorRT container "
                         "(docker compose -f docker/docker-compose.yml run --rm engine)")
    if args.compare_fp16:
        print(engines_markdown(compare_engines(plan, args.report_dir)))
        return 0
    source = plan.onnx if plan.config.precision == "int8" else plan.fp16_baseline_onnx
    built = build_engine(source, plan.plan, plan.config)
    if args.benchmark:
        for batch in sorted({1, plan.config.opt_batch_size, plan.config.max_batch_size}):
            print(json.dumps(benchmark_plan(built, batch, plan.config.input_hw)))
    return 0


def main(argv: list[str] | None = None) -> int:
    import logging
    import sys

    from ..errors import BuildError, ConfigError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m yolov6_build.engine", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
