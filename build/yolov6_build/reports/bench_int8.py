"""CPU INT8: the bundle's served detector against every stock CPU path, speed and accuracy, one run.

Paths (same weights for all; upstream-format graphs have raw outputs, decoded on the host):
    openvino_fp32    upstream-format FP32 export in OpenVINO (its default CPU precision)
    nncf_int8        that export -> OpenVINO -> NNCF post-training quantization (defaults; the head's
                     decode ignored, as Ultralytics does), in OpenVINO
    ort_stock_int8   that export -> ORT quantize_static (QDQ, per-channel int8 weights, uint8
                     activations), in ORT
    bundle_openvino  the bundle's Q/DQ graph (modelopt PTQ, merged scales) in its CPU form (uint8
                     activations, Q/DQ where ORT fuses), in OpenVINO: the served default
    bundle_ort       the same file in ONNX Runtime: the ``--runtime ort`` choice
    qdq_openvino     the Q/DQ graph as TensorRT gets it (int8 activations), in OpenVINO
Speed rows use random weights (speed does not depend on them) at n and s, 640; the demo model at
320 adds mAP beside each speed. With ``demo_repository`` (``make bench-int8``: the one ``make
build-repo`` built, PTQ + QAT), the demo rows measure that repository's own graphs as the bundle's,
the ones it serves, instead of a fresh PTQ. Ratios are taken within each round of one run: these
machines are noisy.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from .machine import describe_machine, machine_header

log = logging.getLogger(__name__)

PATHS = ("openvino_fp32", "nncf_int8", "ort_stock_int8", "bundle_openvino", "bundle_ort", "qdq_openvino")
SERVED = "bundle_openvino"  # RepositoryConfig.detector_runtime's default
STOCK_INT8 = ("nncf_int8", "ort_stock_int8")
RATIOS = ("served_vs_fastest_stock_int8", "served_vs_openvino_fp32")  # the served path against the targets' baselines


def letterboxed(detector, batch: int, hw: tuple[int, int]) -> np.ndarray:
    """One fixed input in the form ``detector``'s graph reads: uint8 pixels for the bundle's CPU form,
    float for the others, as served."""
    from ..runtime import as_pixels

    return as_pixels(np.random.default_rng(0).random((batch, 3, *hw), dtype=np.float32), detector.pixels)


def throughput(detector, images: np.ndarray, seconds: float, warm_up: int = 2) -> float:
    """Images per second from letterboxed ``images`` to candidates (boxes, scores, classes), after
    ``warm_up`` calls: the bundle's graphs select them inside, upstream-format graphs are decoded on the
    host (``runtime.split_raw``), so every path does the same work."""
    for _ in range(warm_up):
        detector(images)
    runs, started = 0, time.perf_counter()
    while runs == 0 or time.perf_counter() - started < seconds:
        detector(images)
        runs += 1
    return runs * len(images) / (time.perf_counter() - started)


def _nncf_model(fp32_onnx: Path, calib: list[np.ndarray]):
    """Stock OpenVINO INT8: NNCF PTQ with its defaults, the box/score decode left float."""
    from ..deps import require

    nncf, ov = require("nncf"), require("openvino")
    nncf.set_log_level(logging.WARNING)  # NNCF logs a line for every head op it leaves unquantized
    model = ov.Core().read_model(str(fp32_onnx))
    ignored = nncf.IgnoredScope(patterns=[r".*detect.*/(Add|Sub|Mul|Div|Concat).*"], types=["Sigmoid"],
                                validate=False)
    return nncf.quantize(model, nncf.Dataset([{"images": b[i:i + 1]} for b in calib for i in range(len(b))]),
                         ignored_scope=ignored, subset_size=sum(len(b) for b in calib))


def stock_graphs(model, out: Path, hw: tuple[int, int], calib: list[np.ndarray]) -> dict:
    """{path: (runtime, graph)} of the stock paths from the FP32 ``model`` (deploy): its upstream-format export
    and that export quantized by NNCF and by ORT; a graph is an ONNX file, or NNCF's OpenVINO model."""
    from ..export.onnx import export_onnx
    from ..quantize.ort_int8 import quantize_static_qdq

    out.mkdir(parents=True, exist_ok=True)
    upstream = export_onnx(model, out / "upstream_fp32.onnx", hw)  # raw outputs, as upstream exports
    return {"openvino_fp32": ("openvino", upstream),
            "nncf_int8": ("openvino", _nncf_model(upstream, calib)),
            "ort_stock_int8": ("ort", quantize_static_qdq(upstream, out / "upstream_int8_ort_stock.onnx", calib))}


