"""Draw detections onto an image (PIL), with class names and scores, on the picture as the server decoded it."""

from __future__ import annotations

from pathlib import Path

from yolov6_build.geometry import Detections

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def draw_detections(image_path: str | Path, dets: Detections, class_names: list[str], out_path: str | Path) -> Path:
    from PIL import Image, ImageDraw

    from yolov6_build.data import decode_rgb

    image = Image.fromarray(decode_rgb(Path(image_path).read_bytes()))  # upright, as the server saw it
    draw = ImageDraw.Draw(image)
    width = max(2, round(min(image.size) / 250))
    for box, score, cls in zip(dets.boxes_xyxy, dets.scores, dets.class_ids):
        colour = PALETTE[int(cls) % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        label = f"{class_names[int(cls)] if int(cls) < len(class_names) else int(cls)} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label)
        draw.rectangle([left, top - (bottom - top) - 2, right + 2, top], fill=colour)
        draw.text((x1 + 1, top - (bottom - top) - 2), label, fill=(0, 0, 0))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(out_path)
    return out_path


def format_table(name: str, dets: Detections, class_names: list[str]) -> str:
    lines = [f"{name}: {len(dets)} detection(s)"]
    for box, score, cls in zip(dets.boxes_xyxy, dets.scores, dets.class_ids):
        label = class_names[int(cls)] if int(cls) < len(class_names) else str(int(cls))
        lines.append(f"  {label:<18} {score:5.3f}  [{box[0]:7.1f} {box[1]:7.1f} {box[2]:7.1f} {box[3]:7.1f}]")
    return "\n".join(lines)
