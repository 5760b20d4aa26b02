"""One exception family, so the CLI can turn any of them into a one-line reason and exit 1."""


class BuildError(Exception):
    """Base of every error this package raises on purpose; the message says how to fix it."""


class ConfigError(BuildError):
    """An option or configuration value is invalid."""


class CheckpointError(BuildError):
    """A checkpoint file is missing, truncated, not YOLOv6, or does not fit the requested model."""


class UnsafePickleError(CheckpointError):
    """A pickle asked to import or call something outside the allow-list."""


class ArtifactError(BuildError):
    """A build artifact (ONNX, plan, repository) is missing or inconsistent."""


class DependencyError(BuildError):
    """An optional dependency is not installed or too old."""
