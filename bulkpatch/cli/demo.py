"""``bulkpatch demo``: a mixed job file against an in-process simulator, checked."""

from __future__ import annotations

import argparse
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bulkpatch.cli.logs import add_logging_options, log_format
from bulkpatch.cli.parser import ENV_LOCAL, EXITS_LOCAL, epilog
from bulkpatch.errors import ConfigError


def add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run a mixed job file against an in-process simulator and check the result",
        description="Start a simulator with faults, seed offers, run a mixed job file "
        "(replaces, appends, test+replace) through the engine, and check the final state.",
        epilog=epilog(
            ENV_LOCAL,
            [("0", "the final state is every job applied once, in order"), ("1", "it is not"), EXITS_LOCAL[1]],
            ["bulkpatch demo", "bulkpatch demo --offers 1000 --workdir demo/    # keeps the files"],
        ),
    )
    add_logging_options(p)
    p.add_argument("--offers", type=int, default=200, help="offers to seed (default 200)")
    p.add_argument("--jobs-per-offer", type=int, default=5, help="jobs per offer (default 5)")
    p.add_argument(
        "--workdir",
        type=Path,
        help="where to write jobs and outcomes, kept (default: a temporary directory, removed)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """0 when the final state is every job applied once, in order; else 1."""
    # Imported here: the simulator is loaded only by the commands that serve one.
    from bulkpatch.demo import demo

    if args.workdir is not None:
        try:
            args.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--workdir {args.workdir}: cannot be made a directory ({exc.strerror})") from None
    return demo(
        offers=args.offers,
        per_offer=args.jobs_per_offer,
        workdir=args.workdir,
        as_event=log_format(args) == "json",
    )
