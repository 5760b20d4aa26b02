"""Hostile-input commands: fuzz (the decode routes in child processes) and fuzz-server (a live server's PIDs)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .common import log


def _names(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(allowed) if text == "all" else tuple(n.strip() for n in text.split(",") if n.strip())
        unknown = set(names) - set(allowed)
        if unknown or not names:
            raise ConfigError(f"choose from {', '.join(allowed)} or 'all', got {text!r}")
        return names
    return parse


def add_fuzz(sub) -> None:
    from ..fuzz.routes import ROUTES
    from ..fuzz.seeds import FORMATS

    p = sub.add_parser("fuzz", help="mutated images of every format through the served decode routes, each batch in "
                                    "a child process; crashes bisected and saved (report in artifacts/reports/fuzz)")
    p.add_argument("--routes", default="all", help=f"comma list of {', '.join(ROUTES)} (default all)")
    p.add_argument("--formats", default="all", help=f"comma list of {', '.join(FORMATS)} (default all)")
    p.add_argument("--seconds", type=float, default=600.0, help="time per route (default 600)")
    p.add_argument("--inputs-per-format", type=int, default=0,
                   help="stop a format after this many inputs (default 0: time only)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8, the served max)")
    p.add_argument("--seed", type=int, default=0, help="picks the mutations: the same seed replays a campaign")
    p.add_argument("--unguarded", action="store_true",
                   help="skip admission (any header Pillow reads): hunt the decoders' own crashes")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="report folder (default artifacts/reports/fuzz, or fuzz_unguarded with --unguarded)")
    p.set_defaults(func=run_fuzz)


def run_fuzz(args) -> int:
    from ..fuzz.campaign import Campaign
    from ..fuzz.routes import ROUTES
    from ..fuzz.seeds import FORMATS

    if args.batch_size < 1 or args.seconds <= 0:
        raise ConfigError("--batch-size must be at least 1 and --seconds positive")
    output = args.output or Path("artifacts/reports/fuzz_unguarded" if args.unguarded else "artifacts/reports/fuzz")
    campaign = Campaign(routes=_names(ROUTES)(args.routes), formats=_names(FORMATS)(args.formats),
                        seconds=args.seconds, inputs_per_format=args.inputs_per_format, batch_size=args.batch_size,
                        guarded=not args.unguarded, seed=args.seed, out_dir=output).run()
    print(campaign.markdown())
    log.info("report: %s", output / "fuzz.md")
    return 1 if campaign.crashes or campaign.exceptions else 0



def add_fuzz_server(sub) -> None:
    from .common import CPU_REPOSITORY

    p = sub.add_parser("fuzz-server", help="serve a repository and send it mutated images of every format (and the "
                                           "crash corpus): every answer clear, every server process kept (same PIDs)")
    p.add_argument("repository", type=Path, nargs="?", default=CPU_REPOSITORY)
    p.add_argument("--count", type=int, default=5000, help="mutated images to send (default 5000)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8: dynamic batches form)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpus", type=Path, default=Path("tests/reliability/fuzz_corpus"),
                   help="also send every file of this folder (default: the crash corpus)")
    p.add_argument("--work-dir", type=Path, default=Path("artifacts/server_fuzz"))
    p.set_defaults(func=run_fuzz_server)


def run_fuzz_server(args) -> int:
    from ..fuzz.server_stream import stream_mutants
    from ..server import ServerOptions, TritonServer

    if not (args.repository / "repository.json").exists():
        raise ConfigError(f"{args.repository} is not a built repository (run `make build-repo`)")
    corpus = sorted(p for p in args.corpus.glob("*") if p.suffix != ".json") if args.corpus.is_dir() else []
    with TritonServer(args.repository, args.work_dir, ServerOptions.on_free_ports()) as server:
        report = stream_mutants(server.grpc_url, server.process.pid, args.count, args.seed, args.concurrency, corpus)
        ready = server.is_ready()
    print(report.markdown())
    return 0 if report.ok and ready else 1


COMMANDS = (add_fuzz, add_fuzz_server)
