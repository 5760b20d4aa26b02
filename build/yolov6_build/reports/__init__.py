"""Measured reports: accuracy of every INT8 variant, and speed benchmarks (``make`` targets)."""