def bundle_graphs(quant, out: Path, hw: tuple[int, int]) -> dict:
    """{path: (runtime, graph)} of the bundle's paths from the modelopt-quantized model ``quant``."""
    from ..export.onnx import export_onnx
    from ..quantize.cpu_qdq import uint8_activations

    out.mkdir(parents=True, exist_ok=True)
    bundle_qdq = export_onnx(quant, out / "bundle_qdq.onnx", hw, topk=1000)
    bundle_cpu = uint8_activations(bundle_qdq, out / "bundle_qdq_u8.onnx")
    return {"bundle_openvino": ("openvino", bundle_cpu), "bundle_ort": ("ort", bundle_cpu),
            "qdq_openvino": ("openvino", bundle_qdq)}


def load_paths(graphs: dict, threads: int) -> dict:
    from ..runtime import OpenVinoDetector, OrtDetector

    return {name: (OpenVinoDetector if runtime == "openvino" else OrtDetector)(graph, threads)
            for name, (runtime, graph) in graphs.items()}


def profiles(graphs: dict, hw: tuple[int, int], batch: int, threads: int) -> dict[str, dict[str, float]]:
    """Per path, ms per image by op group from the runtime's own profiler (``profile_cpu``), interleaved."""
    from .profile_cpu import profile_paths

    return profile_paths(graphs, np.random.default_rng(0).random((batch, 3, *hw), dtype=np.float32), threads)


def _quantized_twin(model, calib, hw):
    from ..quantize.merge import merge_scales
    from ..quantize.ptq import PtqConfig, quantize_ptq

    quant = quantize_ptq(model, calib, PtqConfig(), progress=False)
    merge_scales(quant, hw)
    return quant


ROUNDS = 12  # interleaved rounds per batch size; ``seconds`` is split between them


def speed_rows(label: str, detectors: dict, hw, batches, seconds: float, rounds: int = ROUNDS) -> list[dict]:
    """img/s per path and batch, the median of ``rounds`` interleaved rounds, and the served path's ratios,
    each the median of the ratios taken within a round. The machine drifts 10-30% within minutes: a
    ratio within one short round sees one state of it (at demo b1, 30 rounds of 0.5 s read served /
    NNCF 0.93-1.33x round by round, where 3 rounds of 4 s had put the whole row at 0.96x or 1.26x)."""
    from ..progress import progress as progress_bar

    rows = []
    for batch in batches:
        images = {name: letterboxed(detector, batch, hw) for name, detector in detectors.items()}
        for name, detector in detectors.items():  # compiles this batch size
            throughput(detector, images[name], 0.0)
        by_round = []
        for r in progress_bar(range(rounds), desc=f"{label} b{batch}", unit="round"):
            order = list(detectors) if r % 2 == 0 else list(detectors)[::-1]
            by_round.append({name: throughput(detectors[name], images[name], seconds / rounds, warm_up=0)
                             for name in order})
        speeds = {name: round(statistics.median(s[name] for s in by_round), 1) for name in detectors}
        rows.append({"model": label, "batch": batch, **speeds, **ratios(by_round)})
        log.info("%s", rows[-1])
    return rows


def ratios(by_round: list[dict]) -> dict:
    """The served path's ratios (median over rounds, and their range) from img/s per path per round."""
    fastest_stock, fp32 = RATIOS
    per_round = {fastest_stock: [s[SERVED] / max(s[n] for n in STOCK_INT8) for s in by_round],
                 fp32: [s[SERVED] / s["openvino_fp32"] for s in by_round]}
    return {**{key: round(statistics.median(values), 2) for key, values in per_round.items()},
            "ratio_ranges": {key: [round(min(values), 2), round(max(values), 2)] for key, values in per_round.items()}}


