"""Generated Triton configs: parse with Triton's protobuf, consistent wiring, committed copy up to date."""

from dataclasses import replace
from pathlib import Path

import pytest

from yolov6_build import contract as c
from yolov6_build.repository import (RepositoryConfig, check_ensemble_wiring, parse_repository, render_repository,
                                     WARMUP_FILE)
from yolov6_build.build_repo import WARMUP_JPEG
from yolov6_build.synthetic import CLASS_NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]


def demo_config(flavour):
    return RepositoryConfig(flavour=flavour, class_names=CLASS_NAMES)


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_configs_parse_and_wire(flavour):
    configs = parse_repository(demo_config(flavour))
    expected = {c.ENSEMBLE_MODEL, c.PREPROCESS_MODEL, c.DETECTOR_MODEL, c.NMS_MODEL}
    assert set(configs) == expected | ({c.DALI_MODEL} if flavour == "gpu" else set())
    assert check_ensemble_wiring(configs) == []
    for name, config in configs.items():
        assert config.name == name
    detector = configs[c.DETECTOR_MODEL]
    if flavour == "gpu":
        assert detector.platform == "tensorrt_plan" and configs[c.DALI_MODEL].backend == "dali"
        assert detector.instance_group[0].kind == detector.instance_group[0].KIND_GPU
    else:
        assert detector.backend == "python"
        assert configs[c.PREPROCESS_MODEL].parameters["executor"].string_value == "opencv"


def test_wiring_check_finds_mismatches():
    configs = parse_repository(demo_config("cpu"))
    configs[c.NMS_MODEL].input[0].dims[0] = 7  # candidate count differs from the detector's
    configs[c.PREPROCESS_MODEL].output[1].name = "geometry"
    problems = check_ensemble_wiring(configs)
    assert any("candidate_boxes" in p and "expects" in p for p in problems)
    assert any("no output 'letterbox'" in p for p in problems)


def test_options_reach_the_configs():
    cfg = replace(demo_config("cpu"), max_batch_size=4, detector_instances=3, input_hw=(384, 640), max_detections=50)
    configs = parse_repository(cfg)
    assert all(m.max_batch_size == 4 for m in configs.values())
    assert configs[c.DETECTOR_MODEL].instance_group[0].count == 3
    assert list(configs[c.DETECTOR_MODEL].input[0].dims) == [3, 384, 640]
    assert list(configs[c.ENSEMBLE_MODEL].output[1].dims) == [50, 4]
    assert list(configs[c.NMS_MODEL].input[1].dims) == [cfg.num_candidates]
    assert check_ensemble_wiring(configs) == []


def test_invalid_options_are_rejected():
    from yolov6_build.errors import ConfigError

    with pytest.raises(ConfigError, match="multiples of 32"):
        replace(demo_config("cpu"), input_hw=(300, 320))
    with pytest.raises(ConfigError, match="flavour"):
        replace(demo_config("cpu"), flavour="tpu")
    with pytest.raises(ConfigError, match="cpu_preprocess"):
        replace(demo_config("cpu"), cpu_preprocess="pillow")


def test_cpu_preprocess_choice_reaches_the_preprocess_model():
    """opencv (the default) needs no DALI settings; dali carries the pipeline's batch and threads."""
    params = {kind: parse_repository(replace(demo_config("cpu"), cpu_preprocess=kind))[c.PREPROCESS_MODEL].parameters
              for kind in ("opencv", "dali")}
    assert params["opencv"]["executor"].string_value == "opencv" and "dali_threads" not in params["opencv"]
    assert params["dali"]["executor"].string_value == "dali" and params["dali"]["dali_batch_size"].string_value == "8"


def test_cpu_flavour_hands_uint8_pixels_to_its_detector_and_gpu_float():
    """cpu: the preprocess step letterboxes to uint8 and the detector (warm-up included) reads uint8; gpu:
    DALI hands TensorRT float32."""
    from tritonclient.grpc import model_config_pb2

    for flavour, dtype in (("cpu", model_config_pb2.TYPE_UINT8), ("gpu", model_config_pb2.TYPE_FP32)):
        configs = parse_repository(demo_config(flavour))
        producer = configs[c.PREPROCESS_MODEL if flavour == "cpu" else c.DALI_MODEL]
        assert {t.name: t.data_type for t in producer.output}[c.DETECTOR_INPUT] == dtype
        detector = configs[c.DETECTOR_MODEL]
        assert detector.input[0].data_type == dtype
        assert detector.model_warmup[0].inputs[c.DETECTOR_INPUT].data_type == dtype
    cpu_preprocess = parse_repository(demo_config("cpu"))[c.PREPROCESS_MODEL]
    assert cpu_preprocess.parameters["pixels"].string_value == "uint8"


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_committed_repository_is_up_to_date(flavour):
    """model_repository/<flavour> holds the demo configs; regenerate with `make build-repo`."""
    root = REPO_ROOT / "model_repository" / flavour
    for rel, text in render_repository(demo_config(flavour), len(WARMUP_JPEG.read_bytes())).items():
        path = root / rel
        assert path.is_file(), f"{path} missing: run `make build-repo`"
        assert path.read_text() == text, f"{path} is stale: run `make build-repo`"
    warmup_model = c.PREPROCESS_MODEL if flavour == "cpu" else c.DALI_MODEL
    assert (root / warmup_model / "warmup" / WARMUP_FILE).read_bytes() == WARMUP_JPEG.read_bytes()


def test_dali_model_never_waits_for_company():
    """yolov6_dali's callers block on their BLS call: a batching delay there only idles every call."""
    configs = parse_repository(replace(demo_config("gpu"), max_queue_delay_us=2000))
    assert configs[c.DALI_MODEL].dynamic_batching.max_queue_delay_microseconds == 0
    assert configs[c.DETECTOR_MODEL].dynamic_batching.max_queue_delay_microseconds == 2000
