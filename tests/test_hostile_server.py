"""A hostile server: IMS and the API on one loopback port, misbehaving one way per test.

Each test runs ``bulkpatch run`` (or ``export``) as a user does, a process given a job
file, and checks three things:

- the outcome: the outcome lines, and the exit status as README "Exit status" says;
- what the server received: nothing after the point where the run must stop, and no
  credential sent to another origin (a second server, which records whatever reaches it);
- that no secret (the static token, each token IMS issued, the client secret) is in any
  file or stream bulkpatch wrote (stdout, stderr, receipts, failure log, journal, the
  ``--summary`` file, the HTML report drawn from the receipts), raw, JSON-escaped or
  percent-encoded, whole or in part.

The tokens are as long as IMS's (about a thousand characters), so a message cut short
would leave a part of one; the secrets hold the characters each encoding changes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulkpatch.jobs import Job, parse_line
from bulkpatch.report import write_report
from bulkpatch.simulator import offer_id
from tests.test_run_cli import CLI, Finished, clean_env, ndjson, run_cli

CLIENT_ID: Final = "hostile-client"
# Every character an encoding changes: JSON escapes '"' and '\'; percent-encoding '/+="\'.
CLIENT_SECRET: Final = 'p8e-Hostile/Secret+"quoted"\\and=padded=='
CREDENTIAL_HEADERS: Final = ("authorization", "x-api-key", "x-gw-ims-org-id", "x-sandbox-name")
IMS_PATH: Final = "/ims/token/v3"
OFFER: Final = "/dps/offers/{id}"
CAP: Final = 1024 * 1024  # --max-response-bytes in the tests of size
BIG: Final = 40 * 1024 * 1024  # what the huge answers hold, decompressed
LOGIN_PAGE: Final = b"<!doctype html><html><body><form method=post>Sign in</form></body></html>"
# A part of a secret this long, or longer, found anywhere is a leak (see ``leaks``).
FRAGMENT: Final = 16


def a_token(tag: str) -> str:
    """A token as long as IMS's, in the base64 alphabet ('+', '/' and '=' included)."""
    return f"{tag}-" + base64.b64encode(secrets.token_bytes(760)).decode()


STATIC_TOKEN: Final = a_token("static")


def replace_name(n: int) -> dict[str, Any]:
    return {"id": offer_id(n), "patch": [{"op": "replace", "path": "/name", "value": f"new {n}"}]}


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names

    @property
    def to_ims(self) -> bool:
        return self.path == IMS_PATH


