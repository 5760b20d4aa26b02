"""A CuPy and a Python-backend ``triton_python_backend_utils`` small enough to run the preprocess model's
GPU branch in-process, with no GPU: "device" arrays live in host memory but report a CUDA device through
DLPack, so every branch that tests ``is_cpu()`` or the DLPack device takes its GPU path.

Only what that code may use on a real GPU exists here: device copies by pointer (``cuda.runtime.memcpy``),
``empty``/``zeros``/``ascontiguousarray``/``from_dlpack``; no ``cupy.concatenate``, which compiles a
kernel at run time in the serving image (no CUDA headers there). ``from_dlpack`` refuses host tensors,
as CuPy does. ``calls`` records what ran, so tests can see the warm-up and the copies.
"""

from __future__ import annotations

import ctypes
import types

import numpy as np

KDL_CUDA = 2  # DLPack's device type for CUDA memory


class DeviceArray:
    """Device memory stood in by a numpy array."""

    def __init__(self, host: np.ndarray):
        self.host = host

    shape = property(lambda self: self.host.shape)
    dtype = property(lambda self: self.host.dtype)
    nbytes = property(lambda self: self.host.nbytes)
    data = property(lambda self: types.SimpleNamespace(ptr=self.host.ctypes.data))

    def __len__(self):
        return len(self.host)

    def __getitem__(self, index):
        return DeviceArray(self.host[index])

    def __dlpack_device__(self):
        return (KDL_CUDA, 0)

    def __dlpack__(self, stream=None):
        return self.host.__dlpack__()

    def shared_host(self) -> np.ndarray:
        """The memory itself (a DLPack import through numpy would be read-only)."""
        return self.host


def fake_cupy() -> types.ModuleType:
    cupy = types.ModuleType("cupy")
    cupy.calls = []
    cupy.float32 = np.float32

    def from_dlpack(tensor):
        device = tensor.__dlpack_device__()[0]
        if device != KDL_CUDA:
            raise TypeError("CuPy cannot take host memory by DLPack")
        cupy.calls.append("from_dlpack")
        return DeviceArray(tensor.shared_host())  # no copy, as CuPy shares the producer's memory

    def memcpy(dst, src, nbytes, kind):
        assert kind == cupy.cuda.runtime.memcpyDeviceToDevice
        cupy.calls.append("memcpy")
        ctypes.memmove(dst, src, nbytes)

    cupy.from_dlpack = from_dlpack
    cupy.empty = lambda shape, dtype: _allocated(cupy, np.empty(shape, dtype))
    cupy.zeros = lambda shape, dtype: _allocated(cupy, np.zeros(shape, dtype))
    cupy.ascontiguousarray = lambda a: a if a.host.flags.c_contiguous else DeviceArray(np.ascontiguousarray(a.host))
    runtime = types.SimpleNamespace(memcpy=memcpy, memcpyDeviceToDevice=3)
    cupy.cuda = types.SimpleNamespace(runtime=runtime)
    return cupy


def _allocated(cupy, host: np.ndarray) -> DeviceArray:
    cupy.calls.append("alloc")
    return DeviceArray(host)


def fake_pb_utils(bls_handler) -> types.ModuleType:
    """The Python backend's utilities. ``bls_handler(model_name, {input: numpy})`` answers BLS requests with
    ``({output: DeviceArray}, None)`` or ``(None, error message)``."""
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, array

        def name(self):
            return self._name

        @classmethod
        def from_dlpack(cls, name, array):
            assert array.__dlpack_device__()[0] == KDL_CUDA, "only device arrays are passed by DLPack here"
            return cls(name, DeviceArray(array.shared_host()))

        def is_cpu(self):
            return isinstance(self._array, np.ndarray)

        def as_numpy(self):
            assert self.is_cpu(), "as_numpy on a GPU tensor"
            return self._array

        def __dlpack_device__(self):
            return (1, 0) if self.is_cpu() else self._array.__dlpack_device__()

        def __dlpack__(self, stream=None):
            return self._array.__dlpack__()

        def shared_host(self):
            return self._array.shared_host()

    class TritonError:
        INVALID_ARG = 3

        def __init__(self, message, code=None):
            self._message = message

        def message(self):
            return self._message

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self._error = output_tensors, error

        def has_error(self):
            return self._error is not None

        def error(self):
            return self._error

    class InferenceRequest:
        def __init__(self, model_name, inputs, requested_output_names):
            self.model_name, self.inputs = model_name, {t.name(): t for t in inputs}
            self.requested_output_names = requested_output_names

        def exec(self):
            outputs, error = bls_handler(self.model_name, {n: t.as_numpy() for n, t in self.inputs.items()})
            if error is not None:
                return InferenceResponse([], TritonError(error))
            return InferenceResponse([Tensor(name, outputs[name]) for name in self.requested_output_names])

    def get_tensor(holder, name):
        tensors = holder.output_tensors if isinstance(holder, InferenceResponse) else holder.inputs.values()
        return next(t for t in tensors if t.name() == name)

    pb.Tensor, pb.TritonError, pb.InferenceResponse, pb.InferenceRequest = (Tensor, TritonError, InferenceResponse,
                                                                            InferenceRequest)
    pb.get_input_tensor_by_name = pb.get_output_tensor_by_name = get_tensor
    return pb
