"""ORT CPU throughput: INT8 vs FP32, this bundle's graph vs the stock quantize_static path.

Ratios are taken within one run (machines here are noisy). Weights are random (speed does not
depend on them); calibration uses random images.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def throughput(onnx_path: Path, batch: int, hw: tuple[int, int], seconds: float = 6.0, threads: int = 0) -> float:
    """Images per second of an ORT session on one fixed input, after warm-up."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {"images": np.random.default_rng(0).random((batch, 3, *hw), dtype=np.float32)}
    for _ in range(2):
        session.run(None, feed)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or runs < 3:
        session.run(None, feed)
        runs += 1
    return runs * batch / (time.perf_counter() - started)


def bench_int8(out_dir: Path, sizes=("n", "s"), hw=(640, 640), batches=(1, 8), seconds: float = 6.0) -> dict:
    import torch

    from ..export.onnx import export_onnx
    from ..model.yolo import ModelSpec, build_model, fuse_for_deploy
    from ..quantize.ort_int8 import quantize_for_ort, quantize_stock

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    calib = [np.random.default_rng(1).random((4, 3, *hw), dtype=np.float32) for _ in range(2)]
    rows = []
    for size in sizes:
        torch.manual_seed(0)
        model = fuse_for_deploy(build_model(ModelSpec(size, 80)))
        ours_fp32 = export_onnx(model, out / f"{size}_fp32.onnx", hw, topk=1000)
        ours_int8 = quantize_for_ort(ours_fp32, out / f"{size}_int8.onnx", calib, (), "max")
        stock_fp32 = export_onnx(model, out / f"{size}_fp32_raw.onnx", hw)
        stock_int8 = quantize_stock(stock_fp32, out / f"{size}_int8_stock.onnx", calib)
        for batch in batches:
            speeds = {name: throughput(path, batch, hw, seconds) for name, path in
                      (("fp32", ours_fp32), ("int8", ours_int8), ("stock_fp32", stock_fp32),
                       ("stock_int8", stock_int8))}
            row = {"size": size, "batch": batch, **{k: round(v, 2) for k, v in speeds.items()},
                   "int8_vs_fp32": round(speeds["int8"] / speeds["fp32"], 2),
                   "stock_int8_vs_fp32": round(speeds["stock_int8"] / speeds["stock_fp32"], 2),
                   "int8_vs_stock_int8": round(speeds["int8"] / speeds["stock_int8"], 2)}
            log.info("%s", row)
            rows.append(row)
    report = {"input_hw": list(hw), "rows": rows}
    (out / "bench_int8.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# ORT CPU throughput, INT8 vs FP32 ({hw[0]}x{hw[1]}, img/s, one run)", "",
             "| size | batch | FP32 | INT8 (bundle) | INT8/FP32 | stock FP32 | stock INT8 | stock INT8/FP32 | "
             "bundle INT8 / stock INT8 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['batch']} | {r['fp32']} | {r['int8']} | {r['int8_vs_fp32']}x | "
                     f"{r['stock_fp32']} | {r['stock_int8']} | {r['stock_int8_vs_fp32']}x | {r['int8_vs_stock_int8']}x |")
    (out / "bench_int8.md").write_text("\n".join(lines) + "\n")
    return report
