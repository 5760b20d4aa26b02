"""What a container image really runs: TensorRT, CUDA, DALI, Python and numpy, read inside it.

``python3 -m yolov6_build.image_versions`` prints them as JSON; gpu-check runs it in the TensorRT image
(which builds the plan) and the Triton image (which loads it) before building anything, because a plan
loads only on the TensorRT that built it, ``model.dali`` is written here by one DALI, and the release
notes do not pin every number (``release.py``). Standard library only: it runs in both images as they are.
Where a version can sit in more than one place, each candidate is read in turn and the source recorded.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import platform
import re
import sys
from pathlib import Path

# where each image keeps the TensorRT libraries: the TensorRT image and Triton's both under /usr/lib/<arch>;
# older layouts under /usr/local/tensorrt, and the backend's own copy where a build vendored it
NVINFER_GLOBS = ("usr/lib/*/libnvinfer.so.*", "usr/lib/libnvinfer.so.*", "usr/local/tensorrt/lib/libnvinfer.so.*",
                 "opt/tritonserver/backends/tensorrt/libnvinfer.so.*")
DALI_BACKEND = "opt/tritonserver/backends/dali"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def tensorrt_version(root: Path) -> tuple[str | None, str | None]:
    """(version, where it was read): the libnvinfer the image loads plans with, else the Python module."""
    versions = {}
    for pattern in NVINFER_GLOBS:
        for path in glob.glob(str(root / pattern)):
            match = re.search(r"libnvinfer\.so\.(\d+(?:\.\d+)*)$", path)
            if match:
                versions[match.group(1)] = path
    if versions:
        longest = max(versions, key=lambda v: (len(v.split(".")), _version_key(v)))
        return longest, versions[longest]
    try:
        import tensorrt  # the TensorRT image's Python bindings

        return tensorrt.__version__, "python tensorrt module"
    except ImportError:
        return None, None


def cuda_version(root: Path) -> tuple[str | None, str | None]:
    if os.environ.get("CUDA_VERSION"):  # NGC images set it
        return os.environ["CUDA_VERSION"], "CUDA_VERSION"
    path = root / "usr/local/cuda/version.json"
    if path.is_file():
        return json.loads(path.read_text())["cuda"]["version"], str(path)
    return None, None


def dali_version(root: Path) -> tuple[str | None, str | None]:
    """The DALI of Triton's DALI backend (its Python package or wheel metadata), else an importable one."""
    backend = root / DALI_BACKEND
    for init in sorted(backend.glob("**/nvidia/dali/__init__.py")):
        match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", init.read_text(errors="replace"), re.M)
        if match:
            return match.group(1), str(init)
    for info in sorted(backend.glob("**/nvidia_dali*.dist-info")):
        match = re.search(r"-(\d+(?:\.\d+)+)\.dist-info$", info.name)
        if match:
            return match.group(1), str(info)
    if os.environ.get("DALI_VERSION"):
        return os.environ["DALI_VERSION"], "DALI_VERSION"
    try:
        return importlib.metadata.version("nvidia-dali-cuda130"), "pip nvidia-dali-cuda130"
    except importlib.metadata.PackageNotFoundError:
        return None, None


def read_versions(root: str | Path = "/") -> dict:
    root = Path(root)
    found = {"tensorrt": tensorrt_version(root), "cuda": cuda_version(root), "dali": dali_version(root)}
    try:
        numpy = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        numpy = None
    return {**{name: version for name, (version, _) in found.items()},
            "sources": {name: source for name, (_, source) in found.items() if source},
            "python": platform.python_version(), "numpy": numpy}


def same_tensorrt(a: str | None, b: str | None) -> bool:
    """Equal to the patch level (10.14.1 and 10.14.1.48 are one release); unknown is never equal."""
    return bool(a and b) and a.split(".")[:3] == b.split(".")[:3]


def problems(engine_image: dict, triton_image: dict, dali_here: str, python_expected: str) -> list[str]:
    """Why a plan built in ``engine_image`` or the repository written here would not run in ``triton_image``."""
    found = []
    if not same_tensorrt(engine_image.get("tensorrt"), triton_image.get("tensorrt")):
        found.append(f"the plan would be built with TensorRT {engine_image.get('tensorrt')} (tensorrt image) and loaded "
                     f"by TensorRT {triton_image.get('tensorrt')} (tritonserver image): a plan loads only on the "
                     "TensorRT that built it. Use the tensorrt image whose TensorRT matches the server's.")
    if triton_image.get("dali") not in (None, dali_here):
        found.append(f"model.dali is written here by DALI {dali_here}; the server's DALI backend runs "
                     f"{triton_image['dali']}: set release.DALI_VERSION to it and run `make setup` again")
    if triton_image.get("python", "").rsplit(".", 1)[0] != python_expected:
        found.append(f"the server image runs Python {triton_image.get('python')}, the project's code and "
                     f"requirements are checked for {python_expected} (release.CONTAINER_PYTHON)")
    return found


def main() -> int:
    print(json.dumps(read_versions(sys.argv[1] if len(sys.argv) > 1 else "/"), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
