"""Client library for the YOLOv6 Triton ensemble (gRPC or HTTP via tritonclient)."""

from .detector import ServerError, TritonDetector

__all__ = ["TritonDetector", "ServerError"]
