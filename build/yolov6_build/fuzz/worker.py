"""The child process of a fuzz campaign: ``python -m yolov6_build.fuzz.worker``.

Batches arrive on stdin as frames (u32 count, then u32 length + bytes per image); each answer is one
JSON line on stdout with the batch's counts. A signal ends the process: the parent sees it in the
exit status and knows which batch did it. ``--probe OPERATOR`` runs one operator on stdin's bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys


def read_frame(stream) -> list[bytes] | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    items = []
    for _ in range(struct.unpack("<I", head)[0]):
        (length,) = struct.unpack("<I", stream.read(4))
        items.append(stream.read(length))
    return items


def write_frame(stream, items: list[bytes]) -> None:
    stream.write(struct.pack("<I", len(items)) + b"".join(struct.pack("<I", len(i)) + i for i in items))
    stream.flush()


def _serve(args) -> int:
    from .routes import make_route

    route = make_route(args.route, (args.input_size, args.input_size), args.batch_size, guarded=not args.unguarded,
                       threads=args.threads)
    answer = os.fdopen(os.dup(1), "w")  # answers on a private fd: native code printing to stdout cannot corrupt them
    os.dup2(2, 1)
    print(json.dumps({"ready": True}), file=answer, flush=True)
    while (batch := read_frame(sys.stdin.buffer)) is not None:
        try:
            results = route(batch)
        except Exception as exc:  # not a crash, but a route must answer per image: the campaign reports it
            print(json.dumps({"answered": 0, "errors": len(batch), "exception": repr(exc)[:300]}), file=answer, flush=True)
            continue
        errors = sum(isinstance(r, Exception) or r is None for r in results)
        print(json.dumps({"answered": len(results), "errors": errors}), file=answer, flush=True)
    return 0


def _probe(args) -> int:
    from .routes import OPERATORS

    try:
        OPERATORS[args.probe](sys.stdin.buffer.read())
    except Exception as exc:  # an operator's error is an answer; only a signal is a crash
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc).strip()[-200:]}"}), flush=True)
        return 0
    print(json.dumps({"ok": True}), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--route", default="opencv")
    parser.add_argument("--unguarded", action="store_true")
    parser.add_argument("--input-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="DALI's CPU threads (the served default: 2)")
    parser.add_argument("--probe", help="run one operator of routes.OPERATORS on stdin")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return _probe(args) if args.probe else _serve(args)


if __name__ == "__main__":
    sys.exit(main())
