"""Render the Triton model repository (both flavours) from the contract and one RepositoryConfig.

Layout (``<out>/<model>/config.pbtxt`` and ``<out>/<model>/1/...``):
    yolov6             ensemble: image bytes -> num_detections, boxes, scores, classes
    yolov6_preprocess  Python: letterbox (cpu: OpenCV or the DALI pipeline in-process; gpu: BLS to yolov6_dali)
    yolov6_dali        gpu only: DALI backend, serialised mixed-decoder pipeline (model.dali)
    yolov6_detector    cpu: Python + OpenVINO or ONNX Runtime (model.onnx); gpu: TensorRT (model.plan)
    yolov6_nms         Python: numpy class-aware NMS and box mapping
Configs and model.py files are text and deterministic; model files are placed by ``build_repository``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import contract as c
from .errors import ConfigError
from .model.registry import STRIDES
from .pipeline import PREPROCESSORS, SERVED_PIXELS
from .runtime import RUNTIMES

FLAVOURS = ("cpu", "gpu")
# How long a dynamic batcher holds a request for company: 0 in both flavours. Under light load each of
# the three steps otherwise waited its full delay. cpu: without the 2 ms delays the demo model served 60
# instead of 47 req/s at c=1 and 108 instead of 95 at c=4, the same at c=16 (bench-serving's split). gpu,
# on the CPU stand-in (`make bench-gpu-standin`): 1.39x at c=1, 1.33x at c=4, 1.03x at c=16 over 2 ms
# delays. A busy instance still lets batches form.
QUEUE_DELAY_US = 0
# yolov6_dali's only callers are the preprocess instances, each blocked on its BLS call: a delay cannot gather
# a second request from the same instance, only idle every call. 0 still merges what other instances queued.
DALI_QUEUE_DELAY_US = 0
# The letterboxed images between the preprocess and detector steps. cpu: uint8 pixels, a quarter of
# float32's bytes through the stubs' shared memory (docs/benchmarks.md). gpu: float32, what DALI hands
# TensorRT on the device.
PIXELS = {"cpu": SERVED_PIXELS, "gpu": "float32"}
TRITON_DTYPES = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8"}
WARMUP_FILE = "warmup_image.jpg"
WARMUP_LETTERBOX_FILE = "letterbox.bin"  # raw float32 [6] of a valid letterbox (zeros are not one)
WARMUP_BYTES_FILE = "image_bytes.bin"  # raw int32 [1]: the warm-up JPEG's length (the DALI model's second input)
_MODELS_DIR = Path(__file__).parent / "triton_models"


@dataclass(frozen=True)
class RepositoryConfig:
    """Everything the generated configs depend on. Defaults are the demo's."""

    flavour: str = "cpu"
    input_hw: tuple[int, int] = (320, 320)
    class_names: tuple[str, ...] = field(default_factory=tuple)
    max_batch_size: int = 8
    max_queue_delay_us: int = QUEUE_DELAY_US
    preprocess_instances: int = 1
    detector_instances: int = 1
    nms_instances: int = 1
    topk: int = c.DEFAULT_TOPK
    conf_threshold: float = c.SERVE_CONF_THRESHOLD
    iou_threshold: float = c.SERVE_IOU_THRESHOLD
    max_detections: int = c.SERVE_MAX_DETECTIONS
    intra_op_threads: int = 0  # detector threads per instance; 0 = the CPUs the process may use (cpus.py)
    detector_runtime: str = "openvino"  # cpu flavour: runtime.RUNTIMES; faster at equal mAP (docs/benchmarks.md)
    dali_threads: int = 2  # CPU threads of the DALI pipeline (both flavours)
    cpu_preprocess: str = "opencv"  # cpu flavour: pipeline.PREPROCESSORS; opencv has no per-batch cost (docs/serving.md)
    strides: tuple[int, ...] = STRIDES  # the detector's head levels (P6 models add 64)

    def __post_init__(self):
        object.__setattr__(self, "strides", tuple(self.strides))  # a list when read back from repository.json
        if self.flavour not in FLAVOURS:
            raise ConfigError(f"flavour must be one of {FLAVOURS}, got {self.flavour!r}")
        step = max(self.strides)
        if any(v % step or v <= 0 for v in self.input_hw):
            raise ConfigError(f"input size must be positive multiples of {step} (the largest stride), "
                              f"got {self.input_hw}")
        if not self.class_names:
            raise ConfigError("class_names must not be empty")
        for name in ("max_batch_size", "preprocess_instances", "detector_instances", "nms_instances", "topk",
                     "max_detections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cpu_preprocess not in PREPROCESSORS:
            raise ConfigError(f"cpu_preprocess must be one of {PREPROCESSORS}, got {self.cpu_preprocess!r}")
        if self.detector_runtime not in RUNTIMES:
            raise ConfigError(f"detector_runtime must be one of {RUNTIMES}, got {self.detector_runtime!r}")
        if self.max_detections > self.topk:
            raise ConfigError(f"max_detections ({self.max_detections}) cannot exceed topk ({self.topk})")

    @property
    def num_candidates(self) -> int:
        """K of the detector graph: top-k capped by the anchor count at this input size."""
        h, w = self.input_hw
        return min(self.topk, sum((h // s) * (w // s) for s in self.strides))


# ---------------------------------------------------------------- pbtxt pieces


def _tensor(name: str, dtype: str, dims, extra: str = "") -> str:
    return f'  {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(str(d) for d in dims)} ]{extra} }}'


def _io(kind: str, tensors: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]\n"


def _parameters(values: dict) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: {json.dumps(str(v))} }} }}\n'
                   for k, v in values.items())


