"""Many images through the server: a bounded number of requests in flight, results in input order.

Each worker thread owns its connection (tritonclient's HTTP client is not thread-safe), so
``concurrency`` is exactly the number of requests the server sees at once from this client.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Sequence

from yolov6_build.geometry import Detections

from .detector import ServerError, TritonDetector

Image = Path | str | bytes


def detect_all(connect: Callable[[], TritonDetector], images: Sequence[Image], concurrency: int = 8,
               progress: bool = True, desc: str = "detect", **thresholds) -> list[Detections | ServerError]:
    """Detections (or the ServerError of that image) for every image, in input order.

    ``connect`` makes one TritonDetector per worker; ``thresholds`` go to ``TritonDetector.detect``.
    """
    from tqdm import tqdm

    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    local, opened, lock = threading.local(), [], threading.Lock()

    def detector() -> TritonDetector:
        if not hasattr(local, "detector"):
            local.detector = connect()
            with lock:
                opened.append(local.detector)
        return local.detector

    def one(image: Image) -> Detections | ServerError:
        try:
            return detector().detect(image, **thresholds)
        except ServerError as exc:
            return exc
        except OSError as exc:  # unreadable file: that image fails, the rest go on
            return ServerError(f"cannot read {image}: {exc}")

    results: list[Detections | ServerError | None] = [None] * len(images)
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool, \
                tqdm(total=len(images), desc=desc, unit="img", disable=not progress or None) as bar:
            futures = {pool.submit(one, image): index for index, image in enumerate(images)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    finally:
        for d in opened:
            d.close()
    return results
