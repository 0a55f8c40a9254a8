"""Preflight: a command's setup mistakes, found before its first write.

- **Outputs.** Every file a command will write is checked before anything is read or
  sent (``check_outputs``): a missing or read-only directory, a directory given as a
  file, a file that cannot be written. ``ConfigError`` (exit 2) names the flag, the path
  and the reason.
- **The API.** The first request of every command that calls the API is a list of one
  entity of its first job's collection (``probe``); for the xcore dialect, the container
  discovery (``discover``); for ``export``, its first page. A 401, a 404 or any other
  4xx there, or no answer after every retry, stops the command (``PreflightError``,
  exit 3) with one line naming the setting that is likely wrong (``refused``), using the
  gateway's documented codes (API notes §3): 403000/403003 the API key, 403025
  "Profile is not valid" and 403027 "User region is missing" the organization, 400003
  a missing header, 401013 the token; a 404 the endpoint's path.

A wrong endpoint, key or org would otherwise fail every job on its own, one by one.
"""

from __future__ import annotations

import enum
import os
from collections.abc import AsyncIterable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import structlog
from yarl import URL

from bulkpatch import entities
from bulkpatch.api import XCORE_HOME_ACCEPT, DpsDialect, XcoreDialect, containers, home_url
from bulkpatch.client import request_headers
from bulkpatch.errors import ConfigError, PreflightError
from bulkpatch.gateway import Gateway, Halted
from bulkpatch.jobs import BadLine, Job
from bulkpatch.repeat import Given, Tally
from bulkpatch.scrub import scrub
from bulkpatch.source import JobStream

# Items read ahead for the first job (bad lines before it are held meanwhile).
PEEK_ITEMS: Final = 1024

API_KEY: Final = "the API key (--api-key or ADOBE_API_KEY)"
ORG: Final = "the organization (--org-id or ADOBE_ORG_ID)"
SANDBOX: Final = "the sandbox (--sandbox or ADOBE_SANDBOX_NAME)"
TOKEN: Final = "the access token (ADOBE_ACCESS_TOKEN, or ADOBE_CLIENT_ID and ADOBE_CLIENT_SECRET)"
ENDPOINT: Final = "the endpoint's path (--endpoint or BULKPATCH_ENDPOINT)"
ANY: Final = "the endpoint, the API key, the organization, the sandbox and the credentials"

# Adobe's gateway codes (API notes §3) and the setting each points at.
_BY_CODE: Final = {
    "403000": API_KEY,  # Api Key is required
    "403003": API_KEY,  # Api Key is invalid
    "403025": ORG,  # Profile is not valid: not entitled for the org in x-gw-ims-org-id
    "403027": ORG,  # User region is missing: a wrong or malformed org id
    "400003": ORG,  # Missing header (the org's)
    "401013": TOKEN,  # Oauth token is not valid
    "403010": TOKEN,  # Oauth token is missing
}


# ---------------------------------------------------------------------- outputs


def check_outputs(named: Iterable[tuple[str, Path | None]]) -> None:
    """``check_output`` for each ``(flag, path)`` given (None: not given)."""
    for flag, path in named:
        if path is not None:
            check_output(flag, path)


def check_output(flag: str, path: Path) -> None:
    """Raise ``ConfigError`` ("--receipts out/r.ndjson: the directory out does not
    exist") unless ``path`` can be created or appended to. Nothing is left behind: an
    existing file is opened for appending and closed, a new one created and removed.
    A device or a pipe (``/dev/stdout``) is not checked: it is written as it is."""
    where = f"{flag} {path}"
    if path.is_dir():
        raise ConfigError(f"{where}: is a directory, not a file")
    parent = path.parent
    if not parent.exists():
        raise ConfigError(f"{where}: the directory {parent} does not exist")
    if not parent.is_dir():
        raise ConfigError(f"{where}: {parent} is not a directory")
    if path.exists():
        if path.is_file():
            _try_open(where, path, os.O_WRONLY | os.O_APPEND, remove=False)
        return
    _try_open(where, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, remove=True)


def _try_open(where: str, path: Path, flags: int, *, remove: bool) -> None:
    # Tried, not asked (os.access): root passes every permission test but not a
    # read-only file system, and the answer is the file system's own.
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        return  # created meanwhile by someone else: the open for real says the rest
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be written ({exc.strerror})") from None
    os.close(fd)
    if remove:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- the API


class NoJob(enum.Enum):
    """No first job to list the collection of: ``NONE`` in the input at all (nothing to
    check), or ``NOT_SEEN`` within ``PEEK_ITEMS`` items (the default collection is)."""

    NONE = "none"
    NOT_SEEN = "not seen"


async def first_job(items: AsyncIterable[Job | BadLine] | Iterable[Job | BadLine]) -> Job | NoJob:
    """The first job of a run's items: a list's, or a job stream's read ahead (and its
    head refused if not UTF-8 text: ``ConfigError``). Other iterables are not read
    ahead (``NOT_SEEN``)."""
    if isinstance(items, list):
        return next((item for item in items if isinstance(item, Job)), NoJob.NONE)
    if not isinstance(items, JobStream):
        return NoJob.NOT_SEEN
    job = await items.first_job(PEEK_ITEMS)
    if job is not None:
        return job
    return NoJob.NOT_SEEN if items.items_read >= PEEK_ITEMS else NoJob.NONE


