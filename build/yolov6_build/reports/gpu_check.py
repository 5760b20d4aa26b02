"""``make gpu-check``: the acceptance run of the GPU flavour on a GPU host with docker (e.g. a T4).

Builds the gpu repository here (quantization needs no GPU), the INT8 and FP16 plans in the TensorRT
container, serves the repository in the Triton container and measures, in one run on one GPU:
plan throughput and structure (INT8 vs FP16), detections against the CPU flavour's pipeline, COCO
mAP through the server vs offline, ensemble QPS with DALI GPU preprocessing vs the same pipeline on
the CPU (Locust sweep), and the GPU memory each model adds. Writes gpu_check.{md,json} and PNG plots.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from .. import contract as c
from ..errors import BuildError, ConfigError

log = logging.getLogger(__name__)
COMPOSE = ["docker", "compose", "-f", "docker/docker-compose.yml"]
BOX_IOU_TOLERANCE = 0.9  # a served box matches the CPU flavour's when IoU >= this, same class
MIN_MATCHED_BOXES = 0.9  # acceptance: this fraction of the CPU flavour's boxes reproduced by the server
MAX_MAP_DROP_POINTS = 1.0  # acceptance: served INT8 mAP within this many points of offline FP32
USERS = (1, 8, 32)


def preflight() -> dict:
    """The GPU's name and driver; BuildError at once, saying what is missing, on a host that cannot run the check."""
    if shutil.which("nvidia-smi") is None:
        raise BuildError("gpu-check needs an NVIDIA GPU host: nvidia-smi not found (no GPU or no driver here)")
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", "0"],
                         capture_output=True, text=True, check=False).stdout.strip()
    if not gpu:
        raise BuildError("gpu-check: nvidia-smi lists no GPU")
    if shutil.which("docker") is None or subprocess.run([*COMPOSE[:2], "version"], capture_output=True).returncode:
        raise BuildError("gpu-check needs docker with the compose plugin and the NVIDIA container toolkit")
    name, _, driver = (part.strip() for part in gpu.rpartition(","))
    return {"gpu": name, "driver": driver, "driver_note": driver_note(driver)}


def driver_note(driver: str) -> str:
    """How this driver runs the release's CUDA (release.py has the sources)."""
    from ..release import CUDA_VERSION, MIN_DRIVER, RELEASE_DRIVER

    major = int(driver.split(".")[0]) if driver.split(".")[0].isdigit() else 0
    if major >= int(MIN_DRIVER):
        return f"R{major} runs CUDA {CUDA_VERSION} (R{MIN_DRIVER}+; the release ships with {RELEASE_DRIVER})"
    note = (f"R{major} is older than R{MIN_DRIVER}: CUDA {CUDA_VERSION} runs only through forward compatibility "
            "(data-centre GPUs such as the T4; the NGC entrypoint loads it). If Triton fails to start, update the "
            f"driver to R{MIN_DRIVER} or newer")
    log.warning("%s", note)
    return note


