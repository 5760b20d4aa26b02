"""The DALI letterbox pipeline against the numpy/OpenCV reference, and per-image failure isolation."""

import io

import numpy as np
import pytest
from PIL import Image

from yolov6_build.dali.pipeline import CpuLetterbox, serialize_gpu_pipeline
from yolov6_build.geometry import letterbox_image, letterbox_params, unletterbox_boxes

INPUT_HW = (320, 320)
# DALI's bilinear resize vs OpenCV INTER_LINEAR: at most one grey level apart (measured: 1/255)
PIXEL_TOLERANCE = 1.5 / 255


def _encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _smooth_image(rng, h, w, channels=3):
    base = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), channels), dtype=np.uint8)
    image = Image.fromarray(base.squeeze()).resize((w, h), Image.BILINEAR)
    return np.asarray(image)


@pytest.fixture(scope="module")
def letterbox():
    return CpuLetterbox(INPUT_HW, max_batch_size=4)


SIZES = [(480, 640), (640, 480), (1, 517), (517, 1), (2, 2), (333, 333), (719, 1280), (3000, 4000), (321, 319)]


def test_dali_matches_reference_on_many_sizes(letterbox):
    rng = np.random.default_rng(0)
    arrays = [_smooth_image(rng, h, w) for h, w in SIZES]
    results = letterbox([_encode(a) for a in arrays])
    for array, (images, geometry) in zip(arrays, results):
        reference, box = letterbox_image(array, INPUT_HW)
        np.testing.assert_array_equal(geometry, box.as_array())
        assert images.shape == (3, *INPUT_HW) and images.dtype == np.float32
        assert np.abs(images - reference).max() <= PIXEL_TOLERANCE, array.shape


@pytest.mark.parametrize("kind", ["dali", "opencv"])
def test_uint8_pixels_are_the_float_images_on_the_pixel_grid(kind):
    """The cpu flavour's hand-over (uint8) holds what the float form holds, times 255, rounded: nothing lost."""
    from yolov6_build.pipeline import make_preprocessor

    rng = np.random.default_rng(2)
    encoded = [_encode(_smooth_image(rng, h, w)) for h, w in SIZES[:4]]
    as_float = make_preprocessor(kind, INPUT_HW, 4)(encoded)
    as_uint8 = make_preprocessor(kind, INPUT_HW, 4, pixels="uint8")(encoded)
    for (images, geometry), (pixels, pixel_geometry) in zip(as_float, as_uint8):
        assert pixels.dtype == np.uint8 and pixels.shape == images.shape and pixels.flags.c_contiguous
        np.testing.assert_array_equal(pixel_geometry, geometry)
        np.testing.assert_array_equal(pixels, np.rint(images * 255))
        assert np.abs(pixels / 255 - images).max() < 1e-6
    with pytest.raises(ValueError, match="pixels"):
        make_preprocessor(kind, INPUT_HW, 4, pixels="float16")


def test_grayscale_png_and_jpeg_become_rgb(letterbox):
    rng = np.random.default_rng(1)
    grey = _smooth_image(rng, 200, 300, channels=1)
    colour = _smooth_image(rng, 240, 200)
    (grey_out, _), (jpeg_out, jpeg_box) = letterbox([_encode(grey), _encode(colour, "JPEG")])
    reference, _ = letterbox_image(grey, INPUT_HW)
    assert np.abs(grey_out - reference).max() <= PIXEL_TOLERANCE
    np.testing.assert_allclose(grey_out[0], grey_out[1])
    jpeg_reference, _ = letterbox_image(np.asarray(Image.open(io.BytesIO(_encode(colour, "JPEG")))), INPUT_HW)
    assert np.abs(jpeg_out - jpeg_reference).mean() < 2 / 255  # decoders may differ slightly on JPEG


