"""Streaming NDJSON input: a file or a pipe, read as it comes, never held whole.

Reading happens in a daemon thread that hands chunks to the loop through a small bounded
queue: a slow pipe never blocks the event loop, a fast file never fills memory, and an
interrupted run does not hang on a stdin that will never close.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO, Final

from bulkpatch.errors import ConfigError, InputError
from bulkpatch.jobs import RAW_CUT, BadLine, Job, bad_line, parse_line, strip_line

CHUNK: Final = 256 * 1024
# Longest line read as a job: Adobe caps an offer at 1 KB of attributes, so a line of a
# megabyte is a mistake; reading it whole would let one bad line exhaust memory.
MAX_LINE: Final = 1024 * 1024
_QUEUE_CHUNKS: Final = 4
_BATCH: Final = 64  # lines parsed per batch handed to the engine
# How far the head of an input is checked for another encoding (``refuse_head``).
HEAD: Final = 64 * 1024
# Byte-order marks of encodings NDJSON is not in (RFC 8259 §8.1: JSON text exchanged
# is UTF-8); the UTF-32 ones first, since UTF-32LE's starts with UTF-16LE's.
_BOMS: Final = (
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16BE"),
)


def refuse_head(head: bytes, name: str) -> None:
    """Refuse (``ConfigError``, before any request) an input whose first ``HEAD`` bytes
    say it is not UTF-8 text: a UTF-16 or UTF-32 byte-order mark, or NUL bytes (UTF-16
    without a mark). Read as UTF-8, every line of it would fail on its own, garbled."""
    shown = "stdin" if name == "-" else name
    source = "" if name == "-" else f" < {name}"
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            raise ConfigError(
                f"{shown} is {encoding} (it starts with a byte-order mark), not UTF-8; "
                f"convert it first: iconv -f {encoding[:6]} -t UTF-8{source} > jobs.ndjson"
            )
    if b"\x00" in head[:HEAD]:
        raise ConfigError(
            f"{shown} holds NUL bytes in its first {HEAD // 1024} KiB: it is not UTF-8 text "
            f"(UTF-16?); convert it first: iconv -f UTF-16LE -t UTF-8{source} > jobs.ndjson"
        )


def _reader(stream: BinaryIO) -> Callable[[int], bytes]:
    """Read from the file descriptor itself when there is one: a thread blocked in a
    buffered reader holds its lock, and an interpreter exiting on a signal while stdin
    stays open then aborts trying to take it."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return getattr(stream, "read1", stream.read)  # in memory: no descriptor
    return functools.partial(os.read, fd)


async def _chunks(stream: BinaryIO) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue(_QUEUE_CHUNKS)
    read = _reader(stream)

    def pump() -> None:
        while True:
            try:
                chunk: bytes | BaseException = read(CHUNK)
            except BaseException as exc:  # handed to the loop, which re-raises it
                chunk = exc
            put = queue.put(chunk)
            try:
                asyncio.run_coroutine_threadsafe(put, loop).result()
            except RuntimeError:
                put.close()  # the loop is closed: it never ran, nobody wants the rest
                return
            except (asyncio.CancelledError, concurrent.futures.CancelledError):
                return  # the loop is gone: nobody wants the rest
            if not isinstance(chunk, bytes) or not chunk:
                return

    threading.Thread(target=pump, name="bulkpatch-reader", daemon=True).start()
    while True:
        chunk = await queue.get()
        if isinstance(chunk, BaseException):
            raise chunk
        if not chunk:
            return
        yield chunk


class _Lines:
    """Splits chunks into physical lines, 1-based: ``(number, line, full size)``.

    A line longer than ``MAX_LINE`` comes out cut to ``RAW_CUT`` bytes with its full size,
    and the rest of it is skipped without being kept.
    """

    def __init__(self) -> None:
        self.number = 0
        self._pending = b""
        self._skipping = False  # inside an over-long line, discarding up to its newline
        self._long_head = b""
        self._long_size = 0

    def feed(self, chunk: bytes) -> list[tuple[int, bytes, int]]:
        """The lines ``chunk`` completes, without their newline (their size counts it)."""
        data = self._pending + chunk if self._pending else chunk
        self._pending = b""
        lines: list[tuple[int, bytes, int]] = []
        if self._skipping:
            end = data.find(b"\n")
            if end == -1:
                self._long_size += len(data)
                return lines
            self._long_size += end
            self.number += 1
            lines.append((self.number, self._long_head, self._long_size))
            self._skipping = False
            data = data[end + 1 :]
        # One split in C rather than a search per line: most chunks hold thousands.
        parts = data.split(b"\n")
        rest = parts.pop()
        first = self.number + 1
        lines += [(number, part, len(part) + 1) for number, part in enumerate(parts, first)]
        self.number += len(parts)
        if len(rest) > MAX_LINE:
            self._skipping, self._long_head, self._long_size = True, rest[:RAW_CUT], len(rest)
        else:
            self._pending = rest
        return lines

    def end(self) -> list[tuple[int, bytes, int]]:
        """The last line, when the input does not end with a newline."""
        if self._skipping:
            return [(self.number + 1, self._long_head, self._long_size)]
        if self._pending:
            return [(self.number + 1, self._pending, len(self._pending))]
        return []


