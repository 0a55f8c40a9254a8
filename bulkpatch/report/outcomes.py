"""Reading outcome lines: each input line's final outcome, kept as a few numbers.

Memory stays bounded on a million-line outcome file: an outcome file appended across
resumes may hold several lines for one input line and the last one wins, so each line's
final figures are kept, but in flat typed arrays indexed by line number (about 45 bytes
a line) rather than a dict of objects; failure reasons are interned and capped.

A line is known by its input line: ``source_line`` when the outcome has one (a job re-run
from a failure log answers for the line of the run it came from), else ``line``.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, Final

import orjson

MAX_REASONS: Final = 1000  # distinct failure reasons kept; the rest share one row per kind
# Lines above this go to a dict: a garbage line number must not allocate gigabytes.
DENSE_LINES: Final = 1 << 24

OK: Final = 1  # code for an ok line; 0 is "no outcome", 2 and up index failure reasons
FIRST_REASON: Final = 2

# Messages name the entity, the line or the attempt count: fold quoted strings and
# numbers so that 10,000 "no entity with id '...'" are one reason. Numbers after
# "HTTP " are status codes, and the field an input error names is a reason of its own:
# both stay. A quote that follows a letter is an apostrophe ("can't"), not a value.
_QUOTED = re.compile(r"(?<!field )(?<!\w)'[^']*'(?!\w)|\"[^\"]*\"")
_NUMBER = re.compile(r"(?<!HTTP )(?<![\w.])\d+(?:\.\d+)?(?!\w|\.\d)")


def normalise_message(message: str) -> str:
    return _NUMBER.sub("N", _QUOTED.sub("'…'", message))


@dataclass(frozen=True, slots=True)
class Reason:
    kind: str
    status: int | None
    message: str  # normalised
    example: str  # the first raw message seen for it


class Finals:
    """Each input line's last outcome, as a few numbers: the only per-line state kept."""

    def __init__(self) -> None:
        self.code = array("i")  # 0 absent, 1 ok, >= 2: failure reason index + 2
        self.at = array("d")  # completion, epoch seconds; NaN when the line had no `at`
        self.ms = array("d")  # the outcome's `ms`, `server_ms` and `wait_ms`; NaN when absent
        self.server_ms = array("d")
        self.wait_ms = array("d")
        self.attempts = array("I")
        self.throttled = array("I")
        self.sparse: dict[int, tuple[int, float, float, int, int, float, float]] = {}
        self.reasons: list[Reason] = []
        self._reason_ids: dict[tuple[str, int | None, str], int] = {}
        self.records = 0  # outcome lines read
        self.skipped = 0  # lines that are not outcome lines (torn by a kill, foreign)
        self.superseded = 0  # outcome lines replaced by a later one for the same line
        self._last_second = ""
        self._last_epoch = 0.0

    # ------------------------------------------------------------------ reading

    def add_bytes(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.skipped += 1
            return
        if not isinstance(record, dict):
            self.skipped += 1
            return
        self.add(record)

    def add(self, record: dict[str, Any]) -> None:
        line = input_line(record)
        if line is None:
            self.skipped += 1
            return
        self.records += 1
        code = OK if record.get("ok") is True else self._reason(record.get("error"))
        ms = _number(record.get("ms"))
        attempts = _count(record.get("attempts"))
        throttled = _count(record.get("throttled"))
        server_ms = _number(record.get("server_ms"))
        wait_ms = _number(record.get("wait_ms"))
        at = self._epoch(record.get("at"))
        if line < DENSE_LINES:
            if line >= len(self.code):
                self._grow(line + 1)
            if self.code[line]:
                self.superseded += 1
            self.code[line] = code
            self.at[line] = at
            self.ms[line] = ms
            self.attempts[line] = attempts
            self.throttled[line] = throttled
            self.server_ms[line] = server_ms
            self.wait_ms[line] = wait_ms
        else:
            if line in self.sparse:
                self.superseded += 1
            self.sparse[line] = (code, at, ms, attempts, throttled, server_ms, wait_ms)

    def _grow(self, size: int) -> None:
        target = max(size, 2 * len(self.code), 1024)
        extra = target - len(self.code)
        for arr in (
            self.code, self.at, self.ms, self.attempts, self.throttled, self.server_ms, self.wait_ms
        ):
            arr.frombytes(bytes(extra * arr.itemsize))

    def _reason(self, error: Any) -> int:
        if not isinstance(error, dict):
            error = {}
        kind = error.get("kind")
        kind = kind if isinstance(kind, str) else "unknown"
        status = error.get("status")
        status = status if type(status) is int else None
        raw = error.get("message")
        raw = raw if isinstance(raw, str) else ""
        message = normalise_message(raw)
        key = (kind, status, message)
        index = self._reason_ids.get(key)
        if index is None:
            if len(self.reasons) >= MAX_REASONS:
                key = (kind, None, "(other reasons: too many distinct messages to list)")
                index = self._reason_ids.get(key)
            if index is None:
                index = len(self.reasons)
                self._reason_ids[key] = index
                self.reasons.append(Reason(kind, key[1], key[2], raw))
        return index + FIRST_REASON

    def _epoch(self, at: Any) -> float:
        if not isinstance(at, str) or len(at) < 19:
            return math.nan
        # The engine writes "YYYY-MM-DDTHH:MM:SS.mmmZ"; the date part changes once a
        # second, so it is parsed once a second and the milliseconds added.
        second = at[:19]
        rest = at[19:]
        if rest.endswith("Z") and (rest == "Z" or rest[0] == "."):
            if second != self._last_second:
                try:
                    self._last_epoch = (
                        datetime.fromisoformat(second).replace(tzinfo=UTC).timestamp()
                    )
                except ValueError:
                    return math.nan
                self._last_second = second
            try:
                fraction = float(rest[:-1]) if len(rest) > 2 else 0.0
            except ValueError:
                return math.nan
            return self._last_epoch + fraction
        try:  # any other ISO 8601 form; naive times are taken as UTC
            parsed = datetime.fromisoformat(at)
        except ValueError:
            return math.nan
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()


def input_line(record: dict[str, Any]) -> int | None:
    """The input line an outcome answers for: its ``source_line`` (a re-run from a failure
    log), else its ``line``; None when neither is a positive integer."""
    for key in ("source_line", "line"):
        line = record.get(key)
        if type(line) is int and line >= 1:
            return line
    return None


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _count(value: Any) -> int:
    if type(value) is int:
        return min(max(value, 0), 0xFFFF_FFFF)
    return 0


def read_outcomes(streams: Iterable[BinaryIO], finals: Finals | None = None) -> Finals:
    """Stream outcome lines into ``Finals``, in order: a later line for the same input
    line (a resumed run appending to the same file, or a later file) wins."""
    finals = finals if finals is not None else Finals()
    for stream in streams:
        for raw in stream:
            finals.add_bytes(raw)
    return finals