@dataclass(slots=True)
class Hostile:
    """IMS (``/ims/token/v3``) and the API (``/dps``) on one server, misbehaving as
    ``mode`` says (``form`` picks a variant); ``foreign`` is another origin's base URL.
    Records every request, and every token IMS issued."""

    mode: str = "well"
    form: Any = None
    url: str = ""
    foreign: str = ""
    received: list[Received] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # "401": no refusal leaves before this many API requests arrived (a full window), so
    # any request after those was sent after a refusal had come back.
    window: int = 0
    _all_in: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.received.append(Received(request.method, request.path, headers))
            await request.read()
            answer: web.StreamResponse = await handler(request)
            return answer

        app = web.Application(middlewares=[record])
        if self.mode == "foreign":
            app.router.add_route("*", "/{tail:.*}", self.page)
            return app
        app.router.add_post(IMS_PATH, self.ims)
        app.router.add_get("/dps/offers", self.page)
        app.router.add_get(OFFER, self.read)
        app.router.add_patch(OFFER, self.patch)
        return app

    # ------------------------------------------------------------------ what was sent

    def api(self) -> list[Received]:
        return [r for r in self.received if not r.to_ims]

    def job_requests(self) -> list[Received]:
        """The API requests a run sent for its jobs: all but its first, the one-entity
        list it checks its settings with."""
        return [r for r in self.api() if not (r.method == "GET" and r.path == "/dps/offers")]

    def ims_requests(self) -> int:
        return sum(1 for r in self.received if r.to_ims)

    def credentialed(self) -> list[Received]:
        return [r for r in self.received if any(h in r.headers for h in CREDENTIAL_HEADERS)]

    # ------------------------------------------------------------------ IMS

    async def ims(self, request: web.Request) -> web.Response:
        if self.mode == "echo-ims":
            return self._echo(CLIENT_SECRET, 400)
        self.issued.append(a_token(f"ims{len(self.issued) + 1}"))
        expires_in = self.form if self.mode == "expires" else 86399
        return web.json_response({"access_token": self.issued[-1], "expires_in": expires_in})

    def _echo(self, secret: str, status: int) -> web.Response:
        """An error that quotes ``secret`` in the form ``form`` names."""
        match self.form:
            case "raw":  # a plain-text body: the secret as it is
                return web.Response(status=status, text=f"invalid credential {secret} (sent by you)")
            case "json":  # a JSON body: the secret JSON-escaped on the wire
                said = {"error": "invalid_client", "error_description": f"invalid credential {secret}"}
                return web.json_response(said, status=status)
            case _:  # the request's form body, echoed percent-encoded
                said = {"error": "invalid_client", "error_description": urlencode({"got": secret})}
                return web.json_response(said, status=status)

    # ------------------------------------------------------------------ the API

    def _doc(self, entity_id: str) -> dict[str, Any]:
        return self.docs.setdefault(entity_id, {"id": entity_id, "name": "old", "etag": 1})

    async def read(self, request: web.Request) -> web.Response:
        if self.mode == "401":
            return await self._refuse()
        return web.json_response(self._doc(request.match_info["id"]))

    async def _refuse(self) -> web.Response:
        if len(self.job_requests()) >= self.window:
            self._all_in.set()
        with contextlib.suppress(TimeoutError):  # then the count says what went wrong
            await asyncio.wait_for(self._all_in.wait(), 5)
        return web.json_response({"error_code": "401013", "message": "Oauth token is not valid"}, status=401)

    async def patch(self, request: web.Request) -> web.StreamResponse:
        match self.mode:
            case "401":
                return await self._refuse()
            case "huge":
                return await self._flood(request)
            case "gzip":
                bomb = gzip.compress(b" " * BIG, 9)
                encoded = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
                return web.Response(body=bomb, headers=encoded)
            case "login":  # a proxy's sign-in page; the write never reached the API
                return web.Response(body=LOGIN_PAGE, content_type="text/html")
            case "echo-api":
                return self._echo(request.headers["Authorization"], 400)
        doc = self._doc(request.match_info["id"])
        doc["etag"] += 1
        return web.json_response(doc)

    async def _flood(self, request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "application/json"})
        answer.content_length = BIG
        try:
            await answer.prepare(request)
            block = b" " * (64 * 1024)
            for _ in range(BIG // len(block)):
                await answer.write(block)
        except ConnectionError:
            pass  # the client hung up, as it should
        return answer

    async def page(self, request: web.Request) -> web.Response:
        """A page of the list API: ``next`` to another origin, or back to itself."""
        here = str(request.rel_url)
        link = {"foreign": f"{self.foreign}/dps/offers?start=2", "loop": here}.get(self.mode, "")
        page: dict[str, Any] = {"results": [self._doc(offer_id(1))], "total": 2}
        if link:
            page["_links"] = {"next": {"href": link}}
        return web.json_response(page)


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Hostile, Hostile]]:
    """The hostile server (a test sets its ``mode``) and another origin, both on loopback."""
    hostile, other = Hostile(), Hostile("foreign")
    async with (
        TestServer(hostile.app(), host="127.0.0.1") as api,
        TestServer(other.app(), host="127.0.0.1") as far,
    ):
        hostile.url, other.url = (str(s.make_url("")).rstrip("/") for s in (api, far))
        hostile.foreign = other.url
        yield hostile, other


# --------------------------------------------------------------------------- running


