"""Outcomes: what became of each input line, in one schema, built by the factories here.

An outcome line is one JSON object (``Outcome.to_dict``) with its keys in one order::

    line, source_line, id, ok, status, etag, attempts, conflicts, throttled, recovered,
    ms, server_ms, wait_ms, at, seq, run, request_id, ref,
    <extra: noop, dry_run, plan, changes, deleted, adopted, ...>,
    error {kind, status, field, message}, job, bytes

``ms``, ``server_ms`` and ``wait_ms`` are always floats (milliseconds, one decimal):
``ms`` from the job taken up by a worker to its outcome; ``server_ms`` the time its
requests spent with the server (each from being sent to its answer read, summed, reads
included); ``wait_ms`` the time it spent waiting on bulkpatch's own pace (the schedule,
pauses for 429s and Retry-After, backoffs) and, before it was taken up, behind an
earlier job of its entity in the entity's lane (that part is not in ``ms``).
``source_line``: the line of the run a failure log came from (a re-run's job keeps it).
``run``: the run's id (``runid``), the same in every line of a run and its resumes.

``ok`` lines carry what was proven (status and etag of the write's answer, or
``recovered`` when a read proved it); failed lines carry ``error`` and ``job`` (the line
as it can be run again, so the failure log is a job file). The error kinds are
``ErrorKind``. ``seq`` numbers the lines of one receipts file in the order they were
written, from 1, and goes on across resumes: the journal records it, so a resume can
tell receipts it does not account for (``journal_check``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bulkpatch.errors import ErrorKind
from bulkpatch.jobs import BadLine, Job
from bulkpatch.journal import Failed, Landed
from bulkpatch.scrub import scrub

__all__ = ["ErrorKind", "Outcome"]


class _Clock:
    """ISO 8601 UTC timestamps with milliseconds, each formatted once.

    Every outcome carries one, and a busy run finishes several jobs a millisecond;
    ``datetime.isoformat`` per outcome costs more than the rest of writing the outcome line.
    """

    def __init__(self) -> None:
        self._ms = -1
        self._text = ""
        self._second = -1
        self._prefix = ""

    def now_iso(self) -> str:
        ms = int(time.time() * 1000)
        if ms != self._ms:
            self._ms = ms
            second, fraction = divmod(ms, 1000)
            if second != self._second:
                self._second = second
                self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._text = f"{self._prefix}.{fraction:03d}Z"
        return self._text


now_iso = _Clock().now_iso


@dataclass(slots=True)
class Outcome:
    """What became of one input line. ``to_dict`` is the outcome line."""

    line: int
    ok: bool
    id: str | None = None
    status: int | None = None
    etag: int | None = None
    attempts: int = 0
    conflicts: int = 0
    throttled: int = 0
    recovered: bool = False
    ms: float = 0.0
    server_ms: float = 0.0
    wait_ms: float = 0.0
    at: str = ""
    request_id: str | None = None
    error: dict[str, Any] | None = None
    job: Any = None
    bytes: int | None = None
    ref: Any = None
    has_ref: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    identity: Any = None  # the job's journal identity, when the run keeps a journal
    seq: int | None = None  # its place among the lines written (``sink.Recorder``)
    run: str | None = None  # the run's id (``sink.Recorder``)
    source_line: int | None = None  # the line of the earlier run a re-run job came from

    @property
    def kind(self) -> str:
        """``ok`` or the error kind (an ``ErrorKind`` value)."""
        return "ok" if self.ok else str((self.error or {}).get("kind", "unknown"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any]
        if (
            self.ok
            and self.id is not None
            and self.status is not None
            and self.etag is not None
            and self.source_line is None
        ):
            # The usual line, in one go (the same keys, in the same order, as below).
            out = {
                "line": self.line,
                "id": self.id,
                "ok": True,
                "status": self.status,
                "etag": self.etag,
                "attempts": self.attempts,
                "conflicts": self.conflicts,
            }
        else:
            out = {"line": self.line}
            if self.source_line is not None:
                out["source_line"] = self.source_line
            if self.id is not None:
                out["id"] = self.id
            out["ok"] = self.ok
            if self.status is not None:
                out["status"] = self.status
            if self.etag is not None:
                out["etag"] = self.etag
            out["attempts"] = self.attempts
            if self.ok:
                out["conflicts"] = self.conflicts
        if self.throttled:
            out["throttled"] = self.throttled
        if self.recovered:
            out["recovered"] = True
        out["ms"] = self.ms
        out["server_ms"] = self.server_ms
        out["wait_ms"] = self.wait_ms
        if self.at:
            out["at"] = self.at
        if self.seq is not None:
            out["seq"] = self.seq
        if self.run is not None:
            out["run"] = self.run
        if self.request_id is not None:
            out["request_id"] = self.request_id
        if self.has_ref:
            out["ref"] = self.ref
        if self.extra:
            out.update(self.extra)
        if self.error is not None:
            out["error"] = self.error
            out["job"] = self.job
            if self.bytes is not None:
                out["bytes"] = self.bytes
        return out


def refused(item: Job | BadLine, message: str, *, field: str | None = None) -> Outcome:
    """An ``input`` failure decided before anything was sent: a bad line (its raw text
    and size go in ``job`` and ``bytes``), or a valid job this run will not send."""
    error: dict[str, Any] = {"kind": ErrorKind.INPUT.value}
    if field is not None or isinstance(item, BadLine):
        error["field"] = field  # a bad line's names its field, or null for the line itself
    error["message"] = message
    if isinstance(item, BadLine):
        return Outcome(line=item.line, ok=False, id=item.id, at=now_iso(), error=error,
                       job=item.raw_text(), bytes=item.size, source_line=item.source_line)
    return Outcome(line=item.line, ok=False, id=item.id or None, at=now_iso(), error=error,
                   job=item.as_line(), source_line=item.source_line)


def bad_line(bad: BadLine) -> Outcome:
    """The outcome of a line that is not a valid job."""
    return refused(bad, str(bad.error), field=bad.error.field)


def succeeded(
    job: Job,
    status: int,
    etag: int | None,
    *,
    ms: float,
    request_id: str | None,
    attempts: int = 1,
    conflicts: int = 0,
    throttled: int = 0,
    identity: Any = None,
    server_ms: float = 0.0,
    wait_ms: float = 0.0,
) -> Outcome:
    """A write the server answered 2xx: every successful write's outcome, so built
    positionally (keywords to ``Outcome`` would cost as much again as the call)."""
    return Outcome(
        job.line, True, job.id or None, status, etag, attempts, conflicts, throttled, False,
        ms, server_ms, wait_ms, now_iso(), request_id, None, None, None, job.ref, job.has_ref,
        {}, identity, None, None, job.source_line,
    )


def finished(
    job: Job,
    *,
    ok: bool,
    attempts: int,
    conflicts: int,
    throttled: int,
    ms: float,
    request_id: str | None,
    identity: Any = None,
    server_ms: float = 0.0,
    wait_ms: float = 0.0,
    **fields: Any,
) -> Outcome:
    """Any other end of a job that ran: ``fields`` are ``Outcome`` fields (``status``,
    ``etag``, ``recovered``, ``error``, ``extra``, ``id``)."""
    outcome = Outcome(
        line=job.line,
        ok=ok,
        id=fields.pop("id", job.id or None),
        attempts=attempts,
        conflicts=conflicts,
        throttled=throttled,
        ms=ms,
        server_ms=server_ms,
        wait_ms=wait_ms,
        at=now_iso(),
        request_id=request_id,
        ref=job.ref,
        has_ref=job.has_ref,
        identity=identity,
        source_line=job.source_line,
        **fields,
    )
    if not ok:
        outcome.job = job.as_line()
    return outcome


def error(kind: ErrorKind | str, message: str, status: int | None = None) -> dict[str, Any]:
    """The ``error`` object of a failed outcome, its keys in the schema's order."""
    out: dict[str, Any] = {"kind": str(kind)}
    if status is not None:
        out["status"] = status
    out["message"] = scrub(message)  # it may quote a server that echoed a secret
    return out


def from_journal(item: Job | BadLine, identity: Any, ended: Landed | Failed) -> Outcome:
    """The outcome an earlier run of the same journal decided but did not report."""
    outcome = Outcome(
        line=item.line,
        ok=isinstance(ended, Landed),
        id=ended.id or item.id or None,
        status=ended.status,
        at=now_iso(),
        identity=identity,
        source_line=item.source_line,
    )
    if isinstance(item, Job):
        outcome.ref, outcome.has_ref = item.ref, item.has_ref
    if isinstance(ended, Landed):
        outcome.etag, outcome.recovered = ended.etag, True
    else:
        outcome.error = ended.error
        outcome.job = item.as_line() if isinstance(item, Job) else item.raw_text()
        if isinstance(item, BadLine):
            outcome.bytes = item.size
    return outcome