def _header(name: str, backend: str, cfg: RepositoryConfig, platform: bool = False) -> str:
    kind = "platform" if platform else "backend"
    return f'name: "{name}"\n{kind}: "{backend}"\nmax_batch_size: {cfg.max_batch_size}\n'


def _dynamic_batching(delay_us: int) -> str:
    return f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n"


def _instances(count: int, kind: str) -> str:
    return f"instance_group [ {{ count: {count} kind: {kind} }} ]\n"


def _candidate_tensors(cfg: RepositoryConfig) -> list[str]:
    k = cfg.num_candidates
    return [_tensor(c.CANDIDATE_BOXES, "TYPE_FP32", [k, 4]), _tensor(c.CANDIDATE_SCORES, "TYPE_FP32", [k]),
            _tensor(c.CANDIDATE_CLASSES, "TYPE_INT32", [k])]


def _detection_tensors(cfg: RepositoryConfig) -> list[str]:
    d = cfg.max_detections
    return [_tensor(c.NUM_DETECTIONS, "TYPE_INT32", [1]), _tensor(c.DET_BOXES, "TYPE_FP32", [d, 4]),
            _tensor(c.DET_SCORES, "TYPE_FP32", [d]), _tensor(c.DET_CLASSES, "TYPE_INT32", [d])]


def _image_input() -> str:
    return _tensor(c.PREPROCESS_INPUT, "TYPE_UINT8", [-1], " allow_ragged_batch: true")


def _images_dtype(cfg: RepositoryConfig, pixels: str | None = None) -> str:
    """The Triton type of the letterboxed images: ``pixels``, else the flavour's (``PIXELS``)."""
    return TRITON_DTYPES[pixels or PIXELS[cfg.flavour]]


def _images_tensor(cfg: RepositoryConfig, pixels: str | None = None) -> str:
    return _tensor(c.DETECTOR_INPUT, _images_dtype(cfg, pixels), [3, *cfg.input_hw])


def _preprocess_outputs(cfg: RepositoryConfig, pixels: str | None = None) -> list[str]:
    return [_images_tensor(cfg, pixels),
            _tensor(c.PREPROCESS_LETTERBOX, "TYPE_FP32", [6])]


def _jpeg_warmup(input_name: str, warmup_bytes: int, length_input: str | None = None) -> str:
    inputs = (f'inputs {{ key: "{input_name}" value: {{ data_type: TYPE_UINT8 dims: [ {warmup_bytes} ] '
              f'input_data_file: "{WARMUP_FILE}" }} }}')
    if length_input:
        inputs += (f' inputs {{ key: "{length_input}" value: {{ data_type: TYPE_INT32 dims: [ 1 ] '
                   f'input_data_file: "{WARMUP_BYTES_FILE}" }} }}')
    return f'model_warmup [ {{ name: "jpeg" batch_size: 1 {inputs} }} ]\n'


