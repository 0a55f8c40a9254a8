"""The logging set-up: the one place in bulkpatch that configures structlog.

The library only emits events; the command line decides how they look and where they
go, so a program embedding bulkpatch keeps its own logging set-up.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog

from bulkpatch.progress import before_message
from bulkpatch.scrub import scrub


def configure_logging(verbosity: int, fmt: str) -> None:
    """Logs are structlog events on stderr; stdout is kept for data.

    ``verbosity`` is ``-v`` count minus ``-q`` count (0: info); ``fmt`` is "console"
    (coloured on a terminal unless ``NO_COLOR``) or "json" (one object a line).
    """
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    if verbosity < -1:
        level = logging.ERROR
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=colours_wanted(sys.stderr, os.environ))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrubbed,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_ClearLineLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


class _ClearLineLogger(structlog.PrintLogger):
    """Prints on stderr, after erasing the progress line if one is drawn: a message
    never starts glued to the bar."""

    def msg(self, message: str) -> None:
        before_message()
        super().msg(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _ClearLineLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: object) -> _ClearLineLogger:
        return _ClearLineLogger(self._file)


def _scrubbed(
    logger: object, name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """No registered secret in any text value of an event (``bulkpatch.scrub``)."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = scrub(value)
    return event


def add_logging_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v``, ``-q`` and ``--log-format``: the top-level parser and every subcommand have
    them, so they go before or after the subcommand. A subcommand's are ``SUPPRESS``ed
    unless given, so they never undo the same option given before it."""
    count: Any = 0 if top else argparse.SUPPRESS
    fmt: Any = "console" if top else argparse.SUPPRESS
    group = parser.add_argument_group("logging")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="more logs (-vv: debug; default: info and above)",
        default=count,
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="count",
        help="fewer logs (-q: warnings, no summary; -qq: errors only; default: info and above)",
        default=count,
    )
    group.add_argument(
        "--log-format",
        choices=("console", "json"),
        help="log rendering on stderr; json also makes the end summary one JSON event "
        "(default console)",
        default=fmt,
    )


def verbosity(args: argparse.Namespace) -> int:
    """``-v`` count minus ``-q`` count: 0 is the default level."""
    return int(getattr(args, "verbose", 0)) - int(getattr(args, "quiet", 0))


def log_format(args: argparse.Namespace) -> str:
    """``--log-format``: "console" (the default) or "json"."""
    return str(getattr(args, "log_format", "console"))


def colours_wanted(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colours on a terminal, unless ``NO_COLOR`` is set to anything but "" (no-color.org)."""
    return stream.isatty() and not environ.get("NO_COLOR")
