"""Deterministic synthetic detection dataset in COCO format (no dataset can be downloaded here).

Eight object classes that differ in shape, colour and texture, drawn on textured, cluttered
backgrounds; image sizes 240..1280 px in portrait and landscape so letterboxing matters; object
sizes spanning all three strides; occlusion between objects, truncation at borders, and varying
JPEG quality. One seed gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CLASS_NAMES = ("red_disc", "blue_square", "green_triangle", "yellow_star", "purple_cross", "orange_ring",
               "cyan_hexagon", "striped_diamond")
SPLITS = {"train": 2000, "val": 300, "calib": 256}
SPLIT_SEED_OFFSET = {"train": 0, "val": 1_000_003, "calib": 2_000_003}
MIN_VISIBLE_FRACTION = 0.45  # truncated objects keep a box only when this much of it is inside


@dataclass(frozen=True)
class ObjectStyle:
    colour: tuple[int, int, int]
    shape: str


STYLES = {
    "red_disc": ObjectStyle((220, 40, 40), "disc"),
    "blue_square": ObjectStyle((40, 70, 220), "square"),
    "green_triangle": ObjectStyle((40, 190, 60), "triangle"),
    "yellow_star": ObjectStyle((240, 215, 30), "star"),
    "purple_cross": ObjectStyle((150, 50, 190), "cross"),
    "orange_ring": ObjectStyle((245, 140, 20), "ring"),
    "cyan_hexagon": ObjectStyle((30, 200, 210), "hexagon"),
    "striped_diamond": ObjectStyle((240, 240, 240), "diamond"),
}


def _polygon(shape: str, cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    """Outline points of a shape inscribed in a w x h box centred at (cx, cy)."""
    if shape == "triangle":
        pts = [(0, -0.5), (0.5, 0.5), (-0.5, 0.5)]
    elif shape == "star":
        pts = [(0.5 * (1 if i % 2 == 0 else 0.45) * math.sin(i * math.pi / 5),
                -0.5 * (1 if i % 2 == 0 else 0.45) * math.cos(i * math.pi / 5)) for i in range(10)]
    elif shape == "cross":
        a, b = 0.5, 0.17
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b),
               (-b, -b)]
    elif shape == "hexagon":
        pts = [(0.5 * math.cos(i * math.pi / 3), 0.5 * math.sin(i * math.pi / 3)) for i in range(6)]
    elif shape == "diamond":
        pts = [(0, -0.5), (0.5, 0), (0, 0.5), (-0.5, 0)]
    else:  # square
        pts = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + (x * cos - y * sin) * w, cy + (x * sin + y * cos) * h) for x, y in pts]


def _background(rng: np.random.Generator, height: int, width: int):
    from PIL import Image, ImageDraw, ImageFilter

    kind = rng.integers(4)
    if kind == 0:  # smooth gradient
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0, 1, height)[:, None, None]
        array = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3))
    elif kind == 1:  # blurred noise ("photographic" texture)
        small = rng.integers(0, 256, (max(2, height // 24), max(2, width // 24), 3)).astype(np.uint8)
        array = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))
    elif kind == 2:  # fine grain noise on a base colour
        array = rng.integers(0, 256, 3) + rng.normal(0, 25, (height, width, 3))
    else:  # tiles
        tile = int(rng.integers(16, 80))
        base, other = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        yy, xx = np.mgrid[0:height, 0:width]
        mask = (((yy // tile) + (xx // tile)) % 2)[..., None]
        array = base * mask + other * (1 - mask)
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 15))):  # clutter: lines and blobs that are not objects
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(-width // 3, width // 3), y0 + rng.integers(-height // 3, height // 3)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.6:
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 6)))
        else:
            draw.ellipse([min(x0, x1), min(y0, y1), max(x0, x1), min(max(y0, y1), min(y0, y1) + 40)], outline=colour)
    return image.filter(ImageFilter.GaussianBlur(0.6))


def _draw_object(draw, rng: np.random.Generator, style: ObjectStyle, box_xyxy: tuple[float, float, float, float]):
    x1, y1, x2, y2 = box_xyxy
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    shade = np.clip(np.array(style.colour) + rng.integers(-25, 26, 3), 0, 255)
    colour = tuple(int(v) for v in shade)
    outline = tuple(int(v * 0.5) for v in shade)
    if style.shape == "disc":
        draw.ellipse(box_xyxy, fill=colour, outline=outline, width=max(1, int(w / 25)))
    elif style.shape == "ring":
        draw.ellipse(box_xyxy, outline=colour, width=max(2, int(min(w, h) * 0.18)))
    elif style.shape == "diamond":  # stripes: the texture is the class cue
        draw.polygon(_polygon("diamond", cx, cy, w, h, 0), fill=(30, 30, 30))
        stripes = max(3, int(w / 8))
        for i in range(stripes):
            if i % 2 == 0:
                xa = x1 + w * i / stripes
                xb = x1 + w * (i + 1) / stripes
                pts = [(x, cy - (h / 2) * (1 - abs(x - cx) / (w / 2))) for x in (xa, xb)]
                pts += [(x, cy + (h / 2) * (1 - abs(x - cx) / (w / 2))) for x in (xb, xa)]
                draw.polygon(pts, fill=colour)
    else:  # rotate only shapes whose bounding box is rotation-invariant in this parameterisation
        draw.polygon(_polygon(style.shape, cx, cy, w, h, 0.0), fill=colour, outline=outline)


def _visible_box(box, width, height):
    x1, y1, x2, y2 = box
    cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
    if cx2 <= cx1 or cy2 <= cy1:
        return None
    inside = (cx2 - cx1) * (cy2 - cy1) / ((x2 - x1) * (y2 - y1))
    return (cx1, cy1, cx2, cy2) if inside >= MIN_VISIBLE_FRACTION else None


def _overlap(a, b) -> float:
    """Fraction of box a covered by box b."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]))


