"""The one place that touches aiohttp: a request in, a ``Response`` or a bulkpatch error out."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
from multidict import CIMultiDict
from yarl import URL

from bulkpatch._version import __version__
from bulkpatch.errors import TransportError

USER_AGENT = f"bulkpatch/{__version__}"
Session = aiohttp.ClientSession  # what ``make_session`` makes, for the modules that hold one


class Response(NamedTuple):
    """An answer: its status, its whole body, and ``Retry-After`` when it was sent.

    A named tuple, not a frozen dataclass: one is made per request, and a frozen
    dataclass costs three times as much to build.
    """

    status: int
    body: bytes
    retry_after: str | None

    def json(self) -> Any:
        """The body as JSON, or None when it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def message(self) -> str:
        """A short human reason from an error body (gateway or problem document)."""
        data = self.json()
        if isinstance(data, dict):
            for key in ("detail", "message", "title", "error_description", "error"):
                if isinstance(data.get(key), str):
                    code = data.get("error_code")
                    return f"{code}: {data[key]}" if isinstance(code, str) else str(data[key])
        text = self.body[:200].decode("utf-8", errors="replace").strip()
        return text or f"HTTP {self.status}"


def ssl_context(*, verify: bool, ca_bundle: Path | None) -> ssl.SSLContext | bool:
    if not verify:
        return False
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=str(ca_bundle))
    return True


def make_session(
    *,
    concurrency: int,
    timeout: float,
    verify_tls: bool = True,
    ca_bundle: Path | None = None,
    headers: CIMultiDict[str] | None = None,
) -> aiohttp.ClientSession:
    """One session for the whole run: pooled keep-alive connections, proxies from the env,
    ``headers`` sent with every request (``User-Agent`` at least).

    The session sets no total timeout: ``HttpClient`` enforces it (see ``Deadlines``).
    aiohttp still bounds connecting, which costs nothing on a reused connection.
    """
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        ssl=ssl_context(verify=verify_tls, ca_bundle=ca_bundle),
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers=headers if headers is not None else request_headers({}),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout),
        # Not trust_env: it makes aiohttp read ~/.netrc in a thread for every request,
        # tripling the cost of one; proxies from the environment are resolved once below.
        trust_env=False,
        raise_for_status=False,
        # The API is stateless: cookies a gateway might set are of no use, and matching
        # them against every request URL is a measurable share of a request's cost.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class Deadlines:
    """Time limits for requests in flight, at the cost of one watchdog, not one timer each.

    aiohttp's own total timeout arms and cancels a timer for every request: about a tenth
    of a request's CPU time against a fast server. Here a request records its deadline in
    a dict, and a watchdog ticking at a twentieth of the timeout cancels the tasks whose
    deadline has passed. A request may so overrun its limit by one tick, which for a
    30 s timeout is 1 s: the same order as the jitter of any network.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._tick = min(1.0, max(0.005, timeout / 20))
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def arm(self, task: asyncio.Task[Any]) -> None:
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        self._due[task] = time.monotonic() + self.timeout

    def disarm(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether the watchdog cancelled ``task`` (taking that cancellation back)."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        # Cancelled for another reason as well (the run is stopping): let that one stand.
        return task.uncancel() == 0

    async def _watch(self) -> None:
        due = self._due
        while True:
            await asyncio.sleep(self._tick)
            now = time.monotonic()
            late = [task for task, deadline in due.items() if deadline <= now]
            for task in late:
                del due[task]
                self._expired.add(task)
                task.cancel()

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None


@functools.lru_cache(maxsize=64)
def proxy_for(scheme: str, host: str) -> str | None:
    """The proxy HTTPS_PROXY / HTTP_PROXY / NO_PROXY name for a host (as curl reads them)."""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(scheme)


def request_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Headers in the form aiohttp keeps them, so it need not convert them per request."""
    out: CIMultiDict[str] = CIMultiDict({"User-Agent": USER_AGENT})
    out.update(headers)
    return out


class HttpClient:
    """Sends requests over one session, each bounded by ``timeout`` seconds in all."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float) -> None:
        self.session = session
        self._deadlines = Deadlines(timeout)
        # No proxy in the environment (the usual case): no look-up per request.
        self._proxies = bool(urllib.request.getproxies())

    async def close(self) -> None:
        await self._deadlines.close()

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> Response:
        """Send one request. Transport failures become ``TransportError``.

        ``sent`` is False only when the connection could not be made at all: then the
        server surely saw nothing. A dropped connection or a timeout may come after the
        server applied the request, so those are ``sent=True``.
        """
        task = asyncio.current_task()
        assert task is not None
        deadlines = self._deadlines
        deadlines.arm(task)
        try:
            # Not ``async with``: its wrapper and exit cost about a twentieth of a request.
            # ``read`` hands the connection back once the body is in; ``release`` is for
            # when it raised first.
            proxy = proxy_for(url.scheme, url.host or "") if self._proxies else None
            response = await self.session.request(
                method, url, headers=headers, data=body, proxy=proxy
            )
            try:
                data = await response.read()
            finally:
                response.release()
            return Response(response.status, data, response.headers.get("Retry-After"))
        except asyncio.CancelledError:
            if deadlines.expired(task):
                raise TransportError(
                    f"no answer within {deadlines.timeout:g} s ({method} {url.path})", sent=True
                ) from None
            raise
        except aiohttp.ClientConnectorError as exc:
            raise TransportError(
                f"cannot connect to {url.host}:{url.port}: {exc.os_error}", sent=False
            ) from exc
        except TimeoutError as exc:
            raise TransportError(
                f"no answer within the timeout ({method} {url.path})", sent=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}", sent=True) from exc
        finally:
            deadlines.disarm(task)


async def fetch(url: str, *, timeout_s: float = 60.0) -> Response:
    """One GET on a session of its own (the simulator's inspection endpoints, say)."""
    async with make_session(concurrency=1, timeout=timeout_s) as session:
        client = HttpClient(session, timeout_s)
        try:
            return await client.send("GET", URL(url), request_headers({}))
        finally:
            await client.close()
