"""A minimal, fast HTTP/1.1 server that answers every request with an Offer Library receipt.

A raw asyncio protocol (on uvloop when present), run in its own process, so the client
under test, not the server, is what a benchmark measures. It keeps connections alive,
copes with requests split across reads, and counts what it answered.

    python benchmarks/fastserver.py --port 0     # prints {"port": N} when ready
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any, cast

# The receipt of a PATCH (API notes §1) without its "id": one canned answer serves every
# entity, and a receipt naming another entity is no proof of this write.
RECEIPT = (
    b'{"etag":2,"createdBy":"bench@AdobeID","lastModifiedBy":"bench@AdobeID",'
    b'"sandboxId":"s","createdDate":"2026-01-01T00:00:00.000Z",'
    b'"lastModifiedDate":"2026-01-01T00:00:00.000Z","createdByClientId":"c",'
    b'"lastModifiedByClientId":"c"}'
)
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(
    len(RECEIPT)
).encode()
_dated: tuple[int, bytes] = (0, b"")


def response() -> bytes:
    """The answer, with the ``Date`` every origin server with a clock sends (RFC 9110
    §6.6.1), made once a second as real servers do."""
    global _dated
    second = int(time.time())
    if _dated[0] != second:
        date = email.utils.formatdate(second, usegmt=True).encode()
        _dated = (second, _HEAD + b"\r\nDate: " + date + b"\r\n\r\n" + RECEIPT)
    return _dated[1]


class ReceiptProtocol(asyncio.Protocol):
    answered = 0

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        out = []
        answer = response()
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end == -1:
                break
            head = bytes(buffer[:end]).lower()
            length = 0
            at = head.find(b"content-length:")
            if at != -1:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15 : stop if stop != -1 else len(head)])
            total = end + 4 + length
            if len(buffer) < total:
                break
            del buffer[:total]
            out.append(answer)
        if out and self._transport is not None:
            ReceiptProtocol.answered += len(out)
            self._transport.write(b"".join(out))


async def serve(host: str, port: int, ready: Any = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ReceiptProtocol, host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready.send(bound)
    else:
        print(json.dumps({"port": bound}), flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def _run(host: str, port: int, ready: Any, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    try:
        import uvloop

        uvloop.run(serve(host, port, ready))
    except ImportError:
        asyncio.run(serve(host, port, ready))


@contextlib.contextmanager
def running(host: str = "127.0.0.1", cpu: int | None = None) -> Iterator[int]:
    """Start the server in a child process; yield its port; stop it at the end."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_run, args=(host, 0, child, cpu), daemon=True)
    proc.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the fast server did not start")
        yield int(parent.recv())
    finally:
        if proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        proc.join(10)
        if proc.is_alive():
            proc.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    _run(args.host, args.port, None, None)
    sys.exit(0)
