"""YOLOv6 v3.0 in PyTorch: layers, variants, checkpoints and deploy conversion (imports torch)."""
