"""The one place that touches aiohttp: a request in, a ``Response`` or a bulkpatch error out.

Redirects (RFC 9110 §15.4) are handled here, not by aiohttp, so that one check keeps every
request on its origin (scheme, host and port): a write's 3xx is never followed (its
outcome is unknown: the caller settles it), a read's is followed on the same origin only,
at most ``MAX_REDIRECTS`` hops. A redirect not followed is returned as it came, with
``Response.redirect`` saying where it pointed and why it was not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import ssl
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol

import aiohttp
import orjson
from multidict import CIMultiDict
from yarl import URL

from bulkpatch import scrub
from bulkpatch._version import __version__
from bulkpatch.errors import TransportError

USER_AGENT = f"bulkpatch/{__version__}"
Session = aiohttp.ClientSession  # what ``make_session`` makes, for the modules that hold one
# Gateways send long header lines (trace and policy headers): an answer is read whole up
# to this, rather than refused at aiohttp's 8,190 bytes after the write has landed.
MAX_HEADER_LINE: Final = 64 * 1024
# The most one answer may take (its headers and its decompressed body), ``--max-response-bytes``.
DEFAULT_MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024
# The most one header line can take: aiohttp bounds its name and its value (at most) at
# ``MAX_HEADER_LINE`` each. Enough to know that most answers fit, without counting.
_HEADER_MOST: Final = 2 * MAX_HEADER_LINE + 4
MAX_REDIRECTS: Final = 3
# A body that is not a JSON error is quoted this far (characters) in a message, scrubbed
# over enough of the body (bytes) for a secret that starts in the quote to be whole.
_MESSAGE_CHARS: Final = 200
_MESSAGE_BYTES: Final = 64 * 1024
# The redirects that name a new target in ``Location`` (RFC 9110 §15.4.2-4, .8, .9).
_FOLLOWABLE: Final = frozenset({301, 302, 303, 307, 308})
# Safe methods (RFC 9110 §9.2.1): the only ones a redirect may send again.
_READS: Final = frozenset({"GET", "HEAD"})

Origin = tuple[str, str | None, int | None]


def origin(url: URL) -> Origin:
    """Scheme, host and port (the default port when none is written): RFC 6454's origin.

    Not ``URL.origin()``, which tells ``https://h`` from ``https://h:443``.
    """
    return (url.scheme, url.host, url.port)


class Response(NamedTuple):
    """An answer: its status, its whole body, and ``Retry-After`` when it was sent.

    A named tuple, not a frozen dataclass: one is made per request, and a frozen
    dataclass costs three times as much to build.
    """

    status: int
    body: bytes
    retry_after: str | None
    # A 3xx not followed: where its ``Location`` (RFC 9110 §10.2.2) pointed, and why.
    redirect: str | None = None
    # The answer's ``Date`` (RFC 9110 §6.6.1): an HTTP-date ``Retry-After`` is read
    # against the server's clock, not ours, and every answer tells where its seconds begin.
    date: str | None = None

    def json(self) -> Any:
        """The body as JSON, or None when it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def error_code(self) -> str | None:
        """The gateway's ``error_code`` (``"403003"``; API notes §3), if the body has one."""
        data = self.json()
        code = data.get("error_code") if isinstance(data, dict) else None
        return code if isinstance(code, str) else None

    def message(self) -> str:
        """A short human reason from an error body (gateway or problem document)."""
        if self.redirect is not None:
            return self.redirect
        data = self.json()
        if isinstance(data, dict):
            for key in ("detail", "message", "title", "error_description", "error"):
                if isinstance(data.get(key), str):
                    code = data.get("error_code")
                    return f"{code}: {data[key]}" if isinstance(code, str) else str(data[key])
        text = self.body[:_MESSAGE_BYTES].decode("utf-8", errors="replace")
        cut = len(self.body) > _MESSAGE_BYTES
        return scrub.excerpt(text, _MESSAGE_CHARS, cut=cut).strip() or f"HTTP {self.status}"


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
        max_line_size=MAX_HEADER_LINE,
        max_field_size=MAX_HEADER_LINE,
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


class Transport(Protocol):
    """What sends a request: ``client.HttpClient`` over aiohttp, or a script in a test.
    ``send`` returns the whole answer or raises ``TransportError``."""

    async def send(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None = None
    ) -> Response: ...


def _header_bytes(response: aiohttp.ClientResponse) -> int:
    """The header block's size as sent: each ``name: value`` line and its CRLF."""
    raw = response.raw_headers
    return sum(map(len, itertools.chain.from_iterable(raw))) + 4 * len(raw)


def _whole_within(response: aiohttp.ClientResponse, cap: int) -> bool:
    """Whether the answer has arrived whole (the usual small one comes with its headers)
    and surely fits in ``cap`` bytes: then it is read as it is, with no count and no loop."""
    content = response.content
    return content.is_eof() and content.total_bytes + len(response.raw_headers) * _HEADER_MOST <= cap