def _zero_warmup(inputs: dict[str, tuple[str, list[int]]], files: dict[str, str] | None = None) -> str:
    """Warm-up with zeros, except inputs named in ``files`` (read from ``<model>/warmup/<file>``)."""
    files = files or {}
    source = {n: f'input_data_file: "{files[n]}"' if n in files else "zero_data: true" for n in inputs}
    parts = " ".join(f'inputs {{ key: "{n}" value: {{ data_type: {t} dims: [ {", ".join(map(str, d))} ] '
                     f'{source[n]} }} }}' for n, (t, d) in inputs.items())
    return f'model_warmup [ {{ name: "sample" batch_size: 1 {parts} }} ]\n'


# ---------------------------------------------------------------- per-model configs


def preprocess_config(cfg: RepositoryConfig, warmup_bytes: int, pixels: str | None = None) -> str:
    """``pixels``: the image form handed to the detector; by default the flavour's (``PIXELS``)."""
    pixels = pixels or PIXELS[cfg.flavour]
    params = {"input_height": cfg.input_hw[0], "input_width": cfg.input_hw[1]}
    if cfg.flavour == "cpu":
        params.update(executor=cfg.cpu_preprocess, pixels=pixels)  # a pipeline.PREPROCESSORS kind, in the stub
        if cfg.cpu_preprocess == "dali":
            params.update(dali_batch_size=cfg.max_batch_size, dali_threads=cfg.dali_threads)
    else:
        params.update(executor="bls", dali_model=c.DALI_MODEL)
    return (_header(c.PREPROCESS_MODEL, "python", cfg) + _io("input", [_image_input()])
            + _io("output", _preprocess_outputs(cfg, pixels)) + _dynamic_batching(cfg.max_queue_delay_us)
            + _instances(cfg.preprocess_instances, "KIND_CPU") + _parameters(params)
            + ("" if cfg.flavour == "gpu" else _jpeg_warmup(c.PREPROCESS_INPUT, warmup_bytes)))


def dali_config(cfg: RepositoryConfig, warmup_bytes: int) -> str:
    inputs = [_image_input(), _tensor(c.PREPROCESS_INPUT_BYTES, "TYPE_INT32", [1])]
    return (_header(c.DALI_MODEL, "dali", cfg) + _io("input", inputs)
            + _io("output", _preprocess_outputs(cfg)) + _dynamic_batching(DALI_QUEUE_DELAY_US)
            + _instances(1, "KIND_GPU")
            + _parameters({"num_threads": cfg.dali_threads})  # the backend's override of the pipeline's threads
            + _jpeg_warmup(c.PREPROCESS_INPUT, warmup_bytes, c.PREPROCESS_INPUT_BYTES))


def detector_config(cfg: RepositoryConfig) -> str:
    inputs = [_images_tensor(cfg)]
    warmup = _zero_warmup({c.DETECTOR_INPUT: (_images_dtype(cfg), [3, *cfg.input_hw])})
    if cfg.flavour == "cpu":
        head = _header(c.DETECTOR_MODEL, "python", cfg)
        tail = (_instances(cfg.detector_instances, "KIND_CPU")
                + _parameters({"onnx_file": "model.onnx", "runtime": cfg.detector_runtime,
                               "intra_op_threads": cfg.intra_op_threads}))
    else:
        head = _header(c.DETECTOR_MODEL, "tensorrt_plan", cfg, platform=True)
        tail = _instances(cfg.detector_instances, "KIND_GPU")
    return (head + _io("input", inputs) + _io("output", _candidate_tensors(cfg))
            + _dynamic_batching(cfg.max_queue_delay_us) + tail + warmup)


