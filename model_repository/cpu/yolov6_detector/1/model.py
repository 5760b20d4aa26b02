"""Triton Python backend: the detector graph on ONNX Runtime (CPU flavour; INT8 QDQ or FP32 ONNX).

All requests of a dynamic batch run in one session call.
"""

import os

import numpy as np
import triton_python_backend_utils as pb_utils

from yolov6_build import contract
from yolov6_build.triton_models.common import config_parameters

OUTPUTS = (contract.CANDIDATE_BOXES, contract.CANDIDATE_SCORES, contract.CANDIDATE_CLASSES)


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        params = config_parameters(args)
        path = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0")) or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, contract.DETECTOR_INPUT).as_numpy() for r in requests]
        outputs = self.session.run(list(OUTPUTS), {contract.DETECTOR_INPUT: np.concatenate(batches)})
        responses, start = [], 0
        for batch in batches:
            stop = start + len(batch)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, np.ascontiguousarray(value[start:stop])) for name, value in zip(OUTPUTS, outputs)]))
            start = stop
        return responses
