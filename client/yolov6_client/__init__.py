"""Client library for the YOLOv6 Triton ensemble (gRPC or HTTP via tritonclient)."""

from .detector import ServerError, TritonDetector, detect_concurrently

__all__ = ["TritonDetector", "ServerError", "detect_concurrently"]
