"""Exporters: torch -> ONNX (FP32 now; Q/DQ graphs build on the same entry point)."""
