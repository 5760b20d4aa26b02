"""TensorRT engines (GPU host only; TensorRT is imported lazily)."""
