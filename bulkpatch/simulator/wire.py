"""What every part of the simulator says and reads on the wire.

The paths it serves, the two error shapes of the real service (the gateway's and the
service's problem document, API notes §3), the refusal the throttle and the faults share,
the headers every write reads (``If-Match``, the caller's client id), reading a JSON
body, and the two ways a request ends without an answer (dropped on purpose, or a client
that went away).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Final

import orjson
from aiohttp import web

DPS_BASE: Final = "/data/core/dps"
# The legacy API (bulkpatch.simulator.xcore), behind the same gateway as DPS.
XCORE_BASE: Final = "/data/core/xcore"
IMS_PATH: Final = "/ims/token/v3"

_JSON_HEADERS: Final = {"Content-Type": "application/json"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- answers


def json_answer(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers={**_JSON_HEADERS, **(headers or {})}
    )


def gateway_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """The API gateway's error shape (API notes §3)."""
    return json_answer({"error_code": code, "message": message}, status, headers)


def problem(status: int, title: str, detail: str, **report: Any) -> web.Response:
    """The service's problem-document shape (API notes §3)."""
    body = {
        "type": f"https://ns.adobe.com/aep/errors/ODM-{status}",
        "title": title,
        "status": status,
        "detail": detail,
        "report": report,
    }
    return json_answer(body, status)


def too_many(form: str, wait: float, status: int = 429) -> web.Response:
    """The gateway's refusal of a throttled request: 429, or 503 from a gateway that says
    so; ``Retry-After`` in the given form (RFC 9110 §10.2.3), or none.

    A date is rounded up to the next whole second (an HTTP-date has no finer one, RFC 9110
    §5.6.7), so a client that waits until it never comes back early.
    """
    headers: dict[str, str] = {}
    if form == "seconds":
        headers["Retry-After"] = str(max(0, math.ceil(wait)))
    elif form == "date":
        when = datetime.now(UTC) + timedelta(seconds=wait)
        if when.microsecond:
            when = when.replace(microsecond=0) + timedelta(seconds=1)
        headers["Retry-After"] = format_datetime(when, usegmt=True)
    if status == 503:
        return gateway_error(503, "503000", "Service Unavailable", **headers)
    return gateway_error(429, "429050", "Too many requests", **headers)


# --------------------------------------------------------------------------- no answer


class Dropped(Exception):
    """Raised after the connection was aborted on purpose, so no answer is written."""


class ClientGone(Exception):
    """The client went away before its answer was written: nobody is left to read it."""


def drop(request: web.Request) -> None:
    """Abort the connection without an answer; always raises ``Dropped``."""
    if request.transport is not None:
        request.transport.abort()
    raise Dropped


# --------------------------------------------------------------------------- requests


async def read_json(
    request: web.Request, content_types: frozenset[str] | None = None
) -> Any | web.Response:
    """The request's body parsed as JSON, or the service's 400 when it is not JSON.

    With ``content_types``, a request whose ``Content-Type`` is none of them is refused
    before its body is read (the DPS check; xcore checks its own media types first).
    """
    if content_types is not None and request.content_type not in content_types:
        return problem(400, "Bad Request", "A valid content-type must be specified")
    try:
        raw = await request.read()
    except ConnectionResetError:
        raise ClientGone from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return problem(400, "Bad Request", f"The request body is not valid JSON: {exc}")


def if_match(request: web.Request, ignore: bool) -> int | web.Response | None:
    """The etag ``If-Match`` names (None without one), or a 400 when it is not an etag.

    A malformed header is refused even when ``ignore`` (the ``ignore_if_match`` setting)
    makes a well-formed one count for nothing: the header is read before it is ignored.
    """
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    value = raw.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    try:
        etag = int(value)
    except ValueError:
        return problem(400, "Bad Request", f"If-Match must be an etag number, got {raw!r}")
    return None if ignore else etag


def writer(request: web.Request) -> tuple[str, str]:
    """(client id, user) a write is recorded under: the caller's API key."""
    client_id = request.headers.get("x-api-key", "").strip()
    return client_id, f"{client_id}@AdobeID"
