"""Triton Python backend: encoded image bytes -> letterboxed network input + letterbox geometry.

``executor`` parameter: ``dali_cpu`` runs the DALI pipeline in-process on CPU (embedded server);
``bls`` sends each image to the DALI backend model named by ``dali_model`` (GPU flavour). Either
way a batch with an undecodable image is retried image by image, so only that request fails.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from yolov6_build import contract
from yolov6_build.inputs import check_encoded_image
from yolov6_build.triton_models.common import config_parameters, error_response


class BlsLetterbox:
    """Letterbox through the DALI backend model: one async BLS request per image, retry failures alone.

    Outputs are requested in CPU memory so requests of several images can be stacked with numpy;
    this costs a device-to-host copy per image (see README, known limits).
    """

    def __init__(self, model_name: str):
        self.model_name = model_name

    def _request(self, encoded: np.ndarray):
        tensor = pb_utils.Tensor(contract.PREPROCESS_INPUT, encoded.reshape(1, -1))
        return pb_utils.InferenceRequest(model_name=self.model_name, inputs=[tensor],
                                         requested_output_names=[contract.DETECTOR_INPUT,
                                                                 contract.PREPROCESS_LETTERBOX],
                                         preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0))

    def _result(self, response):
        if response.has_error():
            return ValueError(f"cannot decode image: {response.error().message()}")
        images = pb_utils.get_output_tensor_by_name(response, contract.DETECTOR_INPUT)
        letterbox = pb_utils.get_output_tensor_by_name(response, contract.PREPROCESS_LETTERBOX)
        return images.as_numpy()[0], letterbox.as_numpy()[0]

    def __call__(self, encoded: list[np.ndarray]):
        first_pass = self._run_async(encoded)
        # DALI fails its whole batch when one image is bad: retry each failed image on its own
        return [self._result(self._request(e).exec()) if isinstance(r, Exception) else r
                for e, r in zip(encoded, first_pass)]

    def _run_async(self, encoded):
        import asyncio

        async def run_all():
            return await asyncio.gather(*(self._request(e).async_exec() for e in encoded))

        return [self._result(r) for r in asyncio.run(run_all())]


class TritonPythonModel:
    def initialize(self, args):
        params = config_parameters(args)
        input_hw = (int(params["input_height"]), int(params["input_width"]))
        if params.get("executor", "dali_cpu") == "bls":
            self.letterbox = BlsLetterbox(params["dali_model"])
        else:
            from yolov6_build.dali.pipeline import CpuLetterbox

            self.letterbox = CpuLetterbox(input_hw, int(params.get("dali_batch_size", 8)),
                                          int(params.get("dali_threads", 2)))

    def execute(self, requests):
        per_request, flat = [], []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, contract.PREPROCESS_INPUT).as_numpy()
            per_request.append(len(rows))
            flat.extend(rows)
        checked = [check_encoded_image(row) for row in flat]
        to_decode = [row for row, problem in zip(flat, checked) if problem is None]
        decoded = iter(self.letterbox(to_decode) if to_decode else [])
        results = [problem if problem is not None else next(decoded) for problem in checked]

        responses, start = [], 0
        for count in per_request:
            mine = results[start:start + count]
            start += count
            failure = next((r for r in mine if isinstance(r, Exception)), None)
            if failure is not None:
                responses.append(error_response(pb_utils, str(failure)))
                continue
            images = np.stack([r[0] for r in mine]).astype(np.float32)
            letterbox = np.stack([r[1] for r in mine]).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(contract.DETECTOR_INPUT, images),
                pb_utils.Tensor(contract.PREPROCESS_LETTERBOX, letterbox)]))
        return responses
