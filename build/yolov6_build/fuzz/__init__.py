"""Fuzzing the served decode routes: structure-aware mutations of every image format, each batch in a
child process, crashing batches bisected to their inputs, reproducers saved with their signal and
the operator that died. ``python -m yolov6_build fuzz`` (``make fuzz``); docs/hostile-images.md.
"""