@dataclass(frozen=True, slots=True)
class Ran:
    done: Finished
    out: Path  # the directory every file the run wrote is in

    @property
    def code(self) -> int:
        return self.done.code

    def outcomes(self) -> list[dict[str, Any]]:
        receipts = self.out / "out.ndjson"
        return [orjson.loads(line) for line in receipts.read_bytes().splitlines()]

    def failures(self) -> list[bytes]:
        return (self.out / "failed.ndjson").read_bytes().splitlines()

    def errors(self) -> list[dict[str, Any]]:
        return error_events(self.done.stderr)


def said(error: dict[str, Any]) -> str:
    """What an error event says: a run's stop (``reason``) or a refused command (``error``)."""
    return str(error.get("reason") or error.get("error"))


def error_events(stderr: bytes) -> list[dict[str, Any]]:
    """The error events on stderr (JSON logs; the summary's lines are not JSON)."""
    events = [orjson.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]
    return [e for e in events if e.get("level") == "error"]


def env_for(url: str, *, static: bool) -> dict[str, str]:
    identity = {"ADOBE_ORG_ID": "HOSTILE0@AdobeOrg", "ADOBE_SANDBOX_NAME": "prod"}
    if static:
        return clean_env(ADOBE_ACCESS_TOKEN=STATIC_TOKEN, ADOBE_API_KEY="hostile-tests", **identity)
    return clean_env(
        ADOBE_CLIENT_ID=CLIENT_ID, ADOBE_CLIENT_SECRET=CLIENT_SECRET, ADOBE_IMS_URL=url + IMS_PATH, **identity
    )


async def run(
    url: str, tmp_path: Path, jobs: Iterable[dict[str, Any]], *flags: str, static: bool = False
) -> Ran:
    """``bulkpatch run`` with every output a file under ``tmp_path / "out"``, debug logs
    on (more text to leak into), and the report drawn from its receipts."""
    source, out = tmp_path / "jobs.ndjson", tmp_path / "out"
    source.write_bytes(ndjson(jobs))
    out.mkdir()
    done = await run_cli(
        source, "--endpoint", f"{url}/dps", "--rate", "0", "--timeout", "5",
        "--max-attempts", "2", "--receipts", out / "out.ndjson", "--failures", out / "failed.ndjson",
        "--summary", out / "summary.json", "-vv", "--log-format", "json", *flags,
        env=env_for(url, static=static), wait_s=30,
    )  # fmt: skip
    ran = Ran(done, out)
    if ran.outcomes():
        # What ``bulkpatch report`` does, in this process: matplotlib is imported once.
        write_report([str(out / "out.ndjson")], out / "report.html")
    return ran


