"""Command line of the build pipeline: ``python -m yolov6_build <command>``.

One module per command group; each command is an ``add_<command>(sub)`` that declares its
arguments next to the ``run_<command>(args)`` that carries it out. Defaults are read from the
config dataclasses they belong to (``common.default_of``). Building the parser imports no torch.

Exit codes: 0 ok, 1 a build step failed (one-line reason on stderr), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import BuildError, ConfigError
from . import deploy, fuzz, load, model, quantize, serving

GROUPS = (model, quantize, serving, load, fuzz, deploy)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yolov6_build", description="YOLOv6 checkpoint -> INT8 Triton model repository: build pipeline steps.",
        epilog="Exit codes: 0 ok, 1 a step failed (one-line reason on stderr), 2 bad usage or configuration.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        for add_command in group.COMMANDS:
            add_command(sub)
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
