"""A ``tensorrt`` module shaped like TensorRT's Python API, without a GPU: it records what the builder
asks for. ``fake_tensorrt(major)`` gives the 11.x surface (strongly typed only: BuilderFlag has no FP16
or INT8, STRONGLY_TYPED kept and ignored) or the 10.x one (both typings), per the bindings of tags
v11.1 and v10.14 (python/src/infer/pyCore.cpp)."""

import enum
import json
import types


def fake_tensorrt(major: int) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = {10: "10.14.1.48", 11: "11.1.0.8"}[major]
    trt.calls = []  # (what, argument) in the order the builder made them
    flags = ["TF32", "REFIT", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "STRIP_PLAN", "DIRECT_IO"]
    if major < 11:
        flags += ["FP16", "BF16", "INT8", "FP8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags, start=0)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", (["EXPLICIT_BATCH"] if major < 11 else []) + ["STRONGLY_TYPED"],
        start=0 if major < 11 else 1)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"], start=0)
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"], start=0)
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", ["ONELINE", "JSON"], start=0)

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity

    class TimingCache:
        def serialize(self):
            return b"timing cache"

    class Config:
        profiling_verbosity = None

        def set_memory_pool_limit(self, pool, size):
            trt.calls.append(("memory_pool", (pool, size)))

        def set_flag(self, flag):
            trt.calls.append(("set_flag", flag))

        def add_optimization_profile(self, profile):
            trt.calls.append(("profile", profile.shapes))

        def create_timing_cache(self, data):
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

        def get_timing_cache(self):
            return TimingCache()

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, minimum, opt, maximum):
            self.shapes[name] = (minimum, opt, maximum)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            trt.calls.append(("create_network", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.calls.append(("build", config.profiling_verbosity))
            return b"plan bytes"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            trt.calls.append(("parse", path))
            return True

    class Inspector:
        def get_engine_information(self, fmt):
            assert fmt == trt.LayerInformationFormat.JSON
            return json.dumps({"Layers": [{"Name": "conv", "LayerType": "CaskConvolution",
                                           "Outputs": [{"Format/Datatype": "Int8 NC/32HW32"}]}]})

    class Engine:
        def create_engine_inspector(self):
            return Inspector()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            assert data == b"plan bytes"
            return Engine()

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt
