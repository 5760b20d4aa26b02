"""Benchmark reports name the machine they ran on (reports/machine.py)."""

import os
from pathlib import Path

from yolov6_build.reports.machine import cpu_description, describe_machine, machine_line

TWO_PROCESSORS = """processor\t: 0
model name\t: Example CPU 9000
flags\t\t: fpu sse avx2 avx512f avx512_vnni amx_int8 amx_tile
processor\t: 1
model name\t: Example CPU 9000
flags\t\t: fpu sse avx2 avx512f avx512_vnni amx_int8 amx_tile
"""


def test_the_cpu_is_its_model_name_and_the_flags_that_choose_kernels():
    described = cpu_description(TWO_PROCESSORS)
    assert described["cpu"] == "Example CPU 9000"
    assert described["isa"] == ["avx2", "avx512f", "avx512_vnni", "amx_int8"]  # fpu, sse, amx_tile: not kernel choices
    assert cpu_description("")["cpu"] == "unknown" and cpu_description("")["isa"] == []


def test_this_machine_is_described_as_its_kernel_reports_it():
    machine = describe_machine()
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    assert machine["cores"] == os.cpu_count() and set(machine["isa"]) <= set(flags)
    # OpenVINO's own choice for float layers on this CPU: bf16 only where the CPU computes it
    assert machine["openvino_float_precision"] in (("bf16", "f32") if "avx512_bf16" in flags else ("f32",))
    line = machine_line(machine)
    assert line.startswith(f"Machine: {machine['cpu']}, {os.cpu_count()} cores")
    assert f"OpenVINO {machine['openvino']}" in line and f"ONNX Runtime {machine['onnxruntime']}" in line