def test_bad_image_fails_alone(letterbox):
    good = _encode(_smooth_image(np.random.default_rng(2), 100, 150), "JPEG")
    results = letterbox([good, b"not an image", good[: len(good) // 3], good, good, good])
    kinds = [isinstance(r, Exception) for r in results]
    assert kinds == [False, True, True, False, False, False]
    assert "decode" in str(results[1])
    again = letterbox([good])  # the pipeline still works afterwards
    assert not isinstance(again[0], Exception)


def test_boxes_map_back_onto_synthetic_objects(letterbox):
    """Draw bright rectangles at known places, find them in the letterboxed input, map back."""
    for h, w in [(480, 640), (900, 300), (333, 777)]:
        image = np.zeros((h, w, 3), np.uint8)
        truth = np.array([[w * 0.1, h * 0.2, w * 0.4, h * 0.5], [w * 0.6, h * 0.55, w * 0.95, h * 0.9]])
        truth = np.round(truth)
        for x1, y1, x2, y2 in truth.astype(int):
            image[y1:y2, x1:x2] = 255
        (net, geometry), = letterbox([_encode(image)])
        box = letterbox_params((h, w), INPUT_HW)
        found = []
        bright = net[0] > 0.5
        for x1, y1, x2, y2 in truth:  # search each object's own region in network space
            sx, sy = box.scale_yx[1], box.scale_yx[0]
            region = np.zeros_like(bright)
            region[int(y1 * sy + box.pad_top) - 2:int(y2 * sy + box.pad_top) + 2,
                   int(x1 * sx + box.pad_left) - 2:int(x2 * sx + box.pad_left) + 2] = True
            ys, xs = np.nonzero(bright & region)
            found.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        mapped = unletterbox_boxes(np.array(found, np.float32), box)
        pixel = max(1 / box.scale_yx[0], 1 / box.scale_yx[1])  # one network pixel in original pixels
        np.testing.assert_allclose(mapped, truth, atol=1.5 * pixel)


def test_gpu_pipeline_serialises_without_gpu(tmp_path):
    path = serialize_gpu_pipeline(tmp_path / "model.dali", (640, 640), 8)
    data = path.read_bytes()
    assert b"experimental__decoders__Image" in data and b"mixed" in data  # the GPU (mixed) decoder
    assert b"ExternalSource" in data and b"image_bytes" in data


def _decode_with_dali(data: bytes, **decoder_args) -> np.ndarray:
    import nvidia.dali as dali

    pipe = dali.Pipeline(batch_size=1, num_threads=1, device_id=None)
    with pipe:
        encoded = dali.fn.external_source(name="image", dtype=dali.types.UINT8, ndim=1)
        pipe.set_outputs(dali.fn.experimental.decoders.image(encoded, output_type=dali.types.RGB, **decoder_args))
    pipe.build()
    pipe.feed_input("image", [np.frombuffer(data, np.uint8)])
    return np.array(pipe.run()[0][0])


def test_gpu_decoder_upsamples_chroma_as_libjpeg(tmp_path):
    """4:2:0 JPEGs: the mixed decoder's default chroma upsampling is not libjpeg's (calibration, offline
    evaluation and the CPU flavour decode with libjpeg), so the shipped pipeline asks for fancy upsampling.
    On the CPU backend the flag changes nothing: libjpeg's pixels either way, those OpenCV decodes."""
    import cv2

    array = _smooth_image(np.random.default_rng(7), 96, 128)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90, subsampling=2)  # 2 = 4:2:0
    data = buffer.getvalue()
    opencv = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    for fancy in (False, True):
        np.testing.assert_array_equal(_decode_with_dali(data, jpeg_fancy_upsampling=fancy), opencv)
    shipped = serialize_gpu_pipeline(tmp_path / "model.dali", INPUT_HW, 8).read_bytes()
    assert b"jpeg_fancy_upsampling" in shipped  # the mixed decoder's argument in model.dali


def test_gpu_pipeline_builds_with_the_backend_executor():
    """Built as the backend builds it; here only the missing GPU may stop it (graph checks come first)."""
    from yolov6_build.dali.pipeline import build_pipeline

    pipe = build_pipeline(INPUT_HW, 8, device="gpu")  # device_id None: the current CUDA device, if any
    try:
        pipe.build()
    except RuntimeError as exc:
        assert "CUDA" in str(exc) and "transition from GPU to CPU" not in str(exc)


def test_gpu_to_cpu_geometry_is_refused_by_the_backend_executor():
    """The control: the geometry taken from the decoded GPU image (the old graph) cannot build."""
    import nvidia.dali as dali

    from yolov6_build.dali.pipeline import BACKEND_EXECUTOR

    pipe = dali.Pipeline(batch_size=8, num_threads=2, device_id=None, **BACKEND_EXECUTOR)
    with pytest.raises(RuntimeError, match="transition from GPU to CPU"), pipe:
        encoded = dali.fn.external_source(name="image", dtype=dali.types.UINT8, ndim=1)
        image = dali.fn.experimental.decoders.image(encoded, device="mixed")
        pipe.set_outputs(image, image.shape())
        pipe.build()


def _jpeg_with_orientation(array: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # EXIF Orientation tag
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_rotated_jpeg_is_letterboxed_as_opencv_decodes_it(letterbox, orientation):
    import cv2

    array = _smooth_image(np.random.default_rng(orientation), 120, 200)  # landscape pixels
    data = _jpeg_with_orientation(array, orientation)
    upright = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert upright.shape[:2] == ((200, 120) if orientation in (6, 8) else (120, 200))
    (images, geometry), = letterbox([data])
    reference, box = letterbox_image(upright, INPUT_HW)
    np.testing.assert_array_equal(geometry, box.as_array())
    assert np.abs(images - reference).max() <= PIXEL_TOLERANCE


def test_serialising_with_another_dali_is_refused(tmp_path, monkeypatch):
    import nvidia.dali as dali

    monkeypatch.setattr(dali, "__version__", "1.42.0")
    with pytest.raises(Exception, match="must be written by DALI"):
        serialize_gpu_pipeline(tmp_path / "model.dali", INPUT_HW, 8)