def bench_int8(out_dir: Path, sizes=("n", "s"), hw=(640, 640), batches=(1, 8), seconds: float = 6.0,
               demo_checkpoint: Path | None = None, val_annotations: Path | None = None,
               calib_dir: Path | None = None, threads: int = 0, demo_repository: Path | None = None) -> dict:
    import torch

    from ..model.yolo import ModelSpec, build_model, fuse_for_deploy

    out = Path(out_dir)
    rows, accuracy, profiled = [], {}, {}
    for size in sizes:
        torch.manual_seed(0)
        model = fuse_for_deploy(build_model(ModelSpec(size, 80)))
        calib = [np.random.default_rng(i).random((4, 3, *hw), dtype=np.float32) for i in range(2)]
        graphs = {**stock_graphs(model, out / size, hw, calib),
                  **bundle_graphs(_quantized_twin(model, calib, hw), out / size, hw)}
        rows += speed_rows(f"{size} (random) {hw[0]}", load_paths(graphs, threads), hw, batches, seconds)
        profiled[f"{size} (random) {hw[0]}, batch 1"] = profiles(graphs, hw, 1, threads)
    if demo_checkpoint:
        demo_rows, accuracy = _demo(demo_checkpoint, val_annotations, calib_dir, out / "demo", batches, seconds,
                                    threads, demo_repository)
        rows += demo_rows
    report = {"rows": rows, "map50_95": accuracy, "paths": list(PATHS), "served": SERVED, "profiles": profiled,
              "machine": describe_machine()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_int8.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench_int8.md").write_text(markdown(report))
    return report


def served_graphs(repository: Path, checkpoint: Path) -> dict:
    """The bundle's paths as ``repository`` serves them: its CPU graph and the Q/DQ graph it came from."""
    from ..build_repo import read_manifest, served_int8_graph
    from ..errors import ConfigError

    manifest = read_manifest(repository)
    if Path(manifest["checkpoint"]["path"]).resolve() != Path(checkpoint).resolve():
        raise ConfigError(f"{repository} serves {manifest['checkpoint']['path']}, not {checkpoint}: rebuild it "
                          "with `make build-repo` or leave --demo-repository out")
    served = Path(manifest["detector"])
    qdq = served.parent / served_int8_graph("gpu")  # the quantize stage writes both graphs side by side
    for graph in (served, qdq):
        if not graph.is_file():
            raise ConfigError(f"{graph} is missing: rebuild {repository} with `make build-repo`")
    return {"bundle_openvino": ("openvino", served), "bundle_ort": ("ort", served), "qdq_openvino": ("openvino", qdq)}


def _demo(checkpoint: Path, annotations: Path, calib_dir: Path, out: Path, batches, seconds: float, threads: int,
          repository: Path | None = None):
    from ..data import CocoDataset
    from ..evaluate import EvalSettings, evaluate
    from ..model.checkpoint import load_deploy_model
    from ..quantize.calibration import load_batches

    model, info = load_deploy_model(checkpoint)
    hw = tuple(info.input_hw)
    calib = load_batches(calib_dir, hw, 128, 16, 0, False)
    bundle = served_graphs(repository, checkpoint) if repository is not None \
        else bundle_graphs(_quantized_twin(model, calib, hw), out, hw)
    detectors = load_paths({**stock_graphs(model, out, hw, calib), **bundle}, threads)
    dataset = CocoDataset(annotations)
    accuracy = {name: round(evaluate(d, dataset, hw, EvalSettings(), progress=False)["map50_95"], 4)
                for name, d in detectors.items()}
    log.info("demo mAP: %s", accuracy)
    return speed_rows(f"demo {hw[0]}", detectors, hw, batches, seconds), accuracy


def _ratio(row: dict, key: str) -> str:
    low, high = row["ratio_ranges"][key]
    return f"{row[key]}x ({low}-{high})"


def markdown(report: dict) -> str:
    names = {"openvino_fp32": "OpenVINO FP32 (upstream export)", "nncf_int8": "NNCF INT8 (stock)",
             "ort_stock_int8": "ORT quantize_static INT8 (stock)", "bundle_openvino": "**bundle INT8 CPU graph, OpenVINO (served)**",
             "bundle_ort": "bundle INT8 CPU graph, ORT", "qdq_openvino": "bundle Q/DQ as TensorRT's, OpenVINO"}
    lines = ["# CPU INT8: the served detector vs the stock CPU paths (img/s, one run)", "",
             *machine_header(report),
             "img/s: the median over interleaved rounds; ratios: the median of the ratios within each round "
             "(their range across rounds in brackets).", "",
             "| model | batch | " + " | ".join(names[p] for p in PATHS) + " | served / fastest stock INT8 | "
             "served / OpenVINO FP32 |", "|---" * (len(PATHS) + 4) + "|"]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(str(r[p]) for p in PATHS)
                     + "".join(f" | {_ratio(r, key)}" for key in RATIOS) + " |")
    if report["map50_95"]:
        acc = report["map50_95"]
        fp32 = acc["openvino_fp32"]
        lines += ["", "Demo model, mAP@0.5:0.95 on the val set (change vs OpenVINO FP32, points):", "",
                  "| path | mAP | change |", "|---|---|---|"]
        lines += [f"| {names[p]} | {acc[p]:.4f} | {100 * (acc[p] - fp32):+.2f} |" for p in PATHS]
    for label, profile in report.get("profiles", {}).items():
        from .profile_cpu import profile_table

        lines += ["", f"Where the time goes, {label} (ms per image by op group, the runtimes' own profilers; "
                  "their overhead makes totals exceed 1000 / img/s):", "",
                  profile_table({names[p].strip("*"): profile[p] for p in PATHS})]
    return "\n".join(lines) + "\n"