def nms_config(cfg: RepositoryConfig) -> str:
    k = cfg.num_candidates
    warmup = _zero_warmup({c.CANDIDATE_BOXES: ("TYPE_FP32", [k, 4]), c.CANDIDATE_SCORES: ("TYPE_FP32", [k]),
                           c.CANDIDATE_CLASSES: ("TYPE_INT32", [k]), c.PREPROCESS_LETTERBOX: ("TYPE_FP32", [6])},
                          {c.PREPROCESS_LETTERBOX: WARMUP_LETTERBOX_FILE})
    params = {"conf_threshold": cfg.conf_threshold, "iou_threshold": cfg.iou_threshold,
              "max_detections": cfg.max_detections}
    return (_header(c.NMS_MODEL, "python", cfg)
            + _io("input", [*_candidate_tensors(cfg), _tensor(c.PREPROCESS_LETTERBOX, "TYPE_FP32", [6])])
            + _io("output", _detection_tensors(cfg)) + _dynamic_batching(cfg.max_queue_delay_us)
            + _instances(cfg.nms_instances, "KIND_CPU") + _parameters(params) + warmup)


def _step(model: str, inputs: list[str], outputs: list[str]) -> str:
    maps = "".join(f' input_map {{ key: "{n}" value: "{n}" }}' for n in inputs)
    maps += "".join(f' output_map {{ key: "{n}" value: "{n}" }}' for n in outputs)
    return f'    {{ model_name: "{model}" model_version: -1{maps} }}'


def ensemble_config(cfg: RepositoryConfig) -> str:
    candidates = [c.CANDIDATE_BOXES, c.CANDIDATE_SCORES, c.CANDIDATE_CLASSES]
    detections = [c.NUM_DETECTIONS, c.DET_BOXES, c.DET_SCORES, c.DET_CLASSES]
    steps = [_step(c.PREPROCESS_MODEL, [c.PREPROCESS_INPUT], [c.DETECTOR_INPUT, c.PREPROCESS_LETTERBOX]),
             _step(c.DETECTOR_MODEL, [c.DETECTOR_INPUT], candidates),
             _step(c.NMS_MODEL, [*candidates, c.PREPROCESS_LETTERBOX], detections)]
    return (_header(c.ENSEMBLE_MODEL, "ensemble", cfg, platform=True)
            + _io("input", [_tensor(c.PREPROCESS_INPUT, "TYPE_UINT8", [-1])])
            + _io("output", _detection_tensors(cfg))
            + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
            + _parameters({"class_names": json.dumps(list(cfg.class_names)),
                           "input_size": f"{cfg.input_hw[0]}x{cfg.input_hw[1]}"}))


def _model_py(module: str) -> str:
    """A model.py that serves a backend class of the installed package (one implementation, no copies)."""
    doc = (_MODELS_DIR / f"{module}.py").read_text().split('"""')[1].strip().splitlines()[0]
    return (f'"""{doc}\n\nGenerated by yolov6_build.repository; the implementation lives in the installed package.\n"""\n\n'
            f"from yolov6_build.triton_models.{module} import TritonPythonModel  # noqa: F401\n")


def render_repository(cfg: RepositoryConfig, warmup_bytes: int) -> dict[str, str]:
    """Relative path -> text of every config.pbtxt and model.py of the flavour."""
    files = {
        f"{c.ENSEMBLE_MODEL}/config.pbtxt": ensemble_config(cfg),
        f"{c.ENSEMBLE_MODEL}/1/.gitkeep": "",  # Triton needs a version folder, even for an ensemble
        f"{c.PREPROCESS_MODEL}/config.pbtxt": preprocess_config(cfg, warmup_bytes),
        f"{c.PREPROCESS_MODEL}/1/model.py": _model_py("preprocess"),
        f"{c.DETECTOR_MODEL}/config.pbtxt": detector_config(cfg),
        f"{c.NMS_MODEL}/config.pbtxt": nms_config(cfg),
        f"{c.NMS_MODEL}/1/model.py": _model_py("nms"),
    }
    if cfg.flavour == "cpu":
        files[f"{c.DETECTOR_MODEL}/1/model.py"] = _model_py("detector_cpu")
    else:
        files[f"{c.DALI_MODEL}/config.pbtxt"] = dali_config(cfg, warmup_bytes)
    return files


