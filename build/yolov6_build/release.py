"""The one pinned NVIDIA release the GPU flavour runs on, and the versions that follow from it.

Everything that must match across machines derives from here: the serving and TensorRT images,
the DALI that serialises and tests the pipeline here (the same DALI the backend runs: the
``DALI_VERSION`` file of dali_backend's ``r<TRITON_RELEASE>`` branch), and the Python those
images run. ``tests/docker/test_compose.py::test_one_pinned_release_everywhere`` checks that Dockerfiles, compose, requirements and
the README agree with these values.
"""

TRITON_RELEASE = "26.06"  # newest release whose DALI (dali_backend DALI_VERSION) has wheels on PyPI
DALI_VERSION = "2.1.1"
DALI_WHEEL = "nvidia-dali-cuda130"  # 26.06 is a CUDA 13 release
TENSORRT_VERSION = "10.14"
CUDA_VERSION = "13.1"
CONTAINER_PYTHON = "3.12"  # python3 of the 26.06 Triton and TensorRT images
MIN_DRIVER = "580"  # CUDA 13.x; older data-centre drivers run it through the NGC forward-compatibility libs

TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
TENSORRT_IMAGE = f"nvcr.io/nvidia/tensorrt:{TRITON_RELEASE}-py3"
NGC_ENTRYPOINT = "/opt/nvidia/nvidia_entrypoint.sh"  # sets up forward compatibility; keep it in front
