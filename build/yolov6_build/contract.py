"""The single source of tensor names, dtypes and Triton model names shared by every stage.

The ONNX graph, the Triton configs, the DALI pipeline, the NMS backend and the clients all read
these constants; nothing else spells a tensor name.
"""

# Detector (ONNX / TensorRT plan)
# [B, 3, H, W] RGB letterboxed: float32 / 255 (exported graphs, TensorRT) or uint8 (the CPU form of the
# INT8 graph, and what the CPU flavour's preprocess step hands its detector: runtime.as_pixels)
DETECTOR_INPUT = "images"
DETECTOR_OUTPUT = "outputs"  # float32 [B, N, 5+nc]: cx, cy, w, h, 1, class scores (input pixels)

DEFAULT_INPUT_HW = (640, 640)
ONNX_OPSET = 17

# Preprocess (DALI): encoded image bytes in, network input and letterbox geometry out
PREPROCESS_INPUT = "image"  # uint8 [L] encoded JPEG/PNG bytes, one image per batch item
# DALI model only: int32 [1] bytes of each ``image`` row that are the image (a batch pads rows to one length)
PREPROCESS_INPUT_BYTES = "image_bytes"
PREPROCESS_LETTERBOX = "letterbox"  # float32 [6]: src_h, src_w, new_h, new_w, pad_top, pad_left

# Detector graph with candidate selection inside (what crosses to NMS is top-k, not N x (5+nc))
CANDIDATE_BOXES = "candidate_boxes"  # float32 [K, 4] x1, y1, x2, y2 in network-input pixels
CANDIDATE_SCORES = "candidate_scores"  # float32 [K] best class score per candidate
CANDIDATE_CLASSES = "candidate_classes"  # int32 [K] best class id per candidate
DEFAULT_TOPK = 1000

# NMS / ensemble outputs (fixed size, padded with zeros past num_detections)
NUM_DETECTIONS = "num_detections"  # int32 [1]
DET_BOXES = "boxes"  # float32 [max_det, 4] x1, y1, x2, y2 in original-image pixels
DET_SCORES = "scores"  # float32 [max_det]
DET_CLASSES = "classes"  # int32 [max_det]

# Triton model names
ENSEMBLE_MODEL = "yolov6"
PREPROCESS_MODEL = "yolov6_preprocess"
DALI_MODEL = "yolov6_dali"  # gpu flavour: the DALI backend model the preprocess step calls
DETECTOR_MODEL = "yolov6_detector"
NMS_MODEL = "yolov6_nms"

# Serving defaults (overridable per request through request parameters of the same names)
SERVE_CONF_THRESHOLD = 0.25
SERVE_IOU_THRESHOLD = 0.45
SERVE_MAX_DETECTIONS = 100
# Accuracy evaluation defaults (upstream's eval settings)
EVAL_CONF_THRESHOLD = 0.03
EVAL_IOU_THRESHOLD = 0.65
EVAL_MAX_DETECTIONS = 300

# Input guards applied before decoding
MAX_ENCODED_BYTES = 32 * 1024 * 1024
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
