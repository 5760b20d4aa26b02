"""The gpu flavour's preprocess on its GPU branch, in-process: DALI's outputs arrive as device tensors
(tests/gpu_standin/dlpack.py reports host memory as CUDA memory through DLPack), are taken by CuPy
without a copy, joined per request by device copies and handed on by DLPack."""

import importlib
import json
import sys

import numpy as np
import pytest

from tests.gpu_standin.dlpack import DeviceArray, fake_cupy, fake_pb_utils
from yolov6_build import contract as c

INPUT_HW = (320, 320)


@pytest.fixture
def gpu_preprocess(monkeypatch):
    """The preprocess module imported against the shims, and the DALI model's calls it made."""
    from yolov6_build.dali.pipeline import build_pipeline

    pipe = build_pipeline(INPUT_HW, 8, "cpu")
    pipe.build()
    dali_calls = []

    def dali_model(model_name, inputs):  # the DALI backend: one run per request, device outputs
        nonlocal pipe
        dali_calls.append(len(inputs[c.PREPROCESS_INPUT]))
        try:
            pipe.feed_input(c.PREPROCESS_INPUT, list(inputs[c.PREPROCESS_INPUT]))
            pipe.feed_input(c.PREPROCESS_INPUT_BYTES, list(inputs[c.PREPROCESS_INPUT_BYTES]))
            images, letterbox = (out.as_array() for out in pipe.run())
        except RuntimeError as exc:
            pipe = build_pipeline(INPUT_HW, 8, "cpu")
            pipe.build()
            return None, f"DALI error: {exc}".splitlines()[0]
        return {c.DETECTOR_INPUT: DeviceArray(images), c.PREPROCESS_LETTERBOX: DeviceArray(letterbox)}, None

    cupy, pb_utils = fake_cupy(), fake_pb_utils(dali_model)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb_utils)
    monkeypatch.delitem(sys.modules, "yolov6_build.triton_models.preprocess", raising=False)
    module = importlib.import_module("yolov6_build.triton_models.preprocess")
    yield module, cupy, pb_utils, dali_calls
    sys.modules.pop("yolov6_build.triton_models.preprocess", None)  # the next import sees the real backend


def _model(module, gpu_warmup="true"):
    from yolov6_build.repository import RepositoryConfig, preprocess_config
    from yolov6_build.synthetic import CLASS_NAMES
    from google.protobuf import json_format

    from yolov6_build.repository import parse_config

    text = preprocess_config(RepositoryConfig(flavour="gpu", class_names=CLASS_NAMES), 0)
    config = json_format.MessageToDict(parse_config(text), preserving_proto_field_name=True)
    config["parameters"]["gpu_warmup"] = {"string_value": gpu_warmup}
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config)})
    return model


def test_initialize_warms_cupy_and_dlpack_before_the_first_request(gpu_preprocess):
    module, cupy, _, dali_calls = gpu_preprocess
    _model(module)
    assert cupy.calls == ["alloc", "from_dlpack"] and dali_calls == []  # no BLS in initialize
    cupy.calls.clear()
    _model(module, gpu_warmup="false")
    assert cupy.calls == []


def test_device_outputs_are_joined_per_request_and_passed_on_by_dlpack(gpu_preprocess, images):
    from yolov6_build.dali.pipeline import CpuLetterbox

    module, cupy, pb_utils, dali_calls = gpu_preprocess
    model = _model(module)
    cupy.calls.clear()
    encoded = [p.read_bytes() for p in images[:3]]
    corrupt = encoded[0][: len(encoded[0]) // 3]

    def request(*payloads):
        rows = np.zeros((len(payloads), max(map(len, payloads))), np.uint8)  # a ragged batch, padded
        for row, data in zip(rows, payloads):
            row[:len(data)] = np.frombuffer(data, np.uint8)
        return pb_utils.InferenceRequest("yolov6_preprocess", [pb_utils.Tensor(c.PREPROCESS_INPUT, rows)], [])

    responses = model.execute([request(encoded[0], encoded[1]), request(corrupt), request(encoded[2])])
    assert dali_calls == [4, 3]  # one call with the whole batch; DALI failed it, the good three ran again as one
    assert responses[1].has_error() and "decode" in responses[1].error().message()
    expected = CpuLetterbox(INPUT_HW)([encoded[0], encoded[1], encoded[2]])
    for response, rows in ((responses[0], expected[:2]), (responses[2], expected[2:])):
        assert not response.has_error()
        images_out, letterbox_out = (pb_utils.get_output_tensor_by_name(response, name)
                                     for name in (c.DETECTOR_INPUT, c.PREPROCESS_LETTERBOX))
        assert not images_out.is_cpu() and not letterbox_out.is_cpu()  # still on the "device"
        np.testing.assert_array_equal(np.from_dlpack(images_out), np.stack([r[0] for r in rows]))
        np.testing.assert_array_equal(np.from_dlpack(letterbox_out), np.stack([r[1] for r in rows]))
    assert cupy.calls.count("memcpy") == 4  # two rows each of images and letterbox for the two-image request
