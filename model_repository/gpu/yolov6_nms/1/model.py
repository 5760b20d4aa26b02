"""Triton Python backend: class-aware NMS on the detector's candidates, boxes back to original pixels.

Thresholds come from the config parameters and can be overridden per request with the request
parameters ``conf_threshold``, ``iou_threshold`` and ``max_detections`` (capped by the output size).
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from yolov6_build import contract
from yolov6_build.postprocess import detections_for_image, pad_detections
from yolov6_build.triton_models.common import config_parameters, error_response, request_parameters

INPUTS = (contract.CANDIDATE_BOXES, contract.CANDIDATE_SCORES, contract.CANDIDATE_CLASSES,
          contract.PREPROCESS_LETTERBOX)
OUTPUTS = (contract.NUM_DETECTIONS, contract.DET_BOXES, contract.DET_SCORES, contract.DET_CLASSES)


class TritonPythonModel:
    def initialize(self, args):
        params = config_parameters(args)
        self.defaults = {"conf_threshold": float(params["conf_threshold"]),
                         "iou_threshold": float(params["iou_threshold"]),
                         "max_detections": int(params["max_detections"])}
        self.output_size = self.defaults["max_detections"]

    def _thresholds(self, request) -> tuple[float, float, int]:
        values = dict(self.defaults)
        for key, value in request_parameters(request).items():
            if key in values:
                values[key] = type(self.defaults[key])(value)
        if not 0.0 <= values["conf_threshold"] <= 1.0 or not 0.0 <= values["iou_threshold"] <= 1.0:
            raise ValueError("conf_threshold and iou_threshold must lie in [0, 1]")
        if not 1 <= values["max_detections"] <= self.output_size:
            raise ValueError(f"max_detections must lie in [1, {self.output_size}]")
        return values["conf_threshold"], values["iou_threshold"], values["max_detections"]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._respond(request))
            except ValueError as exc:  # a bad request fails alone
                responses.append(error_response(pb_utils, str(exc)))
        return responses

    def _respond(self, request):
        conf, iou, max_det = self._thresholds(request)
        boxes, scores, classes, letterbox = (pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                                             for name in INPUTS)
        padded = [pad_detections(detections_for_image(boxes[i], scores[i], classes[i], letterbox[i], conf, iou, max_det),
                                 self.output_size) for i in range(len(boxes))]
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, np.stack([p[j] for p in padded])) for j, name in enumerate(OUTPUTS)])