def make_image(rng: np.random.Generator):
    """One image and its annotations [(class_index, (x1, y1, x2, y2))] in pixels."""
    from PIL import ImageDraw

    long_side = int(rng.integers(240, 1281))
    aspect = float(rng.uniform(0.5, 1.0))
    short_side = max(160, int(long_side * aspect))
    width, height = (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)
    image = _background(rng, height, width)
    draw = ImageDraw.Draw(image)
    placed: list[tuple[int, tuple]] = []
    for _ in range(int(rng.integers(1, 9))):
        cls = int(rng.integers(len(CLASS_NAMES)))
        size = float(np.exp(rng.uniform(np.log(0.05), np.log(0.5)))) * min(width, height)
        w = size * float(rng.uniform(0.7, 1.4))
        h = size * float(rng.uniform(0.7, 1.4))
        margin = 0.3  # allows truncation at the borders
        cx = float(rng.uniform(-margin * w, width + margin * w))
        cy = float(rng.uniform(-margin * h, height + margin * h))
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        visible = _visible_box(box, width, height)
        if visible is None or any(_overlap(p[1], box) > 0.4 for p in placed):
            continue  # mostly hidden objects would be unlabelled noise
        _draw_object(draw, rng, STYLES[CLASS_NAMES[cls]], box)
        placed.append((cls, visible))
    return image, placed


def write_split(root: Path, split: str, count: int, seed: int) -> Path:
    """Write ``root/<split>/*.jpg`` and ``root/annotations/instances_<split>.json``."""
    import io

    from .progress import progress as progress_bar

    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in progress_bar(range(count), desc=f"synthetic {split}", unit="img"):
        rng = np.random.default_rng([seed, SPLIT_SEED_OFFSET[split], index])
        image, objects = make_image(rng)
        name = f"{split}_{index:06d}.jpg"
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(55, 96)))
        (image_dir / name).write_bytes(buffer.getvalue())
        image_id = index + 1
        images.append({"id": image_id, "file_name": name, "width": image.width, "height": image.height})
        for cls, (x1, y1, x2, y2) in objects:
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                                "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                                "area": round(w * h, 2), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)]
    ann_path = root / "annotations" / f"instances_{split}.json"
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    log.info("wrote %d %s images (%d objects) to %s", count, split, len(annotations), image_dir)
    return ann_path


def generate(root: str | Path, seed: int = 0, counts: dict[str, int] | None = None) -> Path:
    root = Path(root)
    for split, count in (counts or SPLITS).items():
        write_split(root, split, count, seed)
    return root
