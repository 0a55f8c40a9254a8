"""Bad usage, row by row: every subcommand refuses what a user can get wrong in one line
on stderr, with its documented exit status, and sends no write.

Exit statuses (README "Exit status"): 2 bad usage (a path that cannot be written, a port
that cannot be bound, an input that is not UTF-8 text, a bad setting), 3 the API refused
the first request (the preflight: a wrong endpoint path, key, org, sandbox or token);
0 an input with no job (a warning). Each row runs ``bulkpatch`` as a process against one
simulator shared by the module; a row that calls the API may send it one read (the
preflight's list of one entity) and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

from bulkpatch.simulator import RunningSimulator, SimConfig
from bulkpatch.simulator.server import start

CLI: Final = (sys.executable, "-m", "bulkpatch")
ROW_S: Final = 60.0  # the most one row may take
TOKEN: Final = "bad-usage-token-7f3a"
GOOD_ENV: Final = {
    "ADOBE_ACCESS_TOKEN": TOKEN,
    "ADOBE_API_KEY": "bad-usage-key",
    "ADOBE_ORG_ID": "BAD0USAGE@AdobeOrg",
    "ADOBE_SANDBOX_NAME": "prod",
}
JOB: Final = b'{"id": "personalizedOffer000001", "patch": [{"op": "replace", "path": "/name", "value": "x"}]}\n'


@dataclass(frozen=True, slots=True)
class Row:
    """One mistake: the arguments (``{ep}``, ``{dir}``, ``{port}`` filled in), the
    environment over the good one, stdin, the exit status, and words the one stderr
    line must hold. ``api``: the row may reach the simulator (one read at most)."""

    name: str
    args: tuple[str, ...]
    code: int
    says: str
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    api: bool = False


ROWS: Final = (
    # run
    Row("run-missing-dir", ("run", "{dir}/jobs.ndjson", "--receipts", "{dir}/no-such-dir/out.ndjson"), 2, "no-such-dir does not exist"),
    Row("run-summary-unwritable", ("run", "{dir}/jobs.ndjson", "--summary", "/proc/s.json"), 2, "--summary /proc/s.json: cannot be written"),
    Row("run-failures-is-a-dir", ("run", "{dir}/jobs.ndjson", "--failures", "{dir}"), 2, "is a directory"),
    Row("run-wrong-endpoint-path", ("run", "{dir}/jobs.ndjson", "--endpoint", "{ep}x"), 3, "check the endpoint's path", api=True),
    Row("run-wrong-key", ("run", "{dir}/jobs.ndjson"), 3, "403003", env={"ADOBE_API_KEY": "wrong"}, api=True),
    Row("run-wrong-org", ("run", "{dir}/jobs.ndjson"), 3, "403025", env={"ADOBE_ORG_ID": "OTHER@AdobeOrg"}, api=True),
    Row("run-wrong-token", ("run", "-"), 3, "ADOBE_ACCESS_TOKEN", env={"ADOBE_ACCESS_TOKEN": "wrong-token"}, stdin=JOB, api=True),
    Row("run-xcore-wrong-key", ("run", "{dir}/jobs.ndjson", "--dialect", "xcore", "--endpoint", "{xep}"), 3, "check the API key", env={"ADOBE_API_KEY": "wrong"}, api=True),
    Row("run-unknown-sandbox", ("run", "{dir}/jobs.ndjson", "--sandbox", "stage"), 3, "check the sandbox", api=True),
    Row("run-utf16", ("run", "{dir}/utf16.ndjson"), 2, "iconv -f UTF-16"),
    Row("run-nul-on-stdin", ("run", "-"), 2, "iconv", stdin=JOB.replace(b"x", b"\x00")),
    Row("run-bad-env-endpoint", ("run", "{dir}/jobs.ndjson"), 2, "http(s) URL", env={"BULKPATCH_ENDPOINT": "offers.example"}),
    Row("run-empty-input", ("run", "{dir}/empty.ndjson"), 0, "no jobs in"),
    # plan
    Row("plan-missing-dir", ("plan", "{dir}/jobs.ndjson", "--receipts", "{dir}/no-such-dir/p.ndjson"), 2, "does not exist"),
    Row("plan-malformed-org", ("plan", "{dir}/jobs.ndjson", "--org-id", "BAD0USAGE"), 3, "403027", api=True),
    # rollback
    Row("rollback-unwritable", ("rollback", "{dir}/backup.ndjson", "--receipts", "/proc/undo.ndjson"), 2, "cannot be written"),
    Row("rollback-wrong-token", ("rollback", "{dir}/backup.ndjson"), 3, "ADOBE_ACCESS_TOKEN", env={"ADOBE_ACCESS_TOKEN": "wrong-token"}, api=True),
    Row("rollback-missing-backup", ("rollback", "{dir}/no-backup.ndjson"), 2, "cannot read"),
    # export
    Row("export-one-equals-sign", ("export", "--filter", "status=approved"), 2, "--filter 'status=approved'"),
    Row("export-wrong-endpoint-path", ("export", "--endpoint", "{ep}x"), 3, "check the endpoint's path", api=True),
    Row("export-missing-dir", ("export", "--output", "{dir}/no-such-dir/e.ndjson"), 2, "does not exist"),
    # report
    Row("report-missing-input", ("report", "{dir}/none.ndjson", "--html", "{dir}/r.html"), 2, "none.ndjson"),
    Row("report-missing-dir", ("report", "{dir}/out.ndjson", "--html", "{dir}/no-such-dir/r.html"), 2, "no-such-dir"),
    # translate
    Row("translate-missing-dir", ("translate", "--from", "xcore", "--to", "dps", "{dir}/jobs.ndjson", "--output", "{dir}/no-such-dir/t.ndjson"), 2, "does not exist"),
    Row("translate-missing-input", ("translate", "--from", "xcore", "--to", "dps", "{dir}/none.ndjson"), 2, "cannot read"),
    # sim
    Row("sim-port-out-of-range", ("sim", "--port", "80000"), 2, "--port must be from 0 to 65535"),
    Row("sim-port-taken", ("sim", "--port", "{port}"), 2, "cannot listen"),
    Row("sim-state-missing-dir", ("sim", "--port", "0", "--state", "{dir}/no-such-dir/s.json"), 2, "does not exist"),
    # config
    Row("config-unknown-profile", ("config", "show", "--profile", "nope"), 2, "profile 'nope'"),
    Row("config-bad-env-profile", ("config", "show"), 2, "profile 'nope'", env={"BULKPATCH_PROFILE": "nope"}),
    # demo
    Row("demo-workdir-is-a-file", ("demo", "--workdir", "{dir}/jobs.ndjson"), 2, "--workdir"),
    Row("demo-negative-offers", ("demo", "--offers", "-3"), 2, "offers must be >= 0"),
)


@dataclass(frozen=True, slots=True)
class Shared:
    """The module's simulator, on a loop of its own in a thread, and its files."""

    sim: RunningSimulator
    loop: asyncio.AbstractEventLoop
    dir: Path

    def stats(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return self.sim.simulator.stats.as_dict(self.sim.store)

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(ROW_S)

    def fill(self, text: str) -> str:
        port = self.sim.base_url.rsplit(":", 1)[1]
        return text.format(ep=self.sim.endpoint, xep=self.sim.xcore_endpoint, dir=self.dir, port=port)

    def env(self, row: Row) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ADOBE_", "BULKPATCH_"))}
        return {**env, **GOOD_ENV, "BULKPATCH_ENDPOINT": self.sim.endpoint, **row.env}


def run(shared: Shared, *args: str, env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        (*CLI, *args), input=stdin, capture_output=True, env=env, timeout=ROW_S, cwd=shared.dir, check=False
    )


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    config = SimConfig(
        offers=3,
        access_token=TOKEN,
        api_key=GOOD_ENV["ADOBE_API_KEY"],
        org_id=GOOD_ENV["ADOBE_ORG_ID"],
        sandboxes=("prod",),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sim = asyncio.run_coroutine_threadsafe(start(config), loop).result(ROW_S)
    folder = tmp_path_factory.mktemp("bad-usage")
    (folder / "jobs.ndjson").write_bytes(JOB)
    (folder / "empty.ndjson").write_bytes(b"\n  \n")
    (folder / "utf16.ndjson").write_bytes(JOB.decode().encode("utf-16"))
    shared = Shared(sim, loop, folder)
    # A backup and an outcome file to roll back and report on: the one write of the module.
    setup = run(shared, "run", "jobs.ndjson", "--backup", "backup.ndjson", "--receipts", "out.ndjson", env=shared.env(Row("", (), 0, "")))
    assert setup.returncode == 0, setup.stderr.decode()
    try:
        yield shared
    finally:
        asyncio.run_coroutine_threadsafe(sim.close(), loop).result(ROW_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(ROW_S)
        loop.close()


def requests(stats: dict[str, Any]) -> dict[str, int]:
    return {method: sum(by_status.values()) for method, by_status in stats["requests"].items()}


def check(shared: Shared, row: Row) -> str | None:
    """Run one row; what is wrong with what it did, or None."""
    try:
        done = run(shared, *(shared.fill(a) for a in row.args), env=shared.env(row), stdin=row.stdin)
    except subprocess.TimeoutExpired:
        return f"still running after {ROW_S:g} s"  # a simulator serving on a wrapped port, say
    err = done.stderr.decode(errors="replace")
    lines = [line for line in err.splitlines() if line.strip()]
    if done.returncode != row.code or len(lines) != 1 or row.says not in err or "Traceback" in err:
        return f"exit {done.returncode} (expected {row.code}), stderr:\n{err}"
    if TOKEN in err or TOKEN in done.stdout.decode(errors="replace"):
        return "the token was shown"
    return None


def test_every_subcommand_has_rows() -> None:
    commands = [row.args[0] for row in ROWS]
    for command in ("run", "plan", "rollback", "export", "report", "translate", "sim", "config", "demo"):
        assert commands.count(command) >= 2, command


def test_bad_usage_table(shared: Shared) -> None:
    wrong: dict[str, str] = {}
    # Rows that reach the API run one at a time, each seen to send one read at most and
    # no write; the others (which send nothing) run meanwhile, a few at once.
    local = [row for row in ROWS if not row.api]
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {row.name: pool.submit(check, shared, row) for row in local}
        for row in ROWS:
            if not row.api:
                continue
            before = requests(shared.stats())
            problem = check(shared, row)
            after = requests(shared.stats())
            sent = {m: after.get(m, 0) - before.get(m, 0) for m in after}
            if problem is None and (sent.get("GET", 0) > 1 or any(n for m, n in sent.items() if m != "GET")):
                problem = f"sent {sent}"
            if problem is not None:
                wrong[row.name] = problem
        for name, future in futures.items():
            if (problem := future.result(ROW_S)) is not None:
                wrong[name] = problem
    assert not wrong, orjson.dumps(wrong, option=orjson.OPT_INDENT_2).decode()
    # No row wrote: the entity is as the setup run left it.
    assert requests(shared.stats()).keys() <= {"GET", "PATCH"}
    assert shared.stats()["writes_applied"] == 1
