"""Reproducers for the decoder crashes in docs/upstream/dali-decoder-crashes.md.

Writes three small files (a valid JPEG 2000 and BMP made with Pillow plus one header edit; a PNG built
byte by byte), then runs each
operator on each file in its own process and prints what happened (ok, an error, or the signal).
Needs numpy, Pillow, opencv-python-headless and nvidia-dali (CPU operators only: no GPU).

    python decoder_crash_reproducers.py [output folder]
"""

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def picture(height=48, width=64):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4, y * 5, (x ^ y) & 255], axis=-1).astype(np.uint8)


def encode(fmt, **options):
    buffer = io.BytesIO()
    Image.fromarray(picture()).save(buffer, format=fmt, **options)
    return bytearray(buffer.getvalue())


def jp2_zero_vertical_separation():
    """JPEG 2000: the first component's YRsiz (vertical sub-sampling) set to 0 in the SIZ marker segment."""
    data = encode("JPEG2000")
    siz = data.find(b"\xff\x51")
    # FF51, Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4 each) Csiz(2), then Ssiz XRsiz YRsiz
    data[siz + 2 + 2 + 2 + 8 * 4 + 2 + 2] = 0
    return bytes(data)


def bmp_taller_than_its_data():
    """BMP: the header's height raised from 48 to 180,000 rows; the file keeps its 48 rows of pixels."""
    data = encode("BMP")
    data[22:26] = struct.pack("<i", 180_000)
    return bytes(data)


def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_actl_and_bad_filters():
    """PNG, 8-bit grey 64x48: an acTL chunk (APNG animation control) whose frame count is 0x83de8d1f, and
    scanlines whose filter-type byte is 7 (valid types are 0-4). Either alone decodes or fails cleanly."""
    header = struct.pack(">IIBBBBB", 64, 48, 8, 0, 0, 0, 0)
    actl = struct.pack(">II", 0x83DE8D1F, 0x3BA52D23)
    scanlines = b"".join(b"\x07" + bytes(64) for _ in range(48))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"acTL", actl)
            + png_chunk(b"IDAT", zlib.compress(scanlines)) + png_chunk(b"IEND", b""))


PROBE = r'''
import sys, numpy as np
op, path = sys.argv[1], sys.argv[2]
data = np.fromfile(path, np.uint8)
if op == "cv2.imdecode":
    import cv2
    print("ok" if cv2.imdecode(data, cv2.IMREAD_COLOR) is not None else "error (None)")
    sys.exit(0)
from nvidia.dali import fn, pipeline_def, types
@pipeline_def(batch_size=1, num_threads=1, device_id=None)
def pipe():
    x = fn.external_source(name="x", dtype=types.UINT8, ndim=1)
    if op == "fn.experimental.peek_image_shape":
        return fn.experimental.peek_image_shape(x)
    if op == "fn.experimental.decoders.image":
        return fn.experimental.decoders.image(x, device="cpu", output_type=types.RGB)
    if op == "fn.peek_image_shape":
        return fn.peek_image_shape(x)
    return fn.decoders.image(x, device="cpu", output_type=types.RGB)
p = pipe(); p.build(); p.feed_input("x", [data])
try:
    p.run(); print("ok")
except RuntimeError as e:
    print("error:", [l for l in str(e).splitlines() if l.strip()][-1][:100])
'''
OPERATORS = ("fn.experimental.peek_image_shape", "fn.experimental.decoders.image", "fn.peek_image_shape",
             "fn.decoders.image", "cv2.imdecode")


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "decoder_crash_reproducers")
    out.mkdir(parents=True, exist_ok=True)
    files = {"yrsiz0.jp2": jp2_zero_vertical_separation(), "tall.bmp": bmp_taller_than_its_data(),
             "actl.png": png_with_actl_and_bad_filters()}
    for name, data in files.items():
        (out / name).write_bytes(data)
        for op in OPERATORS:
            proc = subprocess.run([sys.executable, "-c", PROBE, op, str(out / name)], capture_output=True, text=True)
            if proc.returncode < 0:
                import signal
                outcome = signal.Signals(-proc.returncode).name
            else:
                outcome = (proc.stdout.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            print(f"{name:11} {op:34} {outcome}")


if __name__ == "__main__":
    main()
