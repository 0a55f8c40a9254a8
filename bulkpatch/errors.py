"""The one error tree of bulkpatch.

::

    BulkpatchError
    ├── ConfigError          bad usage or configuration; nothing was sent (exit 2)
    │   └── ReportError      no report can be drawn from these files (a log event's fields)
    ├── InputError           one input line is not a valid job (names the line and field)
    ├── RecordError          the run's own record (journal, receipts, failure log) could
    │                        not be written: the run stops (exit 3)
    ├── PreflightError       the API refused a run's first request, before any write:
    │                        a setting is likely wrong (exit 3)
    └── RequestError         one HTTP exchange went wrong
        ├── HTTPStatusError  the server answered with a status we do not treat as success
        └── TransportError   no usable answer: connection refused or dropped, timeout
            (``outcome_known`` says whether the server may have applied the write)

``ErrorKind`` names why an input line failed, in its outcome (``outcomes``).

Third-party exceptions (aiohttp, orjson, jsonpatch) are translated at one boundary
and re-raised ``from`` the original, so callers only ever catch these. Whether an
error may be retried is a property of the type and its fields, never of a message.
"""

from __future__ import annotations

import enum
from typing import Any


class BulkpatchError(Exception):
    """Base of every error bulkpatch raises on purpose."""


class ConfigError(BulkpatchError):
    """A setting is missing or invalid. The message names the setting and the fix.

    ``setting``: the name of the invalid setting (a ``RunConfig`` field, say) when one is
    at fault; the command line names it by its flag instead (``flag_message``).
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(f"{setting} {message}" if setting else message)
        self.setting = setting
        self.detail = message

    def flag_message(self) -> str:
        """The message with the setting named as its command-line flag."""
        if self.setting is None:
            return str(self)
        return f"--{self.setting.replace('_', '-')} {self.detail}"


class ReportError(ConfigError):
    """No report can be drawn from these files; nothing was written (exit 2).

    ``event`` names what went wrong as a log event (``report.unreadable``, ...) and
    ``fields`` are that event's fields, ``error`` (the message) among them.
    """

    def __init__(self, event: str, **fields: Any) -> None:
        super().__init__(str(fields.get("error", event)))
        self.event = event
        self.fields = fields


class InputError(BulkpatchError):
    """An input line is not a valid job."""

    def __init__(self, message: str, *, line: int, field: str | None = None) -> None:
        self.line = line
        self.field = field
        where = f"line {line}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")
        self.detail = message


class RecordError(BulkpatchError):
    """The run's own record could not be written (a full disk, an I/O error): the message
    names the file and the reason. The run stops, and ``--resume`` continues it exactly."""


class PreflightError(BulkpatchError):
    """The first request of a command (a list of one entity, the xcore home, the first
    export page) was refused or got no answer: nothing was written. The message names
    the answer and the setting that is likely wrong."""


class RequestError(BulkpatchError):
    """An HTTP exchange did not give a usable success answer."""


class HTTPStatusError(RequestError):
    """The server answered with a non-success status."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"HTTP {status}: {message}")
        self.detail = message


class TransportError(RequestError):
    """No answer came back.

    ``sent`` is False when the request surely never reached the server (connection
    refused, DNS failure), True when it may have: then the write's fate is unknown.
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        self.sent = sent
        super().__init__(message)


__all__ = [
    "BulkpatchError",
    "ConfigError",
    "HTTPStatusError",
    "InputError",
    "PreflightError",
    "RecordError",
    "RequestError",
    "TransportError",
]


class ErrorKind(enum.StrEnum):
    """Why a line failed."""

    INPUT = "input"  # not a valid job, or one this run refuses (nothing was sent)
    HTTP = "http"  # the server refused it for good (a 4xx, a refused redirect)
    CONFLICT = "conflict"  # another writer: a stale pinned etag, rebases exhausted, unclear
    TEST_FAILED = "test_failed"  # a `test` op of the patch does not hold on the entity
    EXHAUSTED = "exhausted"  # out of attempts (or of 429s) on transient failures
    ABORTED = "aborted"  # the run stopped before the job ended; it runs again on resume
