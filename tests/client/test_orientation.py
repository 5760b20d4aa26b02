"""A phone-style JPEG (pixels stored sideways, EXIF says how to turn them) end to end: served boxes
and the drawn boxes are on the upright picture, where the objects are."""

import io

import numpy as np
import pytest
from PIL import Image

from yolov6_build.data import decode_rgb
from yolov6_client import TritonDetector
from yolov6_client.annotate import draw_detections

pytestmark = pytest.mark.triton
ORIENTATION_TAG = 0x0112


def _sideways_jpeg(upright: np.ndarray, orientation: int) -> bytes:
    """Stored pixels that a viewer honouring EXIF ``orientation`` (6 or 8) shows as ``upright``."""
    stored = np.rot90(upright, k=1 if orientation == 6 else -1)  # 6: the viewer turns it 90 degrees clockwise
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buffer, format="JPEG", quality=97, exif=exif.tobytes())
    return buffer.getvalue()


def _confident(dets, threshold=0.5):
    keep = dets.scores >= threshold
    return dets.boxes_xyxy[keep], dets.class_ids[keep]


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg_is_detected_and_drawn_upright(server, images, tmp_path, orientation):
    upright = decode_rgb(images[0].read_bytes())
    sideways = tmp_path / "phone.jpg"
    sideways.write_bytes(_sideways_jpeg(upright, orientation))
    assert decode_rgb(sideways.read_bytes()).shape == upright.shape  # the offline decoder turns it too

    with TritonDetector(server.grpc_url) as detector:
        reference = detector.detect(images[0])
        rotated = detector.detect(sideways)
    want_boxes, want_classes = _confident(reference)
    got_boxes, got_classes = _confident(rotated)
    assert len(want_boxes) > 0
    for box, cls in zip(want_boxes, want_classes):  # every confident object found where it is upright
        twin = (got_classes == cls) & (np.abs(got_boxes - box).max(axis=1) <= 6.0)
        assert twin.any(), (box, cls)

    out = draw_detections(sideways, rotated, [str(i) for i in range(8)], tmp_path / "annotated.png")
    drawn = np.asarray(Image.open(out).convert("RGB"))
    assert drawn.shape == upright.shape
    x1, y1, x2, y2 = (int(round(v)) for v in got_boxes[0])
    edge = drawn[y1 + 1, x1 + 3:x2 - 3]  # the top edge of the first box, drawn in its class colour
    photo = decode_rgb(sideways.read_bytes())[y1 + 1, x1 + 3:x2 - 3]
    assert np.abs(edge.astype(int) - photo.astype(int)).mean() > 20
