"""The one pinned NVIDIA release the GPU flavour runs on, and the versions that follow from it.

Everything that must match across machines derives from here: the serving and TensorRT images,
the DALI that serialises and tests the pipeline here (the same DALI the backend runs: the
``DALI_VERSION`` file of dali_backend's ``r<TRITON_RELEASE>`` branch), and the Python those
images run. ``tests/docker/test_compose.py::test_one_pinned_release_everywhere`` checks that Dockerfiles,
compose, requirements and docs/gpu.md agree with these values. What the sources read here leave open
(TensorRT's version in the images) gpu-check reads inside both images before it builds anything
(``image_versions``), and it fails on a mismatch with both numbers.
"""

TRITON_RELEASE = "26.06"  # newest release whose DALI (dali_backend DALI_VERSION) has wheels on PyPI
DALI_VERSION = "2.1.1"  # dali_backend r26.06, file DALI_VERSION
DALI_WHEEL = "nvidia-dali-cuda130"  # 26.06 is a CUDA 13 release
# Triton 26.06 release notes: "based on CUDA 13.3.0"; server r26.06 compatibility.md gives CUDA 13.3.0.035 with
# driver 610.43.02 for the release's vllm image (the plain py3 image has no row there).
CUDA_VERSION = "13.3"
RELEASE_DRIVER = "610.43"
# CUDA minor-version compatibility: every R580+ driver runs CUDA 13.x applications (CUDA compatibility guide).
# Older drivers only through forward compatibility: data-centre GPUs (a T4 is one), with the cuda-compat libraries
# the NGC entrypoint loads; gpu-check warns below this floor and records the driver.
MIN_DRIVER = "580"
# TensorRT in the 26.06 images: not in the release notes read here. The server's compatibility table lists
# 10.14.1.48 for the 26.06 trtllm image; the r26.06 QA model generators were adapted to TensorRT 11 for the
# tensorrt:26.06 image. The builder serves both (strongly typed plans); gpu-check reads the real one.
TENSORRT_CANDIDATES = ("10.14", "11")
CONTAINER_PYTHON = "3.12"  # python3 of the 26.06 Triton and TensorRT images (Ubuntu 24.04); gpu-check checks it

TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
TENSORRT_IMAGE = f"nvcr.io/nvidia/tensorrt:{TRITON_RELEASE}-py3"
NGC_ENTRYPOINT = "/opt/nvidia/nvidia_entrypoint.sh"  # sets up forward compatibility; keep it in front
