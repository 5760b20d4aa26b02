"""Stand-in for the DALI backend model ``yolov6_dali`` (tests only: the DALI backend needs a GPU).

Same name, inputs and outputs, the same pipeline definition and executor settings, run on CPU. It
behaves as dali_backend r26.06 does where our code depends on it: the requests of a dynamic batch
form one DALI batch, and when any sample fails, every request of that batch gets the error
(src/dali_model_instance.cc: one error for all responses) and the pipeline is rebuilt.
It also counts the images per request it receives (metric ``standin_dali_requests``) and its pipeline
rebuilds (``standin_dali_resets``), so tests can see how the preprocess sends its batches and what a
bad image costs.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from yolov6_build import contract
from yolov6_build.dali.pipeline import build_pipeline


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        dims = next(o["dims"] for o in config["output"] if o["name"] == contract.DETECTOR_INPUT)
        self.input_hw = (int(dims[1]), int(dims[2]))
        self.max_batch_size = int(config["max_batch_size"])
        self.pipe = self._pipeline()
        self.requests = pb_utils.MetricFamily(name="standin_dali_requests", description="requests by images in them",
                                              kind=pb_utils.MetricFamily.COUNTER)
        # the family must stay referenced: Triton drops a metric whose family object is gone
        self.reset_family = pb_utils.MetricFamily(name="standin_dali_resets", description="pipeline rebuilds after an error",
                                                  kind=pb_utils.MetricFamily.COUNTER)
        self.resets = self.reset_family.Metric(labels={"cause": "error"})

    def _pipeline(self):
        pipe = build_pipeline(self.input_hw, self.max_batch_size, "cpu")
        pipe.build()
        return pipe

    def execute(self, requests):
        rows, lengths, counts = [], [], []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, contract.PREPROCESS_INPUT).as_numpy()
            size = pb_utils.get_input_tensor_by_name(request, contract.PREPROCESS_INPUT_BYTES).as_numpy()
            rows.extend(np.ascontiguousarray(row) for row in data)
            lengths.extend(np.ascontiguousarray(n, dtype=np.int32).reshape(1) for n in size)
            counts.append(len(data))
            self.requests.Metric(labels={"images": str(len(data))}).increment(1)
        try:
            self.pipe.feed_input(contract.PREPROCESS_INPUT, rows)
            self.pipe.feed_input(contract.PREPROCESS_INPUT_BYTES, lengths)
            images, letterbox = (out.as_array() for out in self.pipe.run())
        except RuntimeError as exc:
            self.pipe = self._pipeline()
            self.resets.increment(1)
            error = pb_utils.TritonError(f"DALI error: {str(exc).splitlines()[0]}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for count in counts:
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(contract.DETECTOR_INPUT, images[start:start + count]),
                pb_utils.Tensor(contract.PREPROCESS_LETTERBOX, letterbox[start:start + count].astype(np.float32))]))
            start += count
        return responses
