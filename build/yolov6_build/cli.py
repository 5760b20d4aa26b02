"""Command line of the build pipeline: ``python -m yolov6_build <subcommand>`` (the only argparse).

Exit codes: 0 ok, 1 a build step failed (one-line reason on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .contract import DEFAULT_INPUT_HW
from .errors import BuildError

log = logging.getLogger("yolov6_build")


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
    from .model.checkpoint import load_checkpoint, save_checkpoint
    from .model.yolo import fuse_for_deploy

    model, info = load_checkpoint(args.checkpoint)
    fuse_for_deploy(model)
    save_checkpoint(model, args.output, info.class_names, info.input_hw, info.training_mode, half=not args.fp32)
    log.info("wrote deploy checkpoint %s", args.output)
    return 0


def cmd_export_onnx(args) -> int:
    from .export.onnx import export_onnx
    from .model.checkpoint import load_checkpoint
    from .model.yolo import fuse_for_deploy

    model, info = load_checkpoint(args.checkpoint)
    fuse_for_deploy(model)
    export_onnx(model, args.output, args.img_size or info.input_hw, opset=args.opset,
                dynamic_batch=not args.static_batch)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolov6_build", description=__doc__.splitlines()[0])
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