def warmup_models(cfg: RepositoryConfig) -> list[str]:
    """Models whose config names the warm-up JPEG (it lives in ``<model>/warmup/``)."""
    return [c.PREPROCESS_MODEL] if cfg.flavour == "cpu" else [c.DALI_MODEL]


def write_repository(cfg: RepositoryConfig, out_dir: Path, warmup_jpeg: bytes) -> list[Path]:
    """Write configs, model.py files and warm-up images; returns written paths. Model files are separate."""
    out_dir = Path(out_dir)
    written = []
    for rel, text in render_repository(cfg, len(warmup_jpeg)).items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    warmup_files = {(m, WARMUP_FILE): warmup_jpeg for m in warmup_models(cfg)}
    if cfg.flavour == "gpu":
        warmup_files[(c.DALI_MODEL, WARMUP_BYTES_FILE)] = np.array([len(warmup_jpeg)], dtype="<i4").tobytes()
    identity = np.array([*cfg.input_hw, *cfg.input_hw, 0, 0], dtype="<f4")
    warmup_files[(c.NMS_MODEL, WARMUP_LETTERBOX_FILE)] = identity.tobytes()
    for (model, name), data in warmup_files.items():
        path = out_dir / model / "warmup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    (out_dir / "repository.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return written


def remove_stale(out_dir: Path, cfg: RepositoryConfig) -> None:
    """Drop model folders of the other flavour (e.g. yolov6_dali in a cpu repository)."""
    keep = {Path(rel).parts[0] for rel in render_repository(cfg, 1)}
    for child in Path(out_dir).iterdir() if Path(out_dir).is_dir() else []:
        if child.is_dir() and child.name.startswith(c.ENSEMBLE_MODEL) and child.name not in keep:
            shutil.rmtree(child)


# ---------------------------------------------------------------- validation


def parse_config(text: str):
    """Parse config.pbtxt text with Triton's own ModelConfig protobuf (shipped in tritonclient)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def check_ensemble_wiring(configs: dict) -> list[str]:
    """Problems in the ensemble's data flow: unknown models/tensors, dtype or dims mismatches.

    ``configs`` maps model name -> parsed ModelConfig. Returns [] when consistent.
    """
    problems = []
    ensemble = configs[c.ENSEMBLE_MODEL]
    available = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs.get(step.model_name)
        if model is None:
            problems.append(f"step model {step.model_name!r} has no config")
            continue
        inputs = {t.name: (t.data_type, list(t.dims)) for t in model.input}
        outputs = {t.name: (t.data_type, list(t.dims)) for t in model.output}
        for key, value in step.input_map.items():
            if key not in inputs:
                problems.append(f"{step.model_name} has no input {key!r}")
            elif value not in available:
                problems.append(f"{step.model_name}.{key} reads {value!r}, which no earlier step produces")
            elif available[value] != inputs[key]:
                problems.append(f"{step.model_name}.{key} expects {inputs[key]}, gets {available[value]}")
        missing = set(inputs) - set(step.input_map)
        if missing:
            problems.append(f"{step.model_name} inputs not fed: {sorted(missing)}")
        for key, value in step.output_map.items():
            if key not in outputs:
                problems.append(f"{step.model_name} has no output {key!r}")
            else:
                available[value] = outputs[key]
        if model.max_batch_size != ensemble.max_batch_size:
            problems.append(f"{step.model_name} max_batch_size {model.max_batch_size} != ensemble's "
                            f"{ensemble.max_batch_size}")
    for tensor in ensemble.output:
        if available.get(tensor.name) != (tensor.data_type, list(tensor.dims)):
            problems.append(f"ensemble output {tensor.name!r} {list(tensor.dims)} not produced as declared")
    return problems


def parse_repository(cfg: RepositoryConfig, warmup_bytes: int = 1) -> dict:
    """Render and parse every config of the flavour: model name -> ModelConfig."""
    return {rel.split("/")[0]: parse_config(text) for rel, text in render_repository(cfg, warmup_bytes).items()
            if rel.endswith("config.pbtxt")}