async def read_bounded(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body of ``response``, decompressed, if it and the headers fit in ``cap`` bytes.

    Raises ``TransportError`` (``sent=True``: the request went out) as soon as more came,
    and closes the connection: the rest is never read. aiohttp inflates a compressed body
    a chunk at a time as it is read, so a small gzip answer that inflates to gigabytes
    is stopped a chunk past the cap. Not ``response.read()`` for a body still arriving:
    it lifts that per-chunk bound and reads all there is.
    """
    content = response.content
    budget = cap - _header_bytes(response)
    if content.is_eof() and content.total_bytes <= budget:
        # The usual small answer, already in whole with its headers: no loop to run.
        return await response.read()
    if budget >= 0:
        blocks: list[bytes] = []
        while block := await content.readany():
            if content.total_bytes > budget:
                break
            blocks.append(block)
        else:
            return b"".join(blocks)
    response.close()
    raise TransportError(f"the answer exceeded --max-response-bytes ({cap} bytes)", sent=True)


def _answer(response: aiohttp.ClientResponse, data: bytes) -> Response:
    headers = response.headers
    return Response(response.status, data, headers.get("Retry-After"), None, headers.get("Date"))


class HttpClient:
    """Sends requests over one session, each bounded by ``timeout`` seconds in all and
    each answer by ``max_response_bytes`` (``read_bounded``)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        timeout: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.session = session
        self.max_response_bytes = max_response_bytes
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
        server surely saw nothing. A dropped connection, a timeout or an answer larger
        than ``max_response_bytes`` may come after the server applied the request, so
        those are ``sent=True``.

        A 3xx is followed only for a read and only on ``url``'s origin (see the module's
        docstring); the timeout bounds the whole chain.
        """
        task = asyncio.current_task()
        assert task is not None
        deadlines = self._deadlines
        deadlines.arm(task)
        try:
            # Not ``async with``: its wrapper and exit cost about a twentieth of a request.
            # ``read_bounded`` hands the connection back once the body is in; ``release``
            # is for when it raised first.
            proxy = proxy_for(url.scheme, url.host or "") if self._proxies else None
            response = await self.session.request(
                method, url, headers=headers, data=body, proxy=proxy, allow_redirects=False
            )
            try:
                cap = self.max_response_bytes
                data = (
                    await response.read()
                    if _whole_within(response, cap)
                    else await read_bounded(response, cap)
                )
            finally:
                response.release()
            if not 300 <= response.status < 400:
                return _answer(response, data)
            return await self._redirected(method, url, headers, response, data)
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

    async def _redirected(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        response: aiohttp.ClientResponse,
        data: bytes,
    ) -> Response:
        """Follow a read's redirects on its own origin; any other 3xx is the answer."""
        home = origin(url)
        hops = 0
        while True:
            answer = _answer(response, data)
            target, why = self._next_hop(method, home, url, answer.status, response, hops)
            if target is None:
                return answer._replace(redirect=why)
            hops += 1
            url = target
            proxy = proxy_for(url.scheme, url.host or "") if self._proxies else None
            response = await self.session.request(
                method, url, headers=headers, proxy=proxy, allow_redirects=False
            )
            try:
                data = await read_bounded(response, self.max_response_bytes)
            finally:
                response.release()
            if not 300 <= response.status < 400:
                return _answer(response, data)

    @staticmethod
    def _next_hop(
        method: str,
        home: Origin,
        url: URL,
        status: int,
        response: aiohttp.ClientResponse,
        hops: int,
    ) -> tuple[URL | None, str | None]:
        """Where to follow a 3xx, or None and why not (None, None: not a redirect)."""
        location = response.headers.get("Location")
        if status not in _FOLLOWABLE or location is None:
            return None, None  # 304, or a 3xx that names no target: an answer like any
        try:
            # A relative reference is resolved against the request's URL (RFC 9110 §10.2.2).
            target = url.join(URL(location, encoded=True))
        except ValueError:
            return None, f"redirect to an unusable Location {location!r}: not followed"
        if target.raw_user is not None or target.raw_password is not None:
            # aiohttp would make them an Authorization header, which the request has.
            target = target.with_user(None)
            return None, f"redirect to {target} refused: the Location carries credentials"
        if origin(target) != home:
            return None, f"redirect to {target} refused: another origin than {url.origin()}"
        if method not in _READS:
            # RFC 9110 §15.4: a client may redirect a write, but the server may have
            # applied it already; it is not sent again until its outcome is settled.
            return None, f"redirect to {target} not followed: a {method} is never redirected"
        if hops >= MAX_REDIRECTS:
            return None, f"redirect to {target} refused: more than {MAX_REDIRECTS} in a row"
        return target, None


async def fetch(url: str, *, timeout_s: float = 60.0) -> Response:
    """One GET on a session of its own (the simulator's inspection endpoints, say)."""
    async with make_session(concurrency=1, timeout=timeout_s) as session:
        client = HttpClient(session, timeout_s)
        try:
            return await client.send("GET", URL(url), request_headers({}))
        finally:
            await client.close()
