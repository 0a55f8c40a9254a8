"""The command line: argparse → frozen config → the library → an exit status.

Each subcommand has its module (``run`` holds run, plan and rollback); ``options`` the
options several share, ``exits`` the exit statuses and the one mapping from errors to
them, ``logs`` the logging set-up, done here and nowhere else in bulkpatch.

A subcommand's ``func(args)`` returns the coroutine that does the work and gives the
exit status; it raises ``ConfigError`` for bad usage, before or while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bulkpatch._version import __version__
from bulkpatch.cli.completion import add_completion
from bulkpatch.cli.config import add_config
from bulkpatch.cli.demo import add_demo
from bulkpatch.cli.exits import EXIT_INTERRUPTED, USAGE_EVENT, log_error
from bulkpatch.cli.export import add_export
from bulkpatch.cli.logs import add_logging_options, configure_logging, log_format, verbosity
from bulkpatch.cli.parser import Parser
from bulkpatch.cli.report import add_report
from bulkpatch.cli.run import add_plan, add_rollback, add_run
from bulkpatch.cli.sim import add_sim
from bulkpatch.cli.translate import add_translate
from bulkpatch.errors import ConfigError, PreflightError


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand, its options, help and completion."""
    parser: argparse.ArgumentParser = Parser(
        prog="bulkpatch",
        description="Bulk JSON Patch for the Adobe Offer Library API.",
        epilog="'bulkpatch COMMAND --help' says what each command does, its options with "
        "their defaults, environment, exit statuses and examples.",
    )
    parser.add_argument("--version", action="version", version=f"bulkpatch {__version__}")
    add_logging_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        add_run,
        add_plan,
        add_rollback,
        add_export,
        add_report,
        add_translate,
        add_config,
        add_sim,
        add_demo,
        add_completion,
    ):
        add(sub)
    for name, subparser in sub.choices.items():
        # A command's errors name it, as argparse's own do: "bulkpatch run: error: ...".
        subparser.set_defaults(prog=subparser.prog, command=name)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed subcommand: its exit status, errors mapped to theirs."""
    try:
        return _run_async(lambda: args.func(args))
    except ConfigError as exc:
        return log_error(
            exc,
            getattr(args, "usage_event", USAGE_EVENT),
            prog=getattr(args, "prog", "bulkpatch"),
            fmt=log_format(args),
        )
    except PreflightError as exc:  # the API refused the first request: one line, exit 3
        return log_error(
            exc, "preflight.refused", prog=getattr(args, "prog", "bulkpatch"), fmt=log_format(args)
        )
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _run_async(make: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(make())
    return uvloop.run(make())


def _tune_gc() -> None:
    """Every request allocates hundreds of short-lived objects and almost no cycles: at
    the default threshold the collector walks the young generation every few requests.
    What is loaded by now (modules, the parser) lives for the whole run: never walk it."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def main(argv: Sequence[str] | None = None) -> int:
    """``bulkpatch``: parse ``argv`` (default: the process's), run; the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(verbosity(args), log_format(args))
    _tune_gc()
    return run_command(args)


__all__ = ["add_logging_options", "build_parser", "configure_logging", "main", "run_command"]

