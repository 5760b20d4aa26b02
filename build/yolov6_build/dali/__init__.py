"""DALI decode + letterbox pipelines (CPU for the embedded server, GPU for the Triton DALI backend)."""
