"""``python -m yolov6_client``: detect objects in files, folders or globs through the Triton server."""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from yolov6_build.inputs import image_files



def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and globs -> image paths."""
    paths: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            paths.extend(image_files(path))
        elif path.is_file():
            paths.append(path)
        else:
            paths.extend(Path(p) for p in sorted(glob.glob(pattern)))
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolov6_client", description=__doc__)
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--url", default=None, help="host:port (default 127.0.0.1:8001 grpc, :8000 http)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--model", default="yolov6", help="ensemble name")
    parser.add_argument("--conf", type=float, default=None, help="score threshold (default: the server's)")
    parser.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (default: the server's)")
    parser.add_argument("--max-det", type=int, default=None, help="detections per image (default: the server's)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--annotate", type=Path, default=None, help="write annotated images into this folder")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    return parser


def main(argv: list[str] | None = None) -> int:
    from .annotate import draw_detections, format_table
    from .detector import ServerError, TritonDetector

    args = build_parser().parse_args(argv)
    url = args.url or ("127.0.0.1:8001" if args.protocol == "grpc" else "127.0.0.1:8000")
    paths = expand_inputs(args.inputs)
    if not paths:
        print("error: no images matched", file=sys.stderr)
        return 2
    failures = 0
    try:
        with TritonDetector(url, args.protocol, args.model, timeout_s=args.timeout) as detector:
            detector.wait_ready(timeout_s=args.timeout)
            names = detector.class_names
            for path in paths:
                try:
                    dets = detector.detect(path, args.conf, args.iou, args.max_det)
                except ServerError as exc:
                    failures += 1
                    print(f"error: {path}: {exc}", file=sys.stderr)
                    continue
                if args.json:
                    print(json.dumps({"image": str(path), "detections": [
                        {"class": names[int(k)] if int(k) < len(names) else int(k), "score": round(float(s), 4),
                         "box_xyxy": [round(float(v), 1) for v in b]}
                        for b, s, k in zip(dets.boxes_xyxy, dets.scores, dets.class_ids)]}))
                else:
                    print(format_table(str(path), dets, names))
                if args.annotate:
                    draw_detections(path, dets, names, args.annotate / f"{path.stem}.jpg")
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1 if failures else 0
