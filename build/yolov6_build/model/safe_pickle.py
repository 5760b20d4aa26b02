"""Read torch.save zip files without executing pickled code.

Upstream YOLOv6 releases pickle whole ``nn.Module`` objects, so ``torch.load(weights_only=True)``
refuses them and a plain ``torch.load`` would run whatever the file names. This unpickler accepts
only tensor storage, plain containers and module *class names* under an allow-list of module
paths. Modules become inert ``PickledModule`` records whose parameters and buffers we read back
into a state dict; any other global raises UnsafePickleError before anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, UnsafePickleError

# Module classes may come from these packages only (upstream's and torch.nn's own layers).
_MODULE_PREFIXES = ("yolov6.", "torch.nn.modules.")

_STORAGE_DTYPES = {
    "HalfStorage": "float16", "FloatStorage": "float32", "DoubleStorage": "float64",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}


class PickledModule:
    """Inert stand-in for a pickled nn.Module: keeps its class path and attribute dict, nothing else."""

    class_path = "?"

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise UnsafePickleError(f"unexpected state for {self.class_path}: {type(state).__name__}")
        self.__dict__.update(state)


def _module_stub(module: str, name: str) -> type:
    return type(name, (PickledModule,), {"class_path": f"{module}.{name}"})


class _StorageType:
    def __init__(self, dtype_name: str):
        self.dtype_name = dtype_name


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    import torch

    return torch.as_strided(storage, tuple(size), tuple(stride), storage_offset).clone()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, read_record):
        super().__init__(file)
        self._read_record = read_record
        self._storages: dict[str, object] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module in ("__builtin__", "builtins") and name in ("set", "frozenset"):
            return {"set": set, "frozenset": frozenset}[name]
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _numpy_scalar
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if module.startswith(_MODULE_PREFIXES) and name.isidentifier() and name[0].isupper():
            return _module_stub(module, name)
        raise UnsafePickleError(f"checkpoint pickle references {module}.{name}, which is not allowed "
                                "(only tensors, containers and YOLOv6/torch.nn module classes are)")

    def persistent_load(self, pid):
        import torch

        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id in checkpoint: {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"unexpected storage type in checkpoint: {storage_type!r}")
        if key not in self._storages:
            dtype = getattr(torch, storage_type.dtype_name)
            raw = bytearray(self._read_record(f"data/{key}"))
            self._storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self._storages[key]


def load_torch_zip(path: str | Path):
    """Unpickle a torch.save zip file with the restricted unpickler; returns the Python object."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise CheckpointError(f"{path} is not a torch.save zip archive (truncated, corrupt, or not a "
                              "checkpoint; legacy pre-1.6 torch files are not supported: re-save them)") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path} is a zip file but not a torch checkpoint (no data.pkl record)")
        prefix = pickles[0][: -len("data.pkl")]

        def read_record(name: str) -> bytes:
            try:
                return archive.read(prefix + name)
            except (KeyError, zipfile.BadZipFile, EOFError, OSError) as exc:
                raise CheckpointError(f"{path} is truncated or corrupt: cannot read record {name!r} ({exc})") from None

        try:
            return _RestrictedUnpickler(io.BytesIO(read_record("data.pkl")), read_record).load()
        except (CheckpointError, UnsafePickleError):
            raise
        except Exception as exc:  # malformed pickle streams raise many different types
            raise CheckpointError(f"{path}: cannot unpickle checkpoint ({type(exc).__name__}: {exc})") from None


def module_state_dict(module: PickledModule, prefix: str = "") -> dict:
    """Rebuild ``nn.Module.state_dict()`` (same keys, same order) from a PickledModule tree."""
    state = collections.OrderedDict()
    skip = module.__dict__.get("_non_persistent_buffers_set", set())
    for name, value in module.__dict__.get("_parameters", {}).items():
        if value is not None:
            state[prefix + name] = value
    for name, value in module.__dict__.get("_buffers", {}).items():
        if value is not None and name not in skip:
            state[prefix + name] = value
    for name, child in module.__dict__.get("_modules", {}).items():
        if child is not None:
            state.update(module_state_dict(child, f"{prefix}{name}."))
    return state
