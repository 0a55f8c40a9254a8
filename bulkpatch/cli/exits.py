"""The exit status of every subcommand, and the one mapping from errors to it.

README "Exit status": 0 every item ok; 1 some items failed; 2 bad usage or
configuration (nothing was sent); 3 a systemic failure stopped the run early;
128 + the signal (130 SIGINT, 143 SIGTERM) when interrupted.
"""

from __future__ import annotations

import signal
from typing import Final

import structlog

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


def log_error(exc: BulkpatchError, event: str = USAGE_EVENT) -> int:
    """Log an error that ends a command as one error event; its exit status.

    A report error names its own event and fields; any other is logged as ``event``
    with ``error`` its message.
    """
    log = structlog.get_logger()
    if isinstance(exc, ReportError):
        log.error(exc.event, **exc.fields)
    elif isinstance(exc, ConfigError):
        log.error(event, error=exc.flag_message())
    else:
        log.error(event, error=str(exc))
    return exit_code(exc)