async def check_api(
    gateway: Gateway,
    dialect: DpsDialect | XcoreDialect,
    first: Job | NoJob,
    *,
    probing: bool,
    headers: Mapping[str, Any],
    carried: Mapping[str, str],
    totals: list[int] | None = None,
) -> DpsDialect | XcoreDialect:
    """The run's first request, before its first job; the dialect to run with (xcore's
    with its container found). DPS: ``probe`` the first job's collection (``headers``:
    the read headers by offer type). xcore: ``discover`` (always, when the container is
    to be found). Nothing unless ``probing`` but that discovery, nor with no job at all.
    ``totals`` gets the collection's ``total`` when the list answer says it."""
    if isinstance(dialect, XcoreDialect):
        if dialect.container and not probing:
            return dialect
        found = await discover(gateway, dialect.endpoint, dialect.container or None, carried)
        return XcoreDialect(dialect.endpoint, found)
    if probing and first is not NoJob.NONE:
        entity, offer_type = (
            (first.entity, first.type)
            if isinstance(first, Job)
            else (entities.DEFAULT_ENTITY, entities.DEFAULT_OFFER_TYPE)
        )
        url = list_url(dialect.endpoint, entity, offer_type)
        total = await probe(gateway, url, headers[offer_type])
        if totals is not None and total is not None:
            totals.append(total)
    return dialect


def list_url(endpoint: str, entity: str, offer_type: str | None) -> URL:
    """``{endpoint}/{entity}?limit=1[&offer-type=...]``: the cheapest read of a collection."""
    parts = ["limit=1"]
    if typed := entities.type_query(entity, offer_type or entities.DEFAULT_OFFER_TYPE):
        parts.append(typed)
    return URL(f"{endpoint.rstrip('/')}/{entities.collection(entity)}?" + "&".join(parts), encoded=True)


def likely_setting(status: int | None, code: str | None, message: str) -> str:
    """The setting a refusal of the first request most likely points at."""
    mentions_sandbox = "sandbox" in message.lower()
    if code == "400003" and mentions_sandbox:
        return SANDBOX
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status == 401:
        return TOKEN
    if status == 404:
        return ENDPOINT
    return SANDBOX if mentions_sandbox else ANY


def refused(exc: Given | Halted, url: URL, traffic: Mapping[int, int]) -> PreflightError:
    """The error that ends a command whose first request (GET ``url``) was given up on
    (``Given``: a 4xx, or out of retries) or stopped the run (``Halted``: a 401 the
    token cannot get past, an unreachable endpoint). ``traffic``: the statuses met."""
    # The server's words may echo a secret (``scrub``).
    said = scrub(str(exc))
    if isinstance(exc, Halted):
        hint = f": check {TOKEN}" if traffic.get(401) else ""
        return PreflightError(f"the first request (GET {url.path}) failed: {said}{hint}")
    if exc.kind != "http":
        return PreflightError(f"the first request (GET {url.path}) failed: {said}")
    setting = likely_setting(exc.status, exc.code, said)
    return PreflightError(
        f"the API refused the first request (GET {url.path}: HTTP {exc.status}, {said}): "
        f"check {setting}"
    )


async def probe(gateway: Gateway, url: URL, headers: Mapping[str, str]) -> int | None:
    """Read ``url`` (a list of one) through the run's gateway, under its pace and
    retries: the collection's ``total`` when the answer says it. Raises
    ``PreflightError`` when the API refuses it."""
    try:
        answer = await gateway.read(Tally(), url, headers, "the first request")
    except (Given, Halted) as exc:
        raise refused(exc, url, gateway.traffic.statuses) from None
    body = answer.json()
    total = body.get("total") if isinstance(body, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else None


async def discover(
    gateway: Gateway, endpoint: str, container: str | None, carried: Mapping[str, str]
) -> str:
    """xcore: read the home (the preflight) and return ``container``, or when None the
    one decisioning container it lists. ``carried``: headers the session does not send.
    Raises ``PreflightError`` (refused) or ``ConfigError`` (none or several found)."""
    url = home_url(endpoint)
    headers = request_headers({**carried, "Accept": XCORE_HOME_ACCEPT})
    try:
        answer = await gateway.read(Tally(), url, headers, "reading the xcore home")
    except (Given, Halted) as exc:
        raise refused(exc, url, gateway.traffic.statuses) from None
    if container:
        return container
    found = containers(answer.json())
    if len(found) != 1:
        listed = ", ".join(found) or "none"
        raise ConfigError(
            f"expected one decisioning container, found {len(found)} ({listed}): "
            "name one with --container-id"
        )
    structlog.get_logger().info("xcore.container", container=found[0])
    return found[0]


__all__ = [
    "PEEK_ITEMS",
    "NoJob",
    "check_api",
    "check_output",
    "check_outputs",
    "discover",
    "first_job",
    "likely_setting",
    "list_url",
    "probe",
    "refused",
]
