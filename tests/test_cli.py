"""The command line: help for every subcommand, exit codes and one-line errors."""

import json
import subprocess
import sys

import pytest

from yolov6_build.cli import build_parser, main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "yolov6_build", *args], capture_output=True, text=True)


COMMANDS = ["inspect", "fuse", "export-onnx", "build-repo", "serve", "demo", "make-dataset", "train", "quantize",
            "sensitivity", "quant-report", "bench-int8", "bench-nms", "lint-qdq", "build-engine", "eval", "fleet"]


def test_help_lists_subcommands():
    result = _run("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_has_help(command):
    result = _run(command, "--help")
    assert result.returncode == 0 and "usage: yolov6_build " + command in result.stdout


def test_usage_error_exits_2():
    assert _run("export-onnx").returncode == 2
    assert _run("export-onnx", "x.pt", "-o", "y.onnx", "--img-size", "100").returncode == 2


def test_failure_exits_1_with_one_line_reason(tmp_path):
    result = _run("inspect", str(tmp_path / "missing.pt"))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: checkpoint not found")
    assert len(result.stderr.strip().splitlines()) == 1


def test_inspect_fuse_export_smoke(tmp_path, model_n, capsys):
    from yolov6_build.model.checkpoint import save_checkpoint

    release = str(save_checkpoint(model_n, tmp_path / "n.pt"))  # a train-structure checkpoint, 80 classes
    assert main(["inspect", release]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["size"] == "n" and summary["num_classes"] == 80 and not summary["deploy"]
    assert main(["fuse", release, "-o", str(tmp_path / "deploy.pt")]) == 0
    assert main(["inspect", str(tmp_path / "deploy.pt")]) == 0
    assert json.loads(capsys.readouterr().out)["deploy"] is True
    assert main(["export-onnx", str(tmp_path / "deploy.pt"), "-o", str(tmp_path / "m.onnx"), "--img-size", "320"]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 1e6


def test_parser_builds_without_heavy_imports():
    code = ("import sys; from yolov6_build.cli import build_parser; build_parser(); "
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert build_parser().prog == "yolov6_build"


def test_gpu_check_without_a_gpu_stops_at_once_and_says_why():
    import shutil
    import subprocess
    import sys
    import time

    if shutil.which("nvidia-smi"):
        pytest.skip("this host has nvidia-smi: gpu-check would run for real")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "yolov6_build", "gpu-check"], capture_output=True, text=True)
    assert result.returncode == 1 and "nvidia-smi not found" in result.stderr
    assert time.monotonic() - started < 30  # nothing was built first


def test_configuration_errors_exit_2(tmp_path, capsys):
    checkpoint = "models/yolov6n_synthetic_320.pt"
    assert main(["build-repo", checkpoint, "-o", str(tmp_path / "repo"), "--max-batch-size", "0"]) == 2
    assert "max_batch_size must be >= 1" in capsys.readouterr().err


def test_build_repo_and_quantize_read_the_same_ptq_options():
    from yolov6_build.cli.quantize import ptq_config

    options = ["--calib", "calib/", "--calibrator", "percentile", "--percentile", "99.9", "--exclude",
               "detect.cls_convs.0.block.conv", "detect.reg_convs.0.block.conv", "--float-stem"]
    configs = [ptq_config(build_parser().parse_args([command, "model.pt", *options]))
               for command in ("build-repo", "quantize", "sensitivity")]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].exclude == ("detect.cls_convs.0.block.conv", "detect.reg_convs.0.block.conv")
    assert configs[0].percentile == 99.9 and configs[0].calibrator == "percentile" and configs[0].float_stem


def test_served_admin_key_comes_from_the_secret_file_or_the_environment(tmp_path, monkeypatch):
    from yolov6_build.cli.common import admin_key_from_environment
    from yolov6_build.errors import ConfigError

    monkeypatch.delenv("TRITON_ADMIN_KEY", raising=False)
    monkeypatch.delenv("TRITON_ADMIN_KEY_FILE", raising=False)
    assert admin_key_from_environment() is None  # the server makes a random one
    monkeypatch.setenv("TRITON_ADMIN_KEY", "from-env")
    assert admin_key_from_environment() == "from-env"
    key_file = tmp_path / "admin-key"
    key_file.write_text("from-file\n")
    monkeypatch.setenv("TRITON_ADMIN_KEY_FILE", str(key_file))
    assert admin_key_from_environment() == "from-file"  # a mounted Secret wins
    key_file.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        admin_key_from_environment()


def test_demo_ends_with_where_things_are_and_what_to_try(tmp_path):
    from pathlib import Path

    from yolov6_build.cli.common import CPU_REPOSITORY
    from yolov6_build.cli.serving import demo_next_steps

    default = demo_next_steps(Path("artifacts/demo/annotated"), CPU_REPOSITORY)
    assert "artifacts/demo/annotated/" in default and f"{CPU_REPOSITORY}/" in default
    assert "make serve" in default and "yolov6_client" in default and "make build-repo CHECKPOINT=" in default
    elsewhere = demo_next_steps(tmp_path / "annotated", tmp_path / "repo")  # make serve would serve another one
    assert "make serve" not in elsewhere and f"yolov6_build serve {tmp_path / 'repo'}" in elsewhere
