"""Triton Python backend: encoded image bytes -> letterboxed network input + letterbox geometry.

``executor`` parameter: ``opencv`` decodes and letterboxes with OpenCV image by image (the cpu
flavour's default: no per-batch cost, the same code as offline evaluation); ``dali`` runs the GPU
flavour's DALI pipeline in-process on CPU (both hand over images as ``pixels``: the cpu flavour's uint8); ``bls`` sends the whole dynamic batch to the DALI backend
model named by ``dali_model`` in one request (GPU flavour) and passes its outputs on by DLPack where DALI left them, so GPU images go
from DALI to TensorRT without a host round trip. Every route admits images with ``letterbox_admitted``
(JPEG and PNG only), and a DALI batch with an undecodable image fails only that image's request.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from yolov6_build import contract
from yolov6_build.inputs import letterbox_admitted, run_isolating_failures
from yolov6_build.triton_models.common import config_parameters, error_response


def _from_tensor(tensor):
    """A numpy (host) or CuPy (device) view of a Triton tensor, without copying."""
    if tensor.is_cpu():
        return tensor.as_numpy()
    import cupy  # only the GPU image has (and needs) it

    return cupy.from_dlpack(tensor)


def _to_tensor(name: str, array):
    """Host arrays as they are; device (CuPy) arrays by DLPack, which keeps them on the GPU."""
    if isinstance(array, np.ndarray):
        return pb_utils.Tensor(name, np.ascontiguousarray(array))
    return pb_utils.Tensor.from_dlpack(name, array)


def _concatenate(parts):
    """Rows of one request as one array. On the GPU by plain device copies: CuPy's own concatenate
    compiles a kernel at run time, which needs CUDA headers the serving image does not have."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import cupy

    out = cupy.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype)
    offset = 0
    for part in parts:
        part = cupy.ascontiguousarray(part)  # a row slice of DALI's output: already contiguous, no kernel
        cupy.cuda.runtime.memcpy(out.data.ptr + offset, part.data.ptr, part.nbytes,
                                 cupy.cuda.runtime.memcpyDeviceToDevice)
        offset += part.nbytes
    return out


def warm_gpu() -> None:
    """What the first GPU request would otherwise pay for after ready: CuPy's import, the stub's CUDA
    context and a DLPack exchange each way. (BLS is not allowed in ``initialize``: the DALI model warms
    itself with its own config's warm-up.)"""
    import cupy

    probe = cupy.zeros((1,), dtype=cupy.float32)
    cupy.from_dlpack(pb_utils.Tensor.from_dlpack("warmup", probe))


def padded_batch(encoded: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of different lengths as one uint8 [N, max_len] tensor plus int32 [N, 1] true lengths."""
    lengths = np.array([[len(e)] for e in encoded], dtype=np.int32)
    rows = np.zeros((len(encoded), int(lengths.max())), dtype=np.uint8)
    for row, data in zip(rows, encoded):
        row[:len(data)] = data
    return rows, lengths


class BlsLetterbox:
    """Letterbox through the DALI backend model: one BLS request per batch (a failed batch: see
    ``run_isolating_failures``).

    Each result is ``(images [1, 3, H, W], letterbox [1, 6])``, slices of DALI's output tensors
    (GPU memory for the mixed decoder), or the exception for that image.
    """

    def __init__(self, model_name: str):
        self.model_name = model_name

    def _infer(self, encoded: list[np.ndarray]):
        rows, lengths = padded_batch(encoded)
        request = pb_utils.InferenceRequest(
            model_name=self.model_name,
            inputs=[pb_utils.Tensor(contract.PREPROCESS_INPUT, rows),
                    pb_utils.Tensor(contract.PREPROCESS_INPUT_BYTES, lengths)],
            requested_output_names=[contract.DETECTOR_INPUT, contract.PREPROCESS_LETTERBOX])
        response = request.exec()
        if response.has_error():
            return ValueError(f"cannot decode image: {response.error().message()}")
        images, letterbox = (_from_tensor(pb_utils.get_output_tensor_by_name(response, name))
                             for name in (contract.DETECTOR_INPUT, contract.PREPROCESS_LETTERBOX))
        return [(images[i:i + 1], letterbox[i:i + 1]) for i in range(len(encoded))]

    def __call__(self, encoded: list[np.ndarray]):
        return run_isolating_failures(self._infer, encoded)


class InProcessLetterbox:
    """A letterbox of ``yolov6_build.pipeline`` ('dali' on CPU or 'opencv'); results shaped like ``BlsLetterbox``'s."""

    def __init__(self, kind: str, input_hw, max_batch_size: int, dali_threads: int, pixels: str):
        from yolov6_build.pipeline import make_preprocessor

        self._letterbox = make_preprocessor(kind, input_hw, max_batch_size, dali_threads, pixels)

    def __call__(self, encoded: list[np.ndarray]):
        return [r if isinstance(r, Exception) else (r[0][None], r[1][None]) for r in self._letterbox(encoded)]


class TritonPythonModel:
    def initialize(self, args):
        params = config_parameters(args)
        executor = params.get("executor", "opencv")
        if executor == "bls":
            self.letterbox = BlsLetterbox(params["dali_model"])
            if params.get("gpu_warmup", "true") == "true":  # "false" only where no GPU exists (tests' stand-in)
                warm_gpu()
        else:
            input_hw = (int(params["input_height"]), int(params["input_width"]))
            self.letterbox = InProcessLetterbox(executor, input_hw, int(params.get("dali_batch_size", 8)),
                                                int(params.get("dali_threads", 2)), params.get("pixels", "float32"))

    def execute(self, requests):
        per_request, flat = [], []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, contract.PREPROCESS_INPUT).as_numpy()
            per_request.append(len(rows))
            flat.extend(rows)
        results = letterbox_admitted(self.letterbox, flat)

        responses, start = [], 0
        for count in per_request:
            mine = results[start:start + count]
            start += count
            failure = next((r for r in mine if isinstance(r, Exception)), None)
            responses.append(error_response(pb_utils, str(failure)) if failure is not None else _response(mine))
        return responses


def _response(results):
    images = _concatenate([images for images, _ in results])
    letterbox = _concatenate([letterbox for _, letterbox in results])
    return pb_utils.InferenceResponse(output_tensors=[
        _to_tensor(contract.DETECTOR_INPUT, images), _to_tensor(contract.PREPROCESS_LETTERBOX, letterbox)])
