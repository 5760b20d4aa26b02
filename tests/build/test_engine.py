"""TensorRT plan building: runs only where TensorRT and a GPU exist; parsers are tested everywhere."""

import pytest

from yolov6_build.engine.trt import EngineConfig, parse_trtexec, summarize_layers, tensorrt_available

TRTEXEC_TAIL = """
[I] === Performance summary ===
[I] Throughput: 152.3 qps
[I] Latency: min = 6.1 ms, max = 7.9 ms, mean = 6.5 ms, median = 6.4 ms, percentile(90%) = 6.9 ms, percentile(95%) = 7.1 ms, percentile(99%) = 7.6 ms
"""


def test_trtexec_summary_is_parsed():
    result = parse_trtexec(TRTEXEC_TAIL, batch=8)
    assert result["images_per_s"] == pytest.approx(152.3 * 8)
    assert result["latency_p99_ms"] == 7.6 and result["latency_p50_ms"] == 6.4


def test_layer_summary_counts_precisions_and_reformats():
    layers = [{"Name": "conv1 + relu", "LayerType": "CaskConvolution", "Outputs": [{"Format/Datatype": "Int8 NC/32HW32"}]},
              {"Name": "Reformatting CopyNode for Input Tensor 0", "LayerType": "Reformat",
               "Outputs": [{"Format/Datatype": "Half NCHW"}]},
              {"Name": "head", "LayerType": "CaskConvolution", "Outputs": [{"Format/Datatype": "Float NCHW"}]}]
    summary = summarize_layers(layers)
    assert summary["layers"] == 3 and summary["reformat_layers"] == 1
    assert summary["precisions"] == {"int8": 1, "fp16": 1, "fp32": 1}


def test_engine_config_validates():
    assert EngineConfig().precision == "int8"
    with pytest.raises(Exception, match="precision"):
        EngineConfig(precision="fp8")
    assert EngineConfig(max_batch_size=8).opt_batch_size == 2 and EngineConfig(max_batch_size=1).opt_batch_size == 1
    with pytest.raises(Exception, match="opt_batch_size"):
        EngineConfig(max_batch_size=4, opt_batch_size=5)


@pytest.mark.trt
@pytest.mark.skipif(not tensorrt_available(), reason="TensorRT and a GPU are not available here; plans are built in "
                                                       "the TensorRT container (docker compose run engine)")
def test_build_int8_plan_from_qdq_graph(tmp_path):
    import numpy as np

    from yolov6_build.engine.trt import build_engine
    from yolov6_build.export.onnx import export_onnx
    from yolov6_build.model.yolo import ModelSpec, build_model, fuse_for_deploy
    from yolov6_build.quantize.merge import merge_scales
    from yolov6_build.quantize.ptq import PtqConfig, quantize_ptq

    model = fuse_for_deploy(build_model(ModelSpec("n", 80)))
    quant = quantize_ptq(model, [np.random.rand(2, 3, 320, 320).astype(np.float32)], PtqConfig("max"), progress=False)
    merge_scales(quant, (320, 320))
    onnx_path = export_onnx(quant, tmp_path / "qdq.onnx", (320, 320), topk=1000)
    plan = build_engine(onnx_path, tmp_path / "model.plan", EngineConfig(input_hw=(320, 320), max_batch_size=4,
                                                                           timing_cache_dir=None))
    report = (tmp_path / "model.layers.json").read_text()
    assert plan.stat().st_size > 0 and "int8" in report


def test_engine_table_reports_the_int8_to_fp16_and_opt_batch_ratios_per_batch():
    from yolov6_build.engine.trt import OPT_AT_MAX, engines_markdown

    def engine(rates):
        return {"layers": 80, "reformat_layers": 0, "precisions": {"int8": 70},
                "runs": [{"batch": b, "images_per_s": r, "latency_mean_ms": 1.0} for b, r in rates]}

    table = engines_markdown({"input_hw": [640, 640], "opt_batch_size": 2, "engines": {
        "int8": engine([(1, 300.0), (8, 1400.0)]), "fp16": engine([(1, 250.0), (8, 1000.0)]),
        OPT_AT_MAX: engine([(1, 200.0), (8, 1400.0)])}})
    assert "INT8/FP16 at batch 1: **1.20x**" in table and "INT8/FP16 at batch 8: **1.40x**" in table
    assert "opt batch 2 / opt batch = max at batch 1: **1.50x**" in table


BLOCKED = ("torch", "onnx", "onnxruntime", "modelopt", "nvidia.dali", "cv2", "PIL", "tritonclient")


