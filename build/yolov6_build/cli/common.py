"""What several command groups share: argument types, the default dataset paths, server options."""

from __future__ import annotations

import argparse
import logging
from dataclasses import MISSING, fields
from pathlib import Path

log = logging.getLogger("yolov6_build")

# the synthetic dataset `make dataset` writes: the default data of every report command
DATASET = Path("artifacts/datasets/synthetic")
TRAIN_ANNOTATIONS = DATASET / "annotations" / "instances_train.json"
VAL_ANNOTATIONS = DATASET / "annotations" / "instances_val.json"
CALIB_DIR = DATASET / "calib"
DEMO_CHECKPOINT = Path("models/yolov6n_synthetic_320.pt")
CPU_REPOSITORY = Path("model_repository/cpu")


def default_of(config_class, name: str):
    """The default a dataclass declares for ``name``: help texts and argparse defaults read it from there."""
    for f in fields(config_class):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
    raise KeyError(f"{config_class.__name__} has no field {name!r} with a default")


def image_size(text: str) -> tuple[int, int]:
    """'640' -> (640, 640); '384x640' -> (384, 640) as height x width; multiples of 32."""
    parts = [int(p) for p in text.lower().split("x")]
    hw = (parts[0], parts[0]) if len(parts) == 1 else tuple(parts)
    if len(hw) != 2 or any(v <= 0 or v % 32 for v in hw):
        raise argparse.ArgumentTypeError(f"image size must be N or HxW with multiples of 32, got {text!r}")
    return hw


def users_list(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16]: concurrency steps."""
    try:
        users = [int(u) for u in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not users or min(users) < 1:
        raise argparse.ArgumentTypeError(f"concurrency steps must be >= 1, got {text!r}")
    return users


def add_server_options(p: argparse.ArgumentParser) -> None:
    from ..server import ServerOptions

    p.add_argument("--host", default=default_of(ServerOptions, "host"), help="address to bind (default loopback only)")
    p.add_argument("--http-port", type=int, default=default_of(ServerOptions, "http_port"))
    p.add_argument("--grpc-port", type=int, default=default_of(ServerOptions, "grpc_port"))
    p.add_argument("--metrics-port", type=int, default=default_of(ServerOptions, "metrics_port"))
    p.add_argument("--work-dir", type=Path, default=Path("artifacts/server"),
                   help="where the server binary is laid out and logs are written")


def admin_key_from_environment() -> str | None:
    """The admin key a deployment gives: the file TRITON_ADMIN_KEY_FILE names (a Kubernetes Secret), or
    TRITON_ADMIN_KEY; None when neither is set (the server then makes a random key per start)."""
    import os

    from ..errors import ConfigError

    path = os.environ.get("TRITON_ADMIN_KEY_FILE")
    if path:
        try:
            key = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"TRITON_ADMIN_KEY_FILE={path}: {exc.strerror}") from None
        if not key:
            raise ConfigError(f"TRITON_ADMIN_KEY_FILE={path} is empty")
        return key
    return os.environ.get("TRITON_ADMIN_KEY") or None


def server_from_args(args):
    from ..server import ServerOptions, TritonServer

    options = ServerOptions(host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                            metrics_port=args.metrics_port, admin_key=admin_key_from_environment(),
                            grpc_max_connection_age_s=getattr(args, "grpc_max_connection_age", None))
    return TritonServer(args.repository, args.work_dir, options)
