"""``bulkpatch translate``: rewrite xcore (legacy API) job lines as DPS job lines."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from bulkpatch.cli.exits import EXIT_FAILED_ITEMS, EXIT_OK
from bulkpatch.cli.logs import add_logging_options
from bulkpatch.cli.options import add_output
from bulkpatch.cli.parser import ENV_LOCAL, EXITS_LOCAL, epilog
from bulkpatch.errors import ConfigError
from bulkpatch.preflight import check_outputs
from bulkpatch.translate import Counts, translate_files


def add_translate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "translate",
        help="rewrite xcore (legacy API) job lines as DPS job lines",
        description="Rewrite job lines written for the legacy xcore API (ids of xcore "
        "instances, paths under /_instance/ with xdm: and dc: names) as DPS job lines. "
        "Ids cannot be derived: --id-map supplies them. A line that cannot be mapped "
        "with certainty is refused, with the reason, to --refused. Exit 0: every line "
        "translated; 1: some refused; 2: bad usage.",
        epilog=epilog(
            ENV_LOCAL,
            [("0", "every line translated"), ("1", "some lines refused (see --refused)"), EXITS_LOCAL[1]],
            [
                "bulkpatch translate xcore-jobs.ndjson --from xcore --to dps --id-map ids.ndjson -o jobs.ndjson",
                "curl -s http://127.0.0.1:8765/_sim/xcore-ids > ids.ndjson    # the simulator's map",
            ],
        ),
    )
    add_logging_options(p)
    p.add_argument("input", nargs="?", default="-", help="NDJSON job file (default: '-', stdin)")
    p.add_argument(
        "--from",
        dest="source_api",
        required=True,
        choices=("xcore", "dps"),
        help="the API the jobs were written for (xcore: the only one translated from)",
    )
    p.add_argument(
        "--to",
        dest="target_api",
        required=True,
        choices=("xcore", "dps"),
        help="the API to write jobs for (dps: the only one translated to)",
    )
    p.add_argument(
        "--id-map",
        type=Path,
        metavar="FILE",
        help='NDJSON {"xcore": ..., "dps": ...} lines: the DPS id of each xcore id '
        "(default: none, and every line is refused naming its ids)",
    )
    add_output(p.add_argument_group("output"), "the DPS jobs")
    p.add_argument(
        "--refused",
        type=Path,
        metavar="PATH",
        help='refused lines as NDJSON {"line", "error", "raw", "unmapped"} '
        "(default: one log event each on stderr)",
    )
    p.set_defaults(func=cmd_translate, usage_event="translate.usage")


def cmd_translate(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    return run_translate(args)


async def run_translate(
    args: argparse.Namespace, *, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None
) -> int:
    """The command: exit 0 (every line translated) or 1 (some refused, or stdout's
    reader left); ``ConfigError`` for bad usage (exit 2)."""
    _check_usage(args)
    counts = await translate_files(
        args.input,
        id_map=args.id_map,
        output=args.output,
        refused=args.refused,
        stdin=stdin,
        stdout=stdout,
    )
    if not counts.complete and args.output is None:
        _stdout_gone()
    _log_summary(counts, args.refused)
    if counts.refused or not counts.complete:
        return EXIT_FAILED_ITEMS
    return EXIT_OK


def _check_usage(args: argparse.Namespace) -> None:
    """Only xcore to dps; no two of the files named alike (``ConfigError``)."""
    if (args.source_api, args.target_api) != ("xcore", "dps"):
        raise ConfigError(
            f"cannot translate from {args.source_api} to {args.target_api}: "
            "only --from xcore --to dps is supported"
        )
    named = {"--output": args.output, "--refused": args.refused, "--id-map": args.id_map}
    if args.input != "-":
        named["INPUT"] = Path(args.input)
    given = [(k, v) for k, v in named.items() if v is not None]
    for n, (name_a, a) in enumerate(given):
        for name_b, b in given[n + 1 :]:
            # Opening an output truncates it: the input or the map would be lost.
            if a.resolve() == b.resolve():
                raise ConfigError(f"{name_a} and {name_b} must be different files")
    check_outputs([("--output", args.output), ("--refused", args.refused)])


def _log_summary(counts: Counts, refused: Path | None) -> None:
    structlog.get_logger().info(
        "translate.summary",
        lines=counts.lines,
        translated=counts.translated,
        refused=counts.refused,
        **({"refusals": str(refused)} if refused is not None and counts.refused else {}),
        **({} if counts.complete else {"stopped": "stdout closed"}),
    )


def _stdout_gone() -> None:
    """What the interpreter flushes at exit goes nowhere instead of raising again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
