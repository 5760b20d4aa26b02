"""INT8 quantization: PTQ (nvidia-modelopt), sensitivity analysis, partial PTQ, ORT INT8 for CPU."""
