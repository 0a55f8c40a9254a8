"""The exit status of every subcommand, and the one mapping from errors to it.

README "Exit status": 0 every item ok; 1 some items failed; 2 bad usage or
configuration (nothing was sent); 3 a systemic failure stopped the run early;
128 + the signal (130 SIGINT, 143 SIGTERM) when interrupted.
"""

from __future__ import annotations

import signal
import sys
from typing import Final

import structlog

from bulkpatch.cli.parser import usage_error
from bulkpatch.errors import BulkpatchError, ConfigError
from bulkpatch.export import ExportError
from bulkpatch.report import ReportError

EXIT_OK: Final = 0
EXIT_FAILED_ITEMS: Final = 1
EXIT_USAGE: Final = 2
EXIT_SYSTEMIC: Final = 3
EXIT_INTERRUPTED: Final = 128 + signal.SIGINT  # 130, as a shell reports Ctrl-C

# The log event of a usage error, unless the subcommand names its own.
USAGE_EVENT: Final = "config.invalid"


def exit_code(exc: BulkpatchError) -> int:
    """The status an error ends a command with: 2 usage, 3 systemic, else 1."""
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, ExportError) and not exc.systemic:
        return EXIT_FAILED_ITEMS  # one page went wrong; what came before it was written
    return EXIT_SYSTEMIC


def interrupted(signum: int) -> int:
    """The status after SIGINT or SIGTERM: 128 + its number, as a shell reports it."""
    return 128 + signum


def error_message(exc: BulkpatchError) -> str:
    """What went wrong, in one line: the flag named for a setting, the path for a file."""
    if isinstance(exc, ReportError):
        path = exc.fields.get("path")
        return f"{path}: {exc}" if path else str(exc)
    if isinstance(exc, ConfigError):
        return exc.flag_message()
    return str(exc)


def log_error(
    exc: BulkpatchError, event: str = USAGE_EVENT, *, prog: str = "bulkpatch", fmt: str = "console"
) -> int:
    """Say why a command ends, its exit status.

    On the console: one line, ``PROG: error: MESSAGE (see 'PROG --help')``, the style of
    argparse's own refusals (``parser.usage_error``). With ``--log-format json``: one
    error event, ``event`` (a report error names its own) with ``error`` the message.
    """
    message = error_message(exc)
    if fmt != "json":
        print(usage_error(prog, message), file=sys.stderr, flush=True)
    elif isinstance(exc, ReportError):
        structlog.get_logger().error(exc.event, **exc.fields)
    else:
        structlog.get_logger().error(event, command=prog, error=message)
    return exit_code(exc)