async def export(hostile: Hostile) -> Finished:
    """``bulkpatch export`` as a process, pages of one entity, with debug logs."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, "export", "--endpoint", f"{hostile.url}/dps", "--rate", "0", "--page-size", "1",
        "-vv", "--log-format", "json", env=env_for(hostile.url, static=False),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return Finished(proc.returncode, out, err)


def forms(secret: str) -> tuple[str, ...]:
    return (secret, orjson.dumps(secret).decode()[1:-1], quote(secret, safe=""))


def leaks(blobs: Mapping[str, bytes], secrets_: Iterable[str]) -> list[str]:
    """Where a secret shows, in any form, whole or any part of it of ``2 * FRAGMENT``
    characters or more (such a part holds one of the aligned pieces checked)."""
    found = []
    for secret in secrets_:
        for form in forms(secret):
            pieces = {form[i : i + FRAGMENT] for i in range(0, len(form) - FRAGMENT + 1, FRAGMENT)}
            for name, blob in blobs.items():
                if any(piece.encode() in blob for piece in pieces):
                    found.append(f"{form[:12]}... in {name}")
    return found


def assert_clean(ran: Ran | Finished, hostile: Hostile, other: Hostile) -> None:
    """No secret in anything bulkpatch wrote; no credential sent to the other origin."""
    done = ran.done if isinstance(ran, Ran) else ran
    blobs = {"stdout": done.stdout, "stderr": done.stderr}
    if isinstance(ran, Ran):
        written = sorted(p for p in ran.out.rglob("*") if p.is_file())
        assert any(p.name.endswith(".journal") for p in written), written
        blobs.update({p.name: p.read_bytes() for p in written})
    assert not leaks(blobs, [STATIC_TOKEN, CLIENT_SECRET, *hostile.issued])
    assert other.credentialed() == []
    assert b"Traceback" not in done.stderr


# --------------------------------------------------------------------------- 1. size


@pytest.mark.parametrize("mode", ["huge", "gzip"])
async def test_an_answer_over_the_cap_leaves_the_job_not_ok(
    servers: tuple[Hostile, Hostile], tmp_path: Path, mode: str
) -> None:
    hostile, other = servers
    hostile.mode = mode
    ran = await run(hostile.url, tmp_path, [replace_name(1)], "--max-response-bytes", str(CAP))
    assert ran.code == 1, ran.done.stderr.decode()[-2000:]
    [outcome] = ran.outcomes()
    assert not outcome["ok"]
    assert outcome["error"]["kind"] == "exhausted"
    assert f"the answer exceeded --max-response-bytes ({CAP} bytes)" in outcome["error"]["message"]
    api = hostile.job_requests()
    assert [r.method for r in api].count("PATCH") == 2  # --max-attempts 2, no more
    assert api[-1].method == "PATCH"  # nothing after the last attempt's answer
    assert hostile.ims_requests() == 1
    assert_clean(ran, hostile, other)


# --------------------------------------------------------------------------- 2. a 200 that is no receipt


async def test_a_login_page_answered_200_to_a_patch_is_not_ok(
    servers: tuple[Hostile, Hostile], tmp_path: Path
) -> None:
    """The page proves nothing; the read shows the write did not land, so it is sent
    again, under the etag just read, until the attempts run out."""
    hostile, other = servers
    hostile.mode = "login"
    ran = await run(hostile.url, tmp_path, [replace_name(1)])
    assert ran.code == 1, ran.done.stderr.decode()[-2000:]
    [outcome] = ran.outcomes()
    assert not outcome["ok"]
    assert outcome["error"]["kind"] == "exhausted"
    assert [r.method for r in hostile.job_requests()] == ["PATCH", "GET", "PATCH"]  # --max-attempts 2
    assert hostile.job_requests()[-1].headers.get("if-match") == '"1"'  # the etag the read found
    assert hostile.docs[offer_id(1)]["name"] == "old"
    assert_clean(ran, hostile, other)


# --------------------------------------------------------------------------- 3. a token already over


@pytest.mark.parametrize("expires_in", [0, -5])
async def test_a_token_with_no_positive_lifetime_stops_the_run_at_once(
    servers: tuple[Hostile, Hostile], tmp_path: Path, expires_in: int
) -> None:
    hostile, other = servers
    hostile.mode, hostile.form = "expires", expires_in
    ran = await run(hostile.url, tmp_path, [replace_name(n) for n in range(1, 6)])
    assert ran.code == 3, ran.done.stderr.decode()[-2000:]
    [error] = ran.errors()
    assert f"no usable lifetime (expires_in {expires_in})" in said(error)
    assert 1 <= hostile.ims_requests() <= 2
    assert hostile.api() == []
    assert all(not o["ok"] for o in ran.outcomes())
    assert_clean(ran, hostile, other)


# --------------------------------------------------------------------------- 4. refused for ever


async def test_tokens_refused_for_ever_stop_the_run_after_two_renewals(
    servers: tuple[Hostile, Hostile], tmp_path: Path
) -> None:
    hostile, other = servers
    hostile.mode, hostile.window = "401", 4
    ran = await run(hostile.url, tmp_path, [replace_name(n) for n in range(1, 41)], "--concurrency", "4")
    assert ran.code == 3, ran.done.stderr.decode()[-2000:]
    [error] = ran.errors()
    assert "rejected (401) even after renewing" in said(error)
    assert hostile.ims_requests() == 3  # the first token and two renewals
    assert len(hostile.job_requests()) <= 3 * 4  # at most one refusal per worker per token
    assert_clean(ran, hostile, other)


async def test_a_static_token_refused_stops_the_run_at_that_answer(
    servers: tuple[Hostile, Hostile], tmp_path: Path
) -> None:
    hostile, other = servers
    hostile.mode, hostile.window = "401", 4
    jobs = [replace_name(n) for n in range(1, 41)]
    ran = await run(hostile.url, tmp_path, jobs, "--concurrency", "4", static=True)
    assert ran.code == 3, ran.done.stderr.decode()[-2000:]
    [error] = ran.errors()
    assert "the access token was rejected (401)" in said(error)
    # The window's requests were refused together; nothing was sent after the refusal.
    assert len(hostile.job_requests()) == 4
    assert hostile.ims_requests() == 0
    assert_clean(ran, hostile, other)


# --------------------------------------------------------------------------- 5. echoes


@pytest.mark.parametrize("form", ["raw", "json", "percent"])
async def test_a_client_secret_ims_echoes_is_shown_nowhere(
    servers: tuple[Hostile, Hostile], tmp_path: Path, form: str
) -> None:
    hostile, other = servers
    hostile.mode, hostile.form = "echo-ims", form
    ran = await run(hostile.url, tmp_path, [replace_name(n) for n in range(1, 6)])
    assert ran.code == 3, ran.done.stderr.decode()[-2000:]
    [error] = ran.errors()
    assert "IMS refused the client credentials" in said(error)
    assert hostile.ims_requests() == 1
    assert hostile.api() == []
    assert_clean(ran, hostile, other)


async def test_a_client_secret_ims_echoes_to_export_is_shown_nowhere(
    servers: tuple[Hostile, Hostile],
) -> None:
    hostile, other = servers
    hostile.mode, hostile.form = "echo-ims", "json"
    done = await export(hostile)
    assert done.code == 3, done.stderr.decode()[-2000:]
    [error] = error_events(done.stderr)
    assert "IMS refused the client credentials" in error["error"]
    assert (hostile.ims_requests(), hostile.api(), done.stdout) == (1, [], b"")
    assert_clean(done, hostile, other)


@pytest.mark.parametrize(
    ("form", "static"),
    [("raw", False), ("json", False), ("percent", False), ("raw", True)],
    ids=["raw-ims-token", "json-ims-token", "percent-ims-token", "raw-static-token"],
)
async def test_a_token_the_api_quotes_back_is_shown_nowhere_and_the_job_reruns_as_it_was(
    servers: tuple[Hostile, Hostile], tmp_path: Path, form: str, static: bool
) -> None:
    hostile, other = servers
    hostile.mode, hostile.form = "echo-api", form
    job = replace_name(1)
    ran = await run(hostile.url, tmp_path, [job], static=static)
    assert ran.code == 1, ran.done.stderr.decode()[-2000:]
    [outcome] = ran.outcomes()
    assert (outcome["ok"], outcome["error"]["kind"], outcome["status"]) == (False, "http", 400)
    assert "[secret]" in outcome["error"]["message"]
    [failed] = ran.failures()
    assert {k: v for k, v in orjson.loads(failed).items() if k not in ("line", "error")} == job
    assert isinstance(parse_line(failed, 1), Job)  # the failure log runs as it is
    assert [r.method for r in hostile.job_requests()] == ["PATCH"]
    assert_clean(ran, hostile, other)


# --------------------------------------------------------------------------- 6. export's next link


@pytest.mark.parametrize(("mode", "says"), [("foreign", "another origin"), ("loop", "already read")])
async def test_export_stops_at_a_next_link_it_must_not_follow(
    servers: tuple[Hostile, Hostile], mode: str, says: str
) -> None:
    hostile, other = servers
    hostile.mode = mode
    done = await export(hostile)
    assert done.code == 3, done.stderr.decode()[-2000:]
    [error] = error_events(done.stderr)
    assert says in error["error"]
    assert [orjson.loads(line)["id"] for line in done.stdout.splitlines()] == [offer_id(1)]
    assert [r.path for r in hostile.api()] == ["/dps/offers"]  # the first page only
    assert other.received == []
    assert_clean(done, hostile, other)
