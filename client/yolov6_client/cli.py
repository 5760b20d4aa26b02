"""``python -m yolov6_client``: detect objects in images, or score a COCO set, through the Triton server.

    python -m yolov6_client [detect] images/ 'shots/*.jpg' --json --annotate out/
    python -m yolov6_client eval --annotations val/instances_val.json --compare-onnx detector.onnx
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from yolov6_build.inputs import image_files

COMMANDS = ("detect", "eval")


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


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="host:port (default 127.0.0.1:8001 grpc, :8000 http)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--model", default="yolov6", help="ensemble name")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--retries", type=int, default=2, help="retries per request (backoff 0.5 s, doubling)")
    parser.add_argument("-j", "--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolov6_client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    detect = sub.add_parser("detect", help="detect objects in image files, folders or glob patterns")
    detect.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    _add_connection_args(detect)
    detect.add_argument("--conf", type=float, default=None, help="score threshold (default: the server's)")
    detect.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (default: the server's)")
    detect.add_argument("--max-det", type=int, default=None, help="detections per image (default: the server's)")
    detect.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    detect.add_argument("--annotate", type=Path, default=None, help="write annotated images into this folder")

    evaluate = sub.add_parser("eval", help="COCO mAP of a COCO-format set through the server")
    evaluate.add_argument("--annotations", type=Path, required=True, help="instances_<split>.json")
    evaluate.add_argument("--images", type=Path, default=None, help="image folder (default: COCO layout)")
    evaluate.add_argument("--limit", type=int, default=None, help="first N images only")
    evaluate.add_argument("--compare-onnx", type=Path, default=None,
                          help="also score this detector ONNX offline (same thresholds and letterbox) and print the difference")
    evaluate.add_argument("--compare-runtime", choices=("openvino", "ort"), default="ort",
                          help="runtime of the --compare-onnx run: the one the server's detector uses (default ort)")
    evaluate.add_argument("--compare-preprocess", choices=("opencv", "dali"), default="opencv",
                          help="letterbox of the --compare-onnx run: the one the server's preprocess uses "
                               "(its executor parameter; default opencv, the cpu flavour's)")
    evaluate.add_argument("-o", "--output", type=Path, default=None, help="write the result as JSON here")
    _add_connection_args(evaluate)
    return parser


def parse_args(argv: list[str] | None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "detect")  # `python -m yolov6_client images/` stays the short form
    return build_parser().parse_args(argv)


def _connector(args):
    from .detector import TritonDetector

    url = args.url or ("127.0.0.1:8001" if args.protocol == "grpc" else "127.0.0.1:8000")
    return lambda: TritonDetector(url, args.protocol, args.model, timeout_s=args.timeout, retries=args.retries)


def detection_record(path, dets, names: list[str]) -> dict:
    return {"image": str(path), "detections": [
        {"class": names[int(k)] if int(k) < len(names) else int(k), "score": round(float(s), 4),
         "box_xyxy": [round(float(v), 1) for v in b]}
        for b, s, k in zip(dets.boxes_xyxy, dets.scores, dets.class_ids)]}


def run_detect(args) -> int:
    from .annotate import draw_detections, format_table
    from .concurrent import detect_all
    from .detector import ServerError

    paths = expand_inputs(args.inputs)
    if not paths:
        print("error: no images matched", file=sys.stderr)
        return 2
    connect = _connector(args)
    with connect() as probe:
        probe.wait_ready(timeout_s=args.timeout)
        names = probe.class_names
    results = detect_all(connect, paths, args.concurrency, progress=not args.no_progress and len(paths) > 1,
                         conf_threshold=args.conf, iou_threshold=args.iou, max_detections=args.max_det)
    failures = 0
    for path, dets in zip(paths, results):
        if isinstance(dets, ServerError):
            failures += 1
            print(f"error: {path}: {dets}", file=sys.stderr)
            continue
        print(json.dumps(detection_record(path, dets, names)) if args.json else format_table(str(path), dets, names))
        if args.annotate:
            draw_detections(path, dets, names, args.annotate / f"{path.stem}.jpg")
    if failures:
        print(f"{failures} of {len(paths)} images failed", file=sys.stderr)
    return 1 if failures else 0


def run_eval(args) -> int:
    from yolov6_build.data import CocoDataset

    from .evaluate import SERVER_EVAL_SETTINGS, evaluate_server

    dataset = CocoDataset(args.annotations, args.images)
    connect = _connector(args)
    with connect() as probe:
        probe.wait_ready(timeout_s=args.timeout)
    result = {"server": evaluate_server(connect, dataset, args.limit, args.concurrency, not args.no_progress)}
    print(f"server  mAP@0.5:0.95 {result['server']['map50_95']:.4f}  mAP@0.5 {result['server']['map50']:.4f}"
          f"  ({result['server']['images']} images)")
    if args.compare_onnx:
        from dataclasses import replace

        from yolov6_build.evaluate import detector_runner, evaluate

        with connect() as probe:
            input_hw = probe.input_hw
        settings = replace(SERVER_EVAL_SETTINGS, limit=args.limit, preprocess=args.compare_preprocess)
        offline = evaluate(detector_runner(args.compare_onnx, args.compare_runtime), dataset, input_hw, settings, not args.no_progress)
        delta = 100 * (result["server"]["map50_95"] - offline["map50_95"])
        result.update(offline=offline, delta_map50_95_points=round(delta, 3))
        print(f"offline mAP@0.5:0.95 {offline['map50_95']:.4f}  mAP@0.5 {offline['map50']:.4f}"
              f"  server - offline: {delta:+.2f} mAP points")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    from yolov6_build.errors import ConfigError

    from .detector import ServerError

    args = parse_args(argv)
    if args.concurrency < 1:
        print("error: --concurrency must be >= 1", file=sys.stderr)
        return 2
    try:
        return run_detect(args) if args.command == "detect" else run_eval(args)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
