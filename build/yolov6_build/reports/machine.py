"""What a benchmark ran on: the CPU, its cores, the instruction sets the CPU runtimes choose kernels by,
and the runtimes' versions.

The same command reads differently on another CPU. On one with AMX tiles OpenVINO runs an FP32 graph's
layers in bf16 on them by default, and at 320 pixels an INT8 convolution there costs about what a bf16
one does: INT8 over "FP32" fell from 1.5-2x to 1.15-1.46x on the demo model between two machines of this
project. Each benchmark report therefore names its machine, so a number is read with it.
"""

from __future__ import annotations

import os
from pathlib import Path

# the flags that decide which convolution kernels OpenVINO and ONNX Runtime pick on x86
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_description(cpuinfo: str | None = None) -> dict:
    """{cpu, cores, isa} from ``cpuinfo`` (the text of /proc/cpuinfo; read from the machine when None)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())  # the first processor's entry
    flags = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name", "unknown"), "cores": os.cpu_count(),
            "isa": [flag for flag in ISA_FLAGS if flag in flags]}


def describe_machine() -> dict:
    """The CPU, plus the installed runtimes' versions and OpenVINO's precision for float layers on this CPU
    (its default: bf16 where the CPU has it, so an "FP32" graph may not run in f32)."""
    machine = cpu_description()
    try:
        import openvino

        precision = openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
        machine.update(openvino=openvino.__version__.split("-")[0], openvino_float_precision=precision.get_type_name())
    except ImportError:
        pass
    try:
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return machine


def machine_line(machine: dict) -> str:
    """One markdown line naming the machine of a report."""
    runtimes = []
    if "openvino" in machine:
        runtimes.append(f"OpenVINO {machine['openvino']} (float layers in {machine['openvino_float_precision']})")
    if "onnxruntime" in machine:
        runtimes.append(f"ONNX Runtime {machine['onnxruntime']}")
    isa = ", ".join(machine["isa"]) or "none of " + ", ".join(ISA_FLAGS)
    return f"Machine: {machine['cpu']}, {machine['cores']} cores ({isa}); {', '.join(runtimes or ['no CPU runtime'])}."


def machine_header(report: dict) -> list[str]:
    """A report's markdown lines naming its machine, then a blank line; none for a report without one."""
    return [machine_line(report["machine"]), ""] if "machine" in report else []