def test_builder_imports_nothing_but_tensorrt_and_the_standard_library(tmp_path):
    """The TensorRT image has none of these: the builder and its entry point must not need them."""
    import json
    import subprocess
    import sys

    repo = tmp_path / "gpu"
    repo.mkdir()
    engine = {"onnx": "yolov6_detector/onnx/detector_qdq.onnx", "precision": "int8",
              "fp16_baseline_onnx": "yolov6_detector/onnx/detector_fp16.onnx",
              "reference_onnx": "yolov6_detector/onnx/detector_fp32.onnx", "typing": "strong",
              "plan": "yolov6_detector/1/model.plan", "input_hw": [384, 640], "max_batch_size": 16}
    (repo / "manifest.json").write_text(json.dumps({"engine": engine}))
    script = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # import fails, as in the TensorRT image
from yolov6_build.engine.trt import plan_from_manifest
plan = plan_from_manifest({str(repo)!r})
print(plan.config.input_hw, plan.config.max_batch_size, plan.config.precision, plan.plan.name)
third_party = {{name.split(".")[0] for name, module in sys.modules.items() if module is not None}}
third_party -= set(sys.stdlib_module_names) | {{"yolov6_build", "__main__", "_distutils_hack"}}
print(sorted(name for name in third_party if not name.startswith("_")))
from yolov6_build.engine.cli import main
sys.exit(main([{str(repo)!r}]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.splitlines()[0] == "(384, 640) 16 int8 model.plan", result.stderr
    assert result.stdout.splitlines()[1] == "[]"  # nothing imported beyond the standard library
    # no TensorRT here: the entry point gets as far as saying so
    assert result.returncode == 1 and "TensorRT and a GPU are needed" in result.stderr


def test_manifest_without_engine_section_is_refused(tmp_path):
    from yolov6_build.engine.trt import plan_from_manifest

    (tmp_path / "manifest.json").write_text('{"stage": "build-repo"}')
    with pytest.raises(Exception, match="not a gpu repository"):
        plan_from_manifest(tmp_path)
    with pytest.raises(Exception, match="no manifest.json"):
        plan_from_manifest(tmp_path / "missing")
    (tmp_path / "manifest.json").write_text('{"engine": {"onnx": "a.onnx", "precision": "int8"}}')
    with pytest.raises(Exception, match="older build-repo"):  # FP32 graphs: a strongly typed build would run FP32
        plan_from_manifest(tmp_path)


def test_timing_cache_is_keyed_by_tensorrt_version_and_gpu(tmp_path):
    from yolov6_build.engine.trt import timing_cache_path

    t4 = timing_cache_path(tmp_path, "10.14.1.48", "Tesla T4")
    assert t4.parent == tmp_path and "10.14.1.48" in t4.name and "Tesla-T4" in t4.name
    assert len({t4, timing_cache_path(tmp_path, "10.5.0", "Tesla T4"),
                timing_cache_path(tmp_path, "10.14.1.48", "NVIDIA A10G")}) == 3


def test_gpu_repository_manifest_drives_the_plan(checkpoint, tmp_path):
    """build-repo --flavour gpu writes what the builder reads: graphs in the repository, its size and batch."""
    from yolov6_build.build_repo import build_repository
    from yolov6_build.engine.trt import plan_from_manifest

    build_repository(checkpoint, tmp_path / "gpu", "gpu", max_batch_size=16)
    plan = plan_from_manifest(tmp_path / "gpu")
    assert plan.config.input_hw == (320, 320) and plan.config.max_batch_size == 16
    assert plan.onnx.is_file() and plan.fp16_baseline_onnx.is_file() and plan.reference_onnx.is_file()
    assert plan.config.opt_batch_size == 2
    assert plan.plan == tmp_path / "gpu" / "yolov6_detector" / "1" / "model.plan"
    config = (tmp_path / "gpu" / "yolov6_detector" / "config.pbtxt").read_text()
    assert "max_batch_size: 16" in config and "dims: [ 3, 320, 320 ]" in config


@pytest.mark.parametrize("major", [10, 11])
def test_plan_is_built_strongly_typed_without_precision_flags(major, tmp_path, monkeypatch):
    """TensorRT 11 has no FP16/INT8 builder flags (weak typing is gone); 10.x builds the same typed graphs
    strongly typed too, so one code path serves whichever the release ships."""
    import sys

    from tests.build.fake_tensorrt import fake_tensorrt
    from yolov6_build.engine import trt as builder

    trt = fake_tensorrt(major)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(builder, "gpu_name", lambda: "Tesla T4")  # the timing cache's key; no nvidia-smi here
    (tmp_path / "graph.onnx").write_bytes(b"onnx")
    plan = builder.build_engine(tmp_path / "graph.onnx", tmp_path / "model.plan",
                        EngineConfig(input_hw=(384, 640), max_batch_size=8, timing_cache_dir=str(tmp_path)))
    calls = dict(trt.calls)
    assert calls["create_network"] == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert "set_flag" not in calls  # no precision flags: the graph's types decide
    assert calls["profile"] == {"images": ((1, 3, 384, 640), (2, 3, 384, 640), (8, 3, 384, 640))}
    assert calls["build"] == trt.ProfilingVerbosity.DETAILED
    assert plan.read_bytes() == b"plan bytes" and "int8" in plan.with_suffix(".layers.json").read_text()
