"""The single source of tensor names, dtypes and Triton model names shared by every stage.

The ONNX graph, the Triton configs, the DALI pipeline, the NMS backend and the clients all read
these constants; nothing else spells a tensor name.
"""

# Detector (ONNX / TensorRT plan)
DETECTOR_INPUT = "images"  # float32 [B, 3, H, W], RGB, /255, letterboxed
DETECTOR_OUTPUT = "outputs"  # float32 [B, N, 5+nc]: cx, cy, w, h, 1, class scores (input pixels)

DEFAULT_INPUT_HW = (640, 640)
ONNX_OPSET = 17
