"""The logging set-up: the one place in bulkpatch that configures structlog.

The library only emits events; the command line decides how they look and where they
go, so a program embedding bulkpatch keeps its own logging set-up.
"""

from __future__ import annotations

import argparse
import logging
import sys

import structlog

from bulkpatch.scrub import scrub


def configure_logging(verbosity: int, fmt: str) -> None:
    """Logs are structlog events on stderr; stdout is kept for data.

    ``verbosity`` is ``-v`` count minus ``-q`` count (0: info); ``fmt`` is "console"
    (coloured on a terminal) or "json" (one object a line).
    """
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    if verbosity < -1:
        level = logging.ERROR
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrubbed,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _scrubbed(
    logger: object, name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """No registered secret in any text value of an event (``bulkpatch.scrub``)."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = scrub(value)
    return event


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """``-v``, ``-q`` and ``--log-format``: every subcommand has them."""
    group = parser.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more logs (-vv: debug)")
    group.add_argument("-q", "--quiet", action="count", default=0, help="fewer logs")
    group.add_argument(
        "--log-format",
        choices=("console", "json"),
        default="console",
        help="log rendering on stderr",
    )


def verbosity(args: argparse.Namespace) -> int:
    """``-v`` count minus ``-q`` count: 0 is the default level."""
    return int(args.verbose) - int(args.quiet)
