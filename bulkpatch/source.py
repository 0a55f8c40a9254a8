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

from bulkpatch.errors import InputError
from bulkpatch.jobs import RAW_CUT, BadLine, Job, bad_line, parse_line, strip_line

CHUNK: Final = 256 * 1024
# Longest line read as a job: Adobe caps an offer at 1 KB of attributes, so a line of a
# megabyte is a mistake; reading it whole would let one bad line exhaust memory.
MAX_LINE: Final = 1024 * 1024
_QUEUE_CHUNKS: Final = 4


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
            try:
                asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
            except (RuntimeError, asyncio.CancelledError, concurrent.futures.CancelledError):
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


async def read_lines(stream: BinaryIO) -> AsyncIterator[tuple[int, bytes, int]]:
    """Yield ``(line number, line, full size)`` for every physical line, 1-based.

    A line longer than ``MAX_LINE`` is yielded cut to ``RAW_CUT`` bytes with its full size,
    and the rest of it is skipped without being kept.
    """
    number = 0
    pending = b""
    skipping = False  # inside an over-long line, discarding up to its newline
    long_head = b""
    long_size = 0
    async for chunk in _chunks(stream):
        data = pending + chunk if pending else chunk
        pending = b""
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end == -1:
                break
            if skipping:
                long_size += end - start
                number += 1
                yield number, long_head, long_size
                skipping = False
            else:
                number += 1
                yield number, data[start : end + 1], end + 1 - start
            start = end + 1
        rest = data[start:]
        if skipping:
            long_size += len(rest)
        elif len(rest) > MAX_LINE:
            skipping, long_head, long_size = True, rest[:RAW_CUT], len(rest)
        else:
            pending = rest
    if skipping:
        yield number + 1, long_head, long_size
    elif pending:
        yield number + 1, pending, len(pending)


async def read_jobs(stream: BinaryIO) -> AsyncIterator[Job | BadLine]:
    """Parse every non-blank line into a ``Job`` or a ``BadLine`` naming what is wrong."""
    async for number, raw, size in read_lines(stream):
        if size > MAX_LINE:
            error = InputError(f"line is {size} bytes, over the {MAX_LINE}-byte limit", line=number)
            yield BadLine(number, error, raw[:RAW_CUT], size)
            continue
        line = strip_line(raw, number == 1)
        if not line.strip():
            continue
        try:
            yield parse_line(line, number)
        except InputError as exc:
            yield bad_line(line, number, exc)