async def _line_batches(stream: BinaryIO) -> AsyncIterator[list[tuple[int, bytes, int]]]:
    lines = _Lines()
    async for chunk in _chunks(stream):
        batch = lines.feed(chunk)
        if batch:
            yield batch
    last = lines.end()
    if last:
        yield last


async def read_lines(stream: BinaryIO) -> AsyncIterator[tuple[int, bytes, int]]:
    """Yield ``(line number, line, full size)`` for every physical line, 1-based.

    A line longer than ``MAX_LINE`` is yielded cut to ``RAW_CUT`` bytes with its full size,
    and the rest of it is skipped without being kept.
    """
    async for batch in _line_batches(stream):
        for line in batch:
            yield line


def _parse(number: int, raw: bytes, size: int) -> Job | BadLine | None:
    """One physical line as a job, a bad line naming what is wrong, or None if blank."""
    if size > MAX_LINE:
        error = InputError(f"line is {size} bytes, over the {MAX_LINE}-byte limit", line=number)
        return BadLine(number, error, raw[:RAW_CUT], size)
    line = strip_line(raw, number == 1)
    if not line or line.isspace():
        return None
    try:
        return parse_line(line, number)
    except InputError as exc:
        return bad_line(line, number, exc)


class JobStream:
    """The jobs of an NDJSON stream, parsed as they are read.

    An async iterator of ``Job | BadLine``; ``batches()`` gives the same items a chunk's
    worth at a time, which is how the engine reads them: one wake-up per chunk of input
    rather than one per line. ``first_job()`` reads ahead to the first job; what it read
    comes first from ``batches()``. ``name``: the input as the user named it ("-":
    stdin), for ``refuse_head``.
    """

    def __init__(self, stream: BinaryIO, name: str = "-") -> None:
        self._stream = stream
        self._name = name
        self._ahead: list[list[Job | BadLine]] = []
        self._parsed: AsyncIterator[list[Job | BadLine]] | None = None
        self.items_read = 0  # by first_job, so far
        # The batch ``read_ahead`` stopped waiting for, and whether the input has ended.
        self._next: asyncio.Future[list[Job | BadLine] | None] | None = None
        self._ended = False

    def _source(self) -> AsyncIterator[list[Job | BadLine]]:
        if self._parsed is None:
            self._parsed = self._parse_all()
        return self._parsed

    async def first_job(self, limit: int) -> Job | None:
        """The first job, reading ahead at most ``limit`` items (None: none among them,
        or none at all: ``items_read`` says which). Raises ``ConfigError`` when the input
        is not UTF-8 text (``refuse_head``)."""
        for batch in self._ahead:
            for item in batch:
                if isinstance(item, Job):
                    return item
        while self.items_read < limit:
            try:
                batch = await anext(self._source())
            except StopAsyncIteration:
                return None
            self._ahead.append(batch)
            self.items_read += len(batch)
            job = next((item for item in batch if isinstance(item, Job)), None)
            if job is not None:
                return job
        return None

    @property
    def name(self) -> str:
        """The input as the user named it ("-": stdin)."""
        return self._name

    async def read_ahead(self, limit: int, patience: float) -> list[Job | BadLine]:
        """The first items, reading ahead until ``limit`` are held, the input ends, or
        no more come for ``patience`` seconds (a pipe whose writer is slow, or waits
        for the answers); they come first from ``batches()`` still."""
        while self.items_read < limit:
            if self._next is None:
                self._next = asyncio.ensure_future(self._next_batch())
            done, _ = await asyncio.wait({self._next}, timeout=patience)
            if not done:
                break  # the batch still coming is ``batches()``'s to wait for
            batch, self._next = self._next.result(), None
            if batch is None:
                self._ended = True
                break
            self._ahead.append(batch)
            self.items_read += len(batch)
        return [item for batch in self._ahead for item in batch]

    async def _next_batch(self) -> list[Job | BadLine] | None:
        return await anext(self._source(), None)

    async def batches(self) -> AsyncIterator[list[Job | BadLine]]:
        while self._ahead:
            yield self._ahead.pop(0)
        if self._next is not None:
            batch, self._next = await self._next, None
            if batch is None:
                return
            yield batch
        if self._ended:
            return
        async for batch in self._source():
            yield batch

    async def _parse_all(self) -> AsyncIterator[list[Job | BadLine]]:
        first = True
        async for lines in _line_batches(self._stream):
            if first and lines:
                # A file's head was checked when it was opened; a pipe's is checked here,
                # in its first lines, before the first request.
                refuse_head(b"\n".join(line for _, line, _ in lines)[:HEAD], self._name)
                first = False
            # A few dozen lines at a time, parsed when the engine asks for them: a whole
            # chunk at once (thousands of lines) would hold the event loop for tens of
            # milliseconds, and every answer arriving meanwhile would wait.
            for start in range(0, len(lines), _BATCH):
                items = [item for line in lines[start : start + _BATCH] if (item := _parse(*line)) is not None]
                if items:
                    yield items

    async def __aiter__(self) -> AsyncIterator[Job | BadLine]:
        async for batch in self.batches():
            for item in batch:
                yield item


def read_jobs(stream: BinaryIO, name: str = "-") -> JobStream:
    """Parse every non-blank line into a ``Job`` or a ``BadLine`` naming what is wrong."""
    return JobStream(stream, name)