def image_versions() -> dict:
    """What the TensorRT image (builds the plan) and the Triton image (loads it) really run, read inside each
    (``yolov6_build.image_versions``); BuildError with both numbers when they cannot work together."""
    from ..image_versions import problems
    from ..release import CONTAINER_PYTHON, DALI_VERSION

    found = {}
    for service, profile in (("engine", ["--profile", "build"]), ("triton", [])):
        command = [*COMPOSE, *profile, "run", "--rm", "--build", "--no-deps", "--entrypoint", "python3", service,
                   "-m", "yolov6_build.image_versions"]
        log.info("$ %s", " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            raise BuildError(f"could not read the versions in the {service} image: {result.stderr.strip()[-800:]}")
        found[service] = json.loads(result.stdout[result.stdout.index("{"):])
    issues = problems(found["engine"], found["triton"], DALI_VERSION, CONTAINER_PYTHON)
    if issues:
        raise BuildError("the images do not fit together:\n- " + "\n- ".join(issues))
    return found


def _compose(*args: str, env: dict | None = None) -> None:
    log.info("$ %s", " ".join([*COMPOSE, *args]))
    owner = {"HOST_UID": str(os.getuid()), "HOST_GID": str(os.getgid())}  # the engine's files stay the user's
    subprocess.run([*COMPOSE, *args], check=True, env={**os.environ, **owner, **(env or {})})


def cpu_preprocess_variant(gpu_repo: Path, out: Path) -> Path:
    """The same repository with the preprocess running the pipeline on CPU (Python + DALI CPU): the baseline."""
    from ..repository import PIXELS, RepositoryConfig, preprocess_config

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(gpu_repo, out, ignore=shutil.ignore_patterns(c.DALI_MODEL))
    saved = json.loads((gpu_repo / "repository.json").read_text())
    cfg = RepositoryConfig(**{**saved, "flavour": "cpu", "cpu_preprocess": "dali",
                              "input_hw": tuple(saved["input_hw"]), "class_names": tuple(saved["class_names"])})
    # float32 images, as the gpu flavour's TensorRT detector reads; the JPEG warm-up file is the DALI model's
    without_warmup = preprocess_config(cfg, 0, PIXELS["gpu"]).split("model_warmup")[0]
    (out / c.PREPROCESS_MODEL / "config.pbtxt").write_text(without_warmup)
    return out


# load order for the per-model GPU memory reading: each model after the models it calls
LOAD_ORDER = (c.DALI_MODEL, c.PREPROCESS_MODEL, c.DETECTOR_MODEL, c.NMS_MODEL, c.ENSEMBLE_MODEL)


class ServedRepository:
    """``docker compose up triton`` on one repository folder (explicit model control), until the context ends.

    Loads the models one at a time through the repository API and records the GPU memory each adds.
    """

    def __init__(self, repository: Path):
        self.repository = repository
        self.key = secrets.token_hex(16)
        self.env = {"GPU_REPOSITORY": repository.name, "TRITON_ADMIN_KEY": self.key,
                    "TRITON_MODEL_CONTROL": "explicit"}
        self.memory_mib: dict[str, float] = {}

    def _wait(self, path: str, seconds: float = 600) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:8000{path}", timeout=2):
                    return
            except OSError:
                time.sleep(2)
        raise BuildError(f"Triton: {path} not ready in {seconds:.0f} s: docker compose logs triton")

    def _load(self, model: str) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:8000/v2/repository/models/{model}/load", data=b"{}",
                                         method="POST", headers={"triton-admin-key": self.key})
        with urllib.request.urlopen(request, timeout=600):
            pass

    def __enter__(self):
        before = gpu_memory_mib()
        _compose("up", "-d", "--build", "triton", env=self.env)
        try:
            self._wait("/v2/health/live")
            self.memory_mib["server"] = gpu_memory_mib() - before
            for model in LOAD_ORDER:
                if (self.repository / model).is_dir():
                    used = gpu_memory_mib()
                    self._load(model)
                    self.memory_mib[model] = gpu_memory_mib() - used
            self._wait("/v2/health/ready")
        except BaseException:
            self.__exit__()  # never leave a server holding the ports
            raise
        return self

    def __exit__(self, *exc):
        _compose("down", env=self.env)


def gpu_memory_mib() -> float:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True, check=False).stdout.strip()
    return float(out or "nan")


def compare_detections(served, reference) -> dict:
    """Fraction of the reference's boxes that the server reproduces (same class, IoU >= tolerance)."""
    import numpy as np

    from ..geometry import box_iou

    matched = total = 0
    for got, want in zip(served, reference):
        total += len(want)
        if len(want) and len(got):
            iou = box_iou(want.boxes_xyxy, got.boxes_xyxy)
            same = want.class_ids[:, None] == got.class_ids[None, :]
            matched += int(((iou >= BOX_IOU_TOLERANCE) & same).any(axis=1).sum())
    return {"reference_boxes": total, "matched": matched, "fraction": matched / total if total else float("nan"),
            "iou_tolerance": BOX_IOU_TOLERANCE, "count_equal": bool(np.all([len(a) == len(b) for a, b in
                                                                             zip(served, reference)]))}


