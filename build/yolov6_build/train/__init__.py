"""CPU training of YOLOv6 v3.0: task-aligned assignment, varifocal + IoU (+ DFL) losses, EMA."""
