"""Triton Python backend: the detector graph on the CPU, run by OpenVINO or ONNX Runtime (``runtime``).

The graph is the bundle's INT8 model (or FP32); all requests of a dynamic batch run in one call. Images
arrive as uint8 pixels; a graph that reads float gets them as float (``runtime.as_pixels``).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from yolov6_build import contract
from yolov6_build.runtime import OUTPUTS, load_detector
from yolov6_build.triton_models.common import config_parameters


class TritonPythonModel:
    def initialize(self, args):
        params = config_parameters(args)
        path = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx"))
        self.detector = load_detector(path, params.get("runtime", "ort"), int(params.get("intra_op_threads", "0")))
        if hasattr(self.detector, "compile_batches"):  # OpenVINO: one static-shape compile per batch size, now
            self.detector.compile_batches(max(1, json.loads(args["model_config"])["max_batch_size"]))

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, contract.DETECTOR_INPUT).as_numpy() for r in requests]
        outputs = self.detector(np.concatenate(batches))
        responses, start = [], 0
        for batch in batches:
            stop = start + len(batch)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, np.ascontiguousarray(value[start:stop])) for name, value in zip(OUTPUTS, outputs)]))
            start = stop
        return responses