def gpu_check(checkpoint: Path, calib: Path, annotations: Path, out_dir: Path, limit: int = 300) -> dict:
    from yolov6_client import TritonDetector
    from yolov6_client.evaluate import evaluate_server

    from ..build_repo import build_repository
    from ..data import CocoDataset
    from ..demo import sample_images
    from ..pipeline import InProcessPipeline
    from .loadtest import sweep, write_report

    if out_dir.is_absolute() or not out_dir.parts or out_dir.parts[0] != "artifacts":
        raise ConfigError(f"gpu-check writes under artifacts/ (the folder the engine container mounts), not {out_dir}")
    host = preflight()
    report: dict = {"gpu": f"{host['gpu']}, driver {host['driver']}", "host": host, "versions": image_versions()}
    out_dir.mkdir(parents=True, exist_ok=True)
    repo = Path("model_repository/gpu")
    build_repository(checkpoint, repo, "gpu", calib=calib)
    _compose("--profile", "build", "run", "--rm", "--build", "engine", str(repo), "--compare-fp16",
             "--report-dir", str(out_dir / "engines"))
    report["engines"] = json.loads((out_dir / "engines" / "engines.json").read_text())
    manifest = json.loads((repo / "manifest.json").read_text())
    input_hw = tuple(manifest["config"]["input_hw"])
    images = sample_images(out_dir / "images", 8)
    reference = InProcessPipeline(repo / manifest["engine"]["reference_onnx"], input_hw, preprocess="dali",
                                  pixels="float32")(
        [p.read_bytes() for p in images])
    with ServedRepository(repo) as served:
        report["gpu_memory_mib"] = served.memory_mib
        with TritonDetector("127.0.0.1:8001") as detector:
            report["detections_vs_cpu_flavour"] = compare_detections([detector.detect(p) for p in images], reference)
        report["corrupt_image_in_a_batch"] = corrupt_image_in_a_batch("127.0.0.1:8001", images)
        dataset = CocoDataset(annotations)
        report["map_server"] = evaluate_server(lambda: TritonDetector("127.0.0.1:8001"), dataset, limit)
        report["map_offline_fp32"] = _offline_map(repo / manifest["engine"]["reference_onnx"], dataset, input_hw,
                                                  limit)
        dali = sweep({"grpc": "grpc://127.0.0.1:8001"}, out_dir / "dali_gpu", USERS)
    with ServedRepository(cpu_preprocess_variant(repo, Path("model_repository/gpu_cpu_preprocess"))):
        cpu = sweep({"grpc": "grpc://127.0.0.1:8001"}, out_dir / "cpu_preprocess", USERS)
    write_report(dali, out_dir / "dali_gpu", "Ensemble, DALI GPU preprocessing")
    write_report(cpu, out_dir / "cpu_preprocess", "Ensemble, CPU preprocessing")
    report["qps"] = {"dali_gpu": {r.users: r.rps for r in dali}, "cpu_preprocess": {r.users: r.rps for r in cpu}}
    report["checks"] = acceptance(report)
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / "gpu_check.md").write_text(markdown(report))
    return report


