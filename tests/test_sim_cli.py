"""``bulkpatch sim`` as a process: its ready line, its signals, its state file, ``--version``.

The simulator runs as a child process on an ephemeral loopback port; the tests speak
HTTP to it with the standard library, so they stay synchronous and need no event loop.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bulkpatch import __version__
from bulkpatch.simulator import offer_id

# Generous: a loaded machine may take seconds to import aiohttp and bind.
WAIT_S = 20.0
FIRST = offer_id(1)
READY_KEYS = {"event", "endpoint", "ims_url", "access_token", "client_id", "client_secret"}


def _command(*args: str) -> list[str]:
    # bulkpatch has no __main__ module; its console script is next to this interpreter.
    script = Path(sys.executable).with_name("bulkpatch")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "bulkpatch.cli", *args]


@dataclass
class Sim:
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.ready['access_token']}",
            "x-api-key": "cli-test",
            "x-gw-ims-org-id": "ABC123@AdobeOrg",
            "x-sandbox-name": "prod",
            **extra,
        }

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(
            self.ready["endpoint"] + path, data=data, method=method, headers=self.headers(**headers)
        )
        try:
            with urllib.request.urlopen(request, timeout=WAIT_S) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")

    def stop(self, signum: int) -> tuple[int, bytes, str]:
        """Signal the process; its exit code, the rest of its stdout, all its stderr."""
        self.proc.send_signal(signum)
        out, err = self.proc.communicate(timeout=WAIT_S)
        return self.proc.returncode, out, err.decode()


@contextmanager
def sim_process(*args: str) -> Iterator[Sim]:
    command = _command("sim", "--host", "127.0.0.1", "--port", "0", "--log-format", "json", *args)
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            assert proc.stdout is not None
            readable, _, _ = select.select([proc.stdout], [], [], WAIT_S)
            assert readable, "no ready line within the wait"
            line = proc.stdout.readline()
            assert line.endswith(b"\n"), line
            yield Sim(proc, json.loads(line))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=WAIT_S)


def log_events(stderr: str) -> dict[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    for line in stderr.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            events[record["event"]] = record
    return events


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ready_line_then_clean_exit_on_signal(signum: signal.Signals) -> None:
    with sim_process(
        "--offers", "3", "--access-token", "tok", "--client-id", "cid", "--client-secret", "sec"
    ) as sim:
        ready = sim.ready
        assert set(ready) >= READY_KEYS
        assert ready["event"] == "ready"
        assert ready["endpoint"].startswith("http://127.0.0.1:")
        assert ready["endpoint"].endswith("/data/core/dps")
        port = urllib.parse.urlsplit(ready["endpoint"]).port
        assert port is not None
        assert port > 0
        assert ready["ims_url"] == f"http://127.0.0.1:{port}/ims/token/v3"
        assert (ready["access_token"], ready["client_id"], ready["client_secret"]) == (
            "tok",
            "cid",
            "sec",
        )
        status, doc = sim.call("GET", f"/offers/{FIRST}?offer-type=personalized")
        assert status == 200
        assert doc["id"] == FIRST
        status, receipt = sim.call(
            "PATCH",
            f"/offers/{FIRST}?offer-type=personalized",
            [{"op": "replace", "path": "/name", "value": "from the CLI test"}],
        )
        assert status == 200
        assert receipt["etag"] == 2
        code, rest, stderr = sim.stop(signum)
    assert code == 0, stderr
    # stdout carries the ready line and nothing else, so a script can read it safely.
    assert rest == b""
    stopped = log_events(stderr)["sim.stopped"]
    assert stopped["signal"] == signum.name
    assert stopped["writes_applied"] == 1
    assert stopped["requests_total"] == 2
    assert stopped["requests"] == {"GET": {"200": 1}, "PATCH": {"200": 1}}


def test_secrets_are_random_when_not_given_and_ims_issues_tokens() -> None:
    with sim_process() as sim:
        ready = sim.ready
        assert len(ready["access_token"]) >= 20
        assert ready["client_id"].startswith("sim-")
        form = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": ready["client_id"],
                "client_secret": ready["client_secret"],
                "scope": "openid,AdobeID",
            }
        ).encode()
        with urllib.request.urlopen(ready["ims_url"], data=form, timeout=WAIT_S) as response:
            token = json.loads(response.read())
        assert token["token_type"] == "bearer"
        assert token["expires_in"] == 86399
        status, listing = sim.call(
            "GET", "/placements", Authorization=f"Bearer {token['access_token']}"
        )
        assert status == 200
        assert listing["total"] == 3
        code, rest, _ = sim.stop(signal.SIGTERM)
    assert (code, rest) == (0, b"")


def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    path = f"/offers/{FIRST}?offer-type=personalized"
    with sim_process("--offers", "3", "--state", str(state)) as sim:
        status, _ = sim.call(
            "PATCH", path, [{"op": "replace", "path": "/name", "value": "survivor"}]
        )
        assert status == 200
        status, _ = sim.call("DELETE", f"/offers/{offer_id(3)}?offer-type=personalized")
        assert status == 200
        code, _, stderr = sim.stop(signal.SIGINT)
    assert code == 0, stderr
    assert "sim.state_saved" in log_events(stderr)
    saved = json.loads(state.read_text())
    assert [d["id"] for d in saved["offers/personalized"]] == [offer_id(1), offer_id(2)]
    # --offers is ignored when the state file exists: the saved entities are the library.
    with sim_process("--offers", "50", "--state", str(state)) as sim:
        status, doc = sim.call("GET", path)
        assert status == 200
        assert doc["name"] == "survivor"
        assert doc["etag"] == 2
        status, listing = sim.call("GET", "/offers?offer-type=personalized")
        assert listing["total"] == 2
        code, _, stderr = sim.stop(signal.SIGTERM)
    assert code == 0, stderr


def test_invalid_setting_exits_2_with_nothing_on_stdout() -> None:
    result = subprocess.run(
        _command("sim", "--port", "0", "--rate-schedule", "5:100"),
        capture_output=True,
        timeout=WAIT_S,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == b""
    assert b"rate_schedule must start at 0" in result.stderr


def test_throttle_settings_reach_the_gateway() -> None:
    # 3 requests a minute in any minute, refused with 503; an outage planned past the test.
    throttle = ["--throttle", "sliding", "--throttle-window", "60", "--rate-limit", "0.05"]
    with sim_process(
        "--offers", "1", *throttle, "--throttle-status", "503", "--outage", "600:5"
    ) as sim:
        path = f"/offers/{FIRST}?offer-type=personalized"
        statuses = [sim.call("GET", path)[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 503]
        code, _, stderr = sim.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert log_events(stderr)["sim.stopped"]["throttled_429"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--throttle", "fixed", "--rate-limit", "2.5"], "--rate-limit 2.5/s x a 1 s window"),
        (["--outage", "soon"], "--outage 'soon' is not START:SECONDS"),
    ],
)
def test_invalid_throttle_setting_is_one_line_naming_its_flag(
    args: list[str], message: str
) -> None:
    result = subprocess.run(
        _command("sim", "--port", "0", *args), capture_output=True, timeout=WAIT_S, check=False
    )
    assert (result.returncode, result.stdout) == (2, b"")
    assert message in result.stderr.decode()
    assert len(result.stderr.decode().strip().splitlines()) == 1
    assert "Traceback" not in result.stderr.decode()


def test_decisioning_settings_reach_the_service() -> None:
    schema = "https://ns.adobe.com/acme/schemas/items"
    with sim_process(
        "--items", "1", "--examples", "--schema-id", schema,
        "--approved-delete-status", "409", "--exd-placement-delete-status", "allow",
        "--item-limit-status", "422", "--refuse-managed-fields",
    ) as sim:  # fmt: skip
        assert sim.ready["schema_id"] == schema
        assert sim.call("GET", "/offer-items/offerItem000001", **{"x-schema-id": schema})[0] == 200
        assert sim.call("GET", "/offer-items/offerItem000001", **{"x-schema-id": "x"})[0] == 400
        item = ("DELETE", "/offer-items/offerItem1234")
        assert sim.call(*item, **{"x-schema-id": schema})[0] == 409
        assert sim.call("DELETE", "/exd-placements/exdPlacement1234")[0] == 200
        formula = ("PUT", "/ranking-formulas/rankingFormula1234", {"id": "rankingFormula1234"})
        assert sim.call(*formula)[0] == 422
        code, _, stderr = sim.stop(signal.SIGTERM)
    assert code == 0, stderr


def test_an_invalid_decisioning_setting_is_one_line_naming_its_flag() -> None:
    result = subprocess.run(
        _command("sim", "--port", "0", "--approved-delete-status", "418"),
        capture_output=True,
        timeout=WAIT_S,
        check=False,
    )
    assert (result.returncode, result.stdout) == (2, b"")
    assert "--approved-delete-status: '418' is not one of 400, 403, 409, 422 or allow" in (
        result.stderr.decode()
    )
    assert "Traceback" not in result.stderr.decode()


def test_version() -> None:
    result = subprocess.run(_command("--version"), capture_output=True, timeout=WAIT_S, check=False)
    assert result.returncode == 0
    assert result.stdout.decode() == f"bulkpatch {__version__}\n"
    assert __version__ != "0+unknown"