def corrupt_image_in_a_batch(url: str, images: list[Path]) -> dict:
    """Images of three sizes and one truncated JPEG sent at once (one dynamic batch, one DALI batch on the GPU):
    the corrupt one must fail alone and every other answer as it does sent alone."""
    import io

    from PIL import Image
    from yolov6_client import ServerError, TritonDetector, detect_concurrently

    payloads = []
    for path, scale in zip(images, (1.0, 0.5, 1.7)):
        image = Image.open(path)
        buffer = io.BytesIO()
        image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale)))).save(buffer, "JPEG")
        payloads.append(buffer.getvalue())
    payloads.insert(1, payloads[0][: len(payloads[0]) // 3])
    together = detect_concurrently(url, payloads)
    with TritonDetector(url) as detector:
        alone = [detector.detect(data) for index, data in enumerate(payloads) if index != 1]
    others = [result for index, result in enumerate(together) if index != 1]

    def same(got, want) -> bool:
        return (not isinstance(got, Exception) and len(got) == len(want)
                and compare_detections([got], [want])["matched"] == len(want))

    return {"requests": len(payloads), "corrupt_failed_alone": isinstance(together[1], ServerError),
            "error": str(together[1])[:200], "others_as_alone": all(map(same, others, alone))}


def acceptance(report: dict) -> dict:
    """Pass/fail of the run's two correctness checks (speed is reported, not judged)."""
    drop = 100 * (report["map_offline_fp32"]["map50_95"] - report["map_server"]["map50_95"])
    bad_batch = report["corrupt_image_in_a_batch"]
    return {"detections_match": report["detections_vs_cpu_flavour"]["fraction"] >= MIN_MATCHED_BOXES,
            "map_drop_points": round(drop, 2), "map_within_tolerance": drop <= MAX_MAP_DROP_POINTS,
            "corrupt_image_isolated": bad_batch["corrupt_failed_alone"] and bad_batch["others_as_alone"]}


def passed(checks: dict) -> bool:
    return checks["detections_match"] and checks["map_within_tolerance"] and checks["corrupt_image_isolated"]


def _offline_map(onnx: Path, dataset, input_hw, limit: int) -> dict:
    from dataclasses import replace

    from yolov6_client.evaluate import SERVER_EVAL_SETTINGS

    from ..evaluate import evaluate, onnx_runner

    return evaluate(onnx_runner(onnx), dataset, input_hw, replace(SERVER_EVAL_SETTINGS, limit=limit))


def markdown(report: dict) -> str:
    det = report["detections_vs_cpu_flavour"]
    checks = report["checks"]
    verdict = "PASSED" if passed(checks) else "FAILED"
    bad_batch = report["corrupt_image_in_a_batch"]
    lines = [f"# GPU acceptance run on {report['gpu']}: {verdict}", "",
             *(f"- {service} image: TensorRT {v.get('tensorrt')}, CUDA {v.get('cuda')}, DALI {v.get('dali')}, "
               f"Python {v.get('python')}, numpy {v.get('numpy')}" for service, v in report.get("versions", {}).items()),
             "",
             f"One batch of {bad_batch['requests']} requests (three sizes and a truncated JPEG): the corrupt one "
             f"{'failed alone' if bad_batch['corrupt_failed_alone'] else 'did NOT fail alone'}, the others "
             f"{'answered as sent alone' if bad_batch['others_as_alone'] else 'did NOT answer as sent alone'}", "",
             f"Detections vs the CPU flavour's pipeline (FP32 ONNX): {det['matched']}/{det['reference_boxes']} boxes "
             f"matched (IoU >= {det['iou_tolerance']}, same class; accepted from {MIN_MATCHED_BOXES:.0%})", "",
             f"mAP@0.5:0.95 served {report['map_server']['map50_95']:.4f} vs offline FP32 "
             f"{report['map_offline_fp32']['map50_95']:.4f} (drop {checks['map_drop_points']} points, "
             f"accepted up to {MAX_MAP_DROP_POINTS})", "",
             "GPU memory added (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in report["gpu_memory_mib"].items()),
             "", "| users | QPS DALI GPU | QPS CPU preprocessing | ratio |", "|---|---|---|---|"]
    for users, rps in report["qps"]["dali_gpu"].items():
        cpu = report["qps"]["cpu_preprocess"].get(users) or float("nan")
        lines.append(f"| {users} | {rps:.1f} | {cpu:.1f} | {rps / cpu:.2f}x |")
    from ..engine.trt import engines_markdown

    return "\n".join(lines) + "\n\n" + engines_markdown(report["engines"])
