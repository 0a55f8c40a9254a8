"""``bulkpatch run`` as a user runs it: a process, NDJSON in, outcome lines out, exit codes.

The simulator is either in-process (``running``) on this test's loop, or its own process
(``bulkpatch sim --port 0``) whose ready line says where it serves. Every wait is on a
process exit, a line or the simulator's own endpoints, each with a timeout.

The helpers here are shared with ``test_run_rules.py`` and ``test_run_auth.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
import pytest

from bulkpatch.demo import differences, expected_state
from bulkpatch.simulator import RunningSimulator, SimConfig, offer_id, running

CLI: Final = (sys.executable, "-m", "bulkpatch")
WAIT_S: Final = 60.0
OFFERS: Final = "offers/personalized"


# --------------------------------------------------------------------------- helpers


def ndjson(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(dict(r), option=orjson.OPT_APPEND_NEWLINE) for r in rows)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any credentials or endpoint, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADOBE_", "BULKPATCH_"))}
    env.update(extra)
    return env


def token_env(access_token: str, **extra: str) -> dict[str, str]:
    return clean_env(
        ADOBE_ACCESS_TOKEN=access_token,
        ADOBE_API_KEY="cli-tests",
        ADOBE_ORG_ID="CLI0000@AdobeOrg",
        ADOBE_SANDBOX_NAME="prod",
        **extra,
    )


def sim_env(sim: RunningSimulator, **extra: str) -> dict[str, str]:
    return token_env(sim.config.access_token, **extra)


@dataclass(frozen=True, slots=True)
class Finished:
    code: int
    stdout: bytes
    stderr: bytes

    def outcomes(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.stdout.splitlines()]

    def by_line(self) -> dict[int, dict[str, Any]]:
        outcomes = self.outcomes()
        lines = [o["line"] for o in outcomes]
        assert len(set(lines)) == len(lines), f"a line reported twice: {Counter(lines)}"
        return {o["line"]: o for o in outcomes}


async def run_cli(
    *args: str | Path,
    env: Mapping[str, str],
    stdin: bytes | None = None,
    wait_s: float = WAIT_S,
    cwd: Path | None = None,
) -> Finished:
    """``bulkpatch run ARGS`` as a process; its exit code and everything it wrote."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        *map(str, args),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), wait_s)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return Finished(proc.returncode, out, err)


async def against(
    sim: RunningSimulator, *args: str | Path, stdin: bytes | None = None
) -> Finished:
    """``bulkpatch ARGS --endpoint SIM --rate 0`` as a process (any subcommand)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, *map(str, args), "--endpoint", sim.endpoint, "--rate", "0",
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=sim_env(sim),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), WAIT_S)
    assert proc.returncode is not None
    return Finished(proc.returncode, out, err)


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, url
        return await response.json()


async def sim_stats(base_url: str) -> dict[str, Any]:
    """The simulator's counters, once no delayed write is pending (``/_sim/settle``)."""
    stats: dict[str, Any] = await get_json(f"{base_url}/_sim/settle?timeout=20")
    assert stats["settled"]
    return stats


def count(stats: Mapping[str, Any], method: str, status: str | None = None) -> int:
    """Requests the simulator answered with ``method`` (and ``status``, if given)."""
    by_status: dict[str, int] = stats["requests"].get(method, {})
    return by_status.get(status, 0) if status is not None else sum(by_status.values())


def offers_of(sim: RunningSimulator) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in sim.store.dump()[OFFERS]}


def replace_name(entity_id: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"id": entity_id, "patch": [{"op": "replace", "path": "/name", "value": value}], **extra}


def read_text(path: Path) -> str:
    return path.read_text(errors="replace")


@contextlib.asynccontextmanager
async def sim_process(*args: str, log: Path) -> AsyncIterator[tuple[dict[str, Any], list[int]]]:
    """``bulkpatch sim`` as a process: its ready line, and (after exit) its exit code.

    On leaving, the simulator is stopped with SIGTERM (it saves its state then).
    """
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
        code: list[int] = []
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), WAIT_S)
            assert line, f"the simulator exited before its ready line: {read_text(log)}"
            ready: dict[str, Any] = orjson.loads(line)
            assert ready["event"] == "ready"
            yield ready, code
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), WAIT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
            assert proc.returncode is not None
            code.append(proc.returncode)


# --------------------------------------------------------------------------- the bar


def bar_jobs(offers: Mapping[str, Mapping[str, Any]], per_offer: int) -> list[dict[str, Any]]:
    """Several jobs per offer, interleaved: appends to two arrays, replaces, test+replace."""
    rng = random.Random(5000)
    status = {oid: str(doc["status"]) for oid, doc in offers.items()}
    jobs: list[dict[str, Any]] = []
    for round_ in range(per_offer):
        ids = list(offers)
        rng.shuffle(ids)
        for n, oid in enumerate(ids):
            kind = (n + round_) % 6
            patch: list[dict[str, Any]]
            if kind == 0:
                patch = [{"op": "add", "path": "/tags/-", "value": f"tag-{round_}"}]
            elif kind == 1:
                patch = [
                    {
                        "op": "add",
                        "path": "/representations/-",
                        "value": {
                            "channel": "https://ns.adobe.com/xdm/channel-types/email",
                            "placement": "offerPlacement0002",
                            "components": [
                                {
                                    "type": "imagelink",
                                    "format": "image/png",
                                    "language": ["en-us"],
                                    "deliveryURL": f"https://cdn.example/{oid}/{round_}.png",
                                }
                            ],
                        },
                    }
                ]
            elif kind == 2:
                patch = [{"op": "replace", "path": "/name", "value": f"{oid} r{round_}"}]
            elif kind == 3:
                patch = [{"op": "replace", "path": "/rank/priority", "value": rng.randrange(100)}]
            elif kind == 4:
                new = "approved" if status[oid] != "approved" else "draft"
                patch = [
                    {"op": "test", "path": "/status", "value": status[oid]},
                    {"op": "replace", "path": "/status", "value": new},
                ]
                status[oid] = new
            else:
                patch = [
                    {"op": "replace", "path": "/description", "value": f"d{round_}"},
                    {"op": "add", "path": "/characteristics/wave", "value": str(round_)},
                ]
            jobs.append({"id": oid, "patch": patch})
    return jobs


async def test_bar_5000_jobs_on_1000_offers_through_stdin_leave_exactly_the_expected_state(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.json"
    async with sim_process(
        "--offers", "1000", "--state", str(state), "-q", log=tmp_path / "sim.log"
    ) as (ready, sim_code):
        dump = await get_json(ready["stats_url"].replace("/_sim/stats", "/_sim/dump"))
        initial = {d["id"]: d for d in dump[OFFERS]}
        assert len(initial) == 1000
        jobs = bar_jobs(initial, per_offer=5)
        assert len(jobs) == 5000
        done = await run_cli(
            "-",
            "--endpoint",
            ready["endpoint"],
            "--rate",
            "0",
            "--concurrency",
            "32",
            env=token_env(ready["access_token"]),
            stdin=ndjson(jobs),
        )
        stats = await sim_stats(ready["stats_url"].removesuffix("/_sim/stats"))
    assert sim_code == [0]
    assert b"Traceback" not in done.stderr
    assert done.code == 0, done.stderr.decode()[-2000:]
    outcomes = done.outcomes()
    assert len(outcomes) == 5000
    assert sorted(o["line"] for o in outcomes) == list(range(1, 5001))
    assert [o for o in outcomes if not o["ok"]] == []
    for o in outcomes:
        assert o["id"] == jobs[o["line"] - 1]["id"]
    # Every job applied once: exactly one write per job reached the store.
    assert stats["writes_applied"] == 5000

    final = {d["id"]: d for d in orjson.loads(state.read_bytes())[OFFERS]}
    assert differences(expected_state(initial, jobs), final) == []
    per_offer = Counter(j["id"] for j in jobs)
    assert {oid: doc["etag"] for oid, doc in final.items()} == {
        oid: initial[oid]["etag"] + per_offer[oid] for oid in initial
    }


# --------------------------------------------------------------------------- bad lines

BIG = 2 * 1024 * 1024
PATCH_OK: Final = [{"op": "replace", "path": "/name", "value": "fine"}]


def _line(obj: Any) -> bytes:
    return orjson.dumps(obj)


# (the line, the field its error must name, or None when the line is not a JSON object)
BAD_LINES: Final[list[tuple[bytes, str | None]]] = [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'"just a string"', None),
    (b"123", None),
    (b"null", None),
    (b'{"id": "o", "patch": []} tail', None),
    (b'{"id": "caf\xe9", "patch": []}', None),  # not UTF-8
    (b"y" * BIG, None),  # over the 1 MiB line limit
    (_line({"id": "personalizedOffer000001"}), "patch"),
    (_line({"patch": PATCH_OK}), "id"),
    (_line({"id": 5, "patch": PATCH_OK}), "id"),
    (_line({"id": "", "patch": PATCH_OK}), "id"),
    (_line({"id": "a\x00b", "patch": PATCH_OK}), "id"),
    (_line({"id": "z" * 600, "patch": PATCH_OK}), "id"),
    (b'{"id": "a", "id": "b", "patch": [{"op": "remove", "path": "/x"}]}', "id"),
    (_line({"id": "o", "patch": {"op": "add"}}), "patch"),
    (_line({"id": "o", "patch": []}), "patch"),
    (_line({"id": "o", "patch": [1]}), "patch"),
    (_line({"id": "o", "patch": [{"op": "frobnicate", "path": "/name"}]}), "patch"),
    (_line({"id": "o", "patch": [{"op": "add", "path": "/name"}]}), "patch"),
    (_line({"id": "o", "patch": [{"op": "replace", "path": "name", "value": 1}]}), "patch"),
    (_line({"id": "o", "patch": [{"op": "add", "path": "/tags/-/x", "value": 1}]}), "patch"),
    (_line({"id": "o", "patch": [{"op": "move", "path": "/name"}]}), "patch"),
    (_line({"id": "o", "patch": [{"op": "replace", "path": "/etag", "value": 9}]}), "patch"),
    (_line({"id": "o", "patch": [{"op": "move", "from": "/a", "path": "/a/b"}]}), "patch"),
    (_line({"id": "o", "patch": PATCH_OK, "type": "PERSONALIZED"}), "type"),
    (_line({"id": "o", "patch": PATCH_OK, "entity": "offer"}), "entity"),
    (_line({"id": "o", "patch": PATCH_OK, "entity": "tags", "type": "fallback"}), "type"),
    (_line({"id": "o", "patch": PATCH_OK, "etag": "3"}), "etag"),
    (_line({"id": "o", "patch": PATCH_OK, "etag": -1}), "etag"),
    (_line({"id": "o", "pacth": PATCH_OK}), "pacth"),
]


async def test_bad_lines_each_get_an_input_outcome_and_nothing_is_sent_for_them(
    tmp_path: Path,
) -> None:
    assert len(BAD_LINES) >= 30
    rows: list[bytes] = []
    good: dict[int, str] = {}
    bad: dict[int, str | None] = {}
    sizes: dict[int, int] = {}
    for n, (raw, field) in enumerate(BAD_LINES, start=1):
        good[len(rows) + 1] = offer_id(n)
        rows.append(_line(replace_name(offer_id(n), f"good {len(rows) + 1}")))
        if n % 7 == 0:
            rows.append(b"")  # blank lines count in line numbers, and get no outcome
        rows.append(raw)
        bad[len(rows)] = field
        sizes[len(rows)] = len(raw)
    jobs_file = tmp_path / "jobs.ndjson"
    jobs_file.write_bytes(b"\n".join(rows) + b"\n")

    async with running(SimConfig(offers=len(BAD_LINES))) as sim:
        done = await run_cli(jobs_file, "--endpoint", sim.endpoint, "--rate", "0", env=sim_env(sim))
        stats = await sim_stats(sim.base_url)
        final = offers_of(sim)

    assert b"Traceback" not in done.stderr
    assert done.code == 1
    by_line = done.by_line()
    assert set(by_line) == set(good) | set(bad)
    for n, field in bad.items():
        o = by_line[n]
        assert o["ok"] is False, o
        error = o["error"]
        assert error["kind"] == "input", (n, error)
        assert error["field"] == field, (n, error)
        assert error["message"].startswith(f"line {n}"), error
        if field is not None:
            assert f"'{field}'" in error["message"], error
        assert len(o["job"]) <= 64 * 1024  # the line is cut, not echoed whole
    (big,) = (n for n, size in sizes.items() if size == BIG)
    assert by_line[big]["bytes"] == BIG  # the 2 MiB line: its size, not its bytes
    for n, entity_id in good.items():
        assert by_line[n]["ok"] is True, by_line[n]
        assert final[entity_id]["name"] == f"good {n}"
    # One PATCH per good job and nothing else: no request for any bad line (the one
    # GET is the preflight's list of one offer).
    assert stats["requests"] == {"GET": {"200": 1}, "PATCH": {"200": len(good)}}
    assert stats["writes_applied"] == len(good)


# --------------------------------------------------------------------------- --failures


async def test_failures_file_holds_failed_jobs_and_rerunning_it_runs_exactly_them(
    tmp_path: Path,
) -> None:
    jobs_file = tmp_path / "jobs.ndjson"
    failures = tmp_path / "failed.ndjson"
    late = "offer-created-later"
    append = [{"op": "add", "path": "/tags/-", "value": "once"}]
    jobs_file.write_bytes(
        ndjson(
            [
                {"id": offer_id(1), "patch": append},  # ok: must not run again
                replace_name(late, "found at last", ref={"ticket": 7}),  # 404 now
                replace_name(offer_id(2), "pinned", etag=2),  # the offer is at etag 1
            ]
        )
        + b'{"id": "x", "pacth": []}\n'
    )
    async with running(SimConfig(offers=3)) as sim:
        env = sim_env(sim)
        common = ("--endpoint", sim.endpoint, "--rate", "0")
        first = await run_cli(jobs_file, *common, "--failures", failures, env=env)
        assert first.code == 1
        kinds = {o["line"]: o["ok"] or o["error"]["kind"] for o in first.outcomes()}
        assert kinds == {1: True, 2: "http", 3: "conflict", 4: "input"}

        logged = [orjson.loads(raw) for raw in failures.read_bytes().splitlines()]
        by_line = {rec["line"]: rec for rec in logged}
        assert sorted(by_line) == [2, 3, 4]
        assert by_line[2]["id"] == late
        assert by_line[2]["ref"] == {"ticket": 7}
        assert by_line[2]["error"]["status"] == 404
        assert by_line[3]["etag"] == 2
        assert by_line[3]["error"]["kind"] == "conflict"
        assert set(by_line[4]) == {"line", "error", "raw"}
        assert by_line[4]["raw"] == '{"id": "x", "pacth": []}'
        assert by_line[4]["error"]["kind"] == "input"

        # Mend the world, not the file: the entity appears, the pinned etag comes true.
        template = offers_of(sim)[offer_id(3)]
        sim.store.put(OFFERS, {**template, "id": late, "name": "created"})
        sim.store.patch(
            OFFERS,
            offer_id(2),
            [{"op": "replace", "path": "/description", "value": "someone else"}],
            if_match=None,
            client_id="other",
            user="other@AdobeID",
        )
        before = await sim_stats(sim.base_url)
        second = await run_cli(failures, *common, env=env)
        after = await sim_stats(sim.base_url)
        final = offers_of(sim)

    assert b"Traceback" not in second.stderr
    # The re-run's lines are the failure log's (in completion order): the two failed jobs
    # run again and succeed; the line kept for a person to mend is still not a job.
    source_of = {n: rec["line"] for n, rec in enumerate(logged, start=1)}
    outcome_of = {source_of[o["line"]]: o for o in second.outcomes()}
    assert sorted(outcome_of) == [2, 3, 4]
    assert outcome_of[2]["ok"] is True
    assert outcome_of[2]["id"] == late
    assert outcome_of[2]["ref"] == {"ticket": 7}
    assert outcome_of[3]["ok"] is True
    assert outcome_of[3]["id"] == offer_id(2)
    assert outcome_of[4]["error"]["kind"] == "input"
    assert second.code == 1
    assert count(after, "PATCH", "200") - count(before, "PATCH", "200") == 2
    assert final[late]["name"] == "found at last"
    assert final[offer_id(2)]["name"] == "pinned"
    assert final[offer_id(1)]["tags"] == ["once"]  # the ok job was not sent again


# --------------------------------------------------------------------------- --dry-run


async def test_dry_run_sends_nothing_and_says_what_it_would_send() -> None:
    jobs = [
        replace_name(offer_id(1), "dry"),
        {"id": "a/b c", "patch": [{"op": "add", "path": "/tags/-", "value": "t"}], "etag": 4},
        {"id": "offerPlacement0001", "entity": "placements", "patch": PATCH_OK},
        {"id": "fb1", "type": "fallback", "patch": PATCH_OK},
    ]
    async with running(SimConfig(offers=2)) as sim:
        before = offers_of(sim)
        done = await run_cli(
            "--dry-run", "--endpoint", sim.endpoint, env=sim_env(sim), stdin=ndjson(jobs)
        )
        stats = await sim_stats(sim.base_url)
        after = offers_of(sim)
    assert done.code == 0, done.stderr.decode()
    assert stats["requests_total"] == 0
    assert stats["writes_applied"] == 0
    assert after == before
    by_line = done.by_line()
    assert sorted(by_line) == [1, 2, 3, 4]
    for o in by_line.values():
        assert o["ok"] is True
        assert o["dry_run"] is True
        assert o["method"] == "PATCH"
        assert o["attempts"] == 0
    base = sim.endpoint
    assert by_line[1]["url"] == f"{base}/offers/{offer_id(1)}?offer-type=personalized"
    assert by_line[2]["url"] == f"{base}/offers/a%2Fb%20c?offer-type=personalized"
    assert by_line[2]["if_match"] == 4
    assert "if_match" not in by_line[1]
    assert by_line[3]["url"] == f"{base}/placements/offerPlacement0001"
    assert by_line[4]["url"] == f"{base}/offers/fb1?offer-type=fallback"


# --------------------------------------------------------------------------- outputs


async def test_receipts_go_to_the_file_and_stdout_stays_empty(tmp_path: Path) -> None:
    receipts = tmp_path / "out.ndjson"
    jobs = [replace_name(offer_id(n), f"r{n}") for n in range(1, 21)]
    async with running(SimConfig(offers=20)) as sim:
        done = await run_cli(
            "-",
            "--endpoint",
            sim.endpoint,
            "--rate",
            "0",
            "--receipts",
            receipts,
            "-vv",
            env=sim_env(sim),
            stdin=ndjson(jobs),
        )
    assert done.code == 0, done.stderr.decode()
    assert done.stdout == b""
    assert b"run.summary" in done.stderr  # the logs went to stderr
    written = [orjson.loads(raw) for raw in receipts.read_bytes().splitlines()]
    assert sorted(o["line"] for o in written) == list(range(1, 21))
    assert all(o["ok"] for o in written)


async def test_stdout_carries_only_outcome_lines_even_with_debug_logs_and_faults() -> None:
    from bulkpatch.simulator import FaultRates

    faults = FaultRates(error_503=0.2, throttle_429=0.1, drop_after=0.05)
    config = SimConfig(offers=40, faults=faults, fault_seed=3, fault_retry_after_s=0)
    rows = [ndjson([replace_name(offer_id(n), f"v{n}")]) for n in range(1, 41)]
    rows.insert(10, b"{broken\n")
    rows.insert(20, ndjson([replace_name("missing", "x")]))
    async with running(config) as sim:
        done = await run_cli(
            "--endpoint",
            sim.endpoint,
            "--rate",
            "0",
            "--concurrency",
            "8",
            "-vv",
            env=sim_env(sim),
            stdin=b"".join(rows),
        )
        stats = await sim_stats(sim.base_url)
    assert stats["faults_total"] > 0
    assert done.code == 1
    assert b"job.retry" in done.stderr  # debug logs were on, and went to stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 42
    for raw in lines:
        outcome = orjson.loads(raw)
        assert isinstance(outcome, dict)
        assert {"line", "ok", "attempts", "ms"} <= set(outcome)
    assert sorted(orjson.loads(raw)["line"] for raw in lines) == list(range(1, 43))


# --------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("case", "args", "drop", "says"),
    [
        ("no credentials", (), "ADOBE_ACCESS_TOKEN", "ADOBE_ACCESS_TOKEN"),
        ("no organization", (), "ADOBE_ORG_ID", "ADOBE_ORG_ID"),
        ("unknown flag", ("--concurency", "4"), None, "unrecognized arguments"),
        ("bad value", ("--concurrency", "0"), None, "--concurrency"),
        ("no cap", ("--max-response-bytes", "0"), None, "--max-response-bytes must be a positive"),
        ("cap not a number", ("--max-response-bytes", "1MB"), None, "--max-response-bytes must be a whole"),
        ("missing input", ("no-such-file.ndjson",), None, "no-such-file.ndjson"),
        ("one file for both", ("--receipts", "o.nd", "--failures", "o.nd"), None, "different"),
        ("resume without receipts", ("--resume",), None, "--resume needs --receipts"),
        ("resume from stdin", ("-", "--receipts", "o.nd", "--resume"), None, "--resume needs INPUT"),
    ],
)
async def test_bad_usage_or_configuration_exits_2_and_sends_nothing(
    tmp_path: Path, case: str, args: tuple[str, ...], drop: str | None, says: str
) -> None:
    async with running(SimConfig(offers=3)) as sim:
        env = sim_env(sim)
        if drop is not None:
            del env[drop]
        done = await run_cli(
            *args,
            "--endpoint",
            sim.endpoint,
            env=env,
            stdin=ndjson([replace_name(offer_id(1), "never")]),
            cwd=tmp_path,
        )
        stats = await sim_stats(sim.base_url)
    assert done.code == 2, (case, done.stderr.decode())
    assert says in done.stderr.decode(), case
    assert b"Traceback" not in done.stderr
    assert done.stdout == b""
    assert stats["requests_total"] == 0


async def test_a_token_the_api_keeps_refusing_stops_the_run_with_exit_3() -> None:
    jobs = [replace_name(offer_id(n), "never") for n in range(1, 101)]
    async with running(SimConfig(offers=100)) as sim:
        done = await run_cli(
            "--endpoint",
            sim.endpoint,
            "--rate",
            "0",
            "--concurrency",
            "4",
            env=token_env("not-the-token-xyz"),
            stdin=ndjson(jobs),
        )
        stats = await sim_stats(sim.base_url)
    assert done.code == 3, done.stderr.decode()
    assert "rejected" in done.stderr.decode()
    assert "ADOBE_ACCESS_TOKEN" in done.stderr.decode()
    # It stopped at the preflight's read: no job was tried against a token that never works.
    assert stats["requests"] == {"GET": {"401": 1}}
    assert done.outcomes() == []
    for stream in (done.stdout, done.stderr):
        assert b"not-the-token-xyz" not in stream


async def test_max_failures_stops_the_run_early_with_exit_3() -> None:
    jobs = [replace_name(f"missing-{n}", "x") for n in range(1, 201)]
    async with running(SimConfig(offers=1)) as sim:
        done = await run_cli(
            "--endpoint",
            sim.endpoint,
            "--rate",
            "0",
            "--concurrency",
            "2",
            "--max-failures",
            "3",
            env=sim_env(sim),
            stdin=ndjson(jobs),
        )
        stats = await sim_stats(sim.base_url)
    assert done.code == 3, done.stderr.decode()
    assert "max-failures" in done.stderr.decode()
    outcomes = done.by_line()
    kinds = Counter(o["error"]["kind"] for o in outcomes.values())
    assert kinds["http"] >= 3
    assert set(kinds) <= {"http", "aborted"}
    # Stopped early: far fewer than 200 requests went out.
    assert count(stats, "PATCH") == kinds["http"] < 10


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_a_signal_mid_run_finishes_jobs_in_flight_and_exits_128_plus_signal(
    signum: signal.Signals, code: int
) -> None:
    jobs = [replace_name(offer_id(n), f"signalled {n}") for n in range(1, 201)]
    async with running(SimConfig(offers=200, latency_ms=200)) as sim:
        before = offers_of(sim)
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "run",
            "--endpoint",
            sim.endpoint,
            "--rate",
            "0",
            "--concurrency",
            "8",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=sim_env(sim),
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(ndjson(jobs))
        await proc.stdin.drain()
        proc.stdin.close()
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), WAIT_S)
            assert first, "no outcome before the end of output"
            proc.send_signal(signum)
            rest, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        stats = await sim_stats(sim.base_url)
        after = offers_of(sim)

    assert proc.returncode == code, err.decode()
    assert b"Traceback" not in err
    done = Finished(code, first + rest, err)
    outcomes = done.by_line()  # every line is JSON, none reported twice
    kinds = Counter(o["ok"] or o["error"]["kind"] for o in outcomes.values())
    assert set(kinds) <= {True, "aborted"}, kinds
    assert kinds[True] >= 1
    assert kinds["aborted"] >= 1  # the run did stop early
    assert stats["writes_applied"] < len(jobs)
    # Jobs in flight were finished and reported: what changed is exactly what says ok.
    changed = {oid for oid in before if after[oid]["name"] != before[oid]["name"]}
    reported_ok = {o["id"] for o in outcomes.values() if o["ok"] is True}
    assert changed == reported_ok


async def test_python_dash_m_bulkpatch_is_the_command_line() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bulkpatch",
        "--version",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 0, err.decode()
    assert out.startswith(b"bulkpatch ")


async def test_ctrl_c_ends_a_run_whose_stdin_stays_open() -> None:
    # `producer | bulkpatch run -` (or typing jobs at a terminal): the jobs sent so far
    # are done, the pipe is still open, the user presses Ctrl-C. README: a signal stops
    # reading; lines not yet read get no outcome.
    async with running(SimConfig(offers=5)) as sim:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "run",
            "--endpoint",
            sim.endpoint,
            "--rate",
            "0",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=sim_env(sim),
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        exited = False
        try:
            proc.stdin.write(ndjson([replace_name(offer_id(n), "x") for n in range(1, 6)]))
            await proc.stdin.drain()
            for _ in range(5):
                assert await asyncio.wait_for(proc.stdout.readline(), WAIT_S)
            proc.send_signal(signal.SIGINT)
            # Nothing is in flight: a prompt exit is a second at most; allow eight.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 8)
                exited = True
        finally:
            proc.stdin.close()
            if proc.returncode is None:
                proc.kill()
            await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert exited, "still running 8 s after SIGINT, waiting for its stdin to close"
    assert proc.returncode == 130


async def test_a_closed_stdout_stops_the_run_quietly(tmp_path: Path) -> None:
    # The CLI means to "stop quietly, as Unix tools do" when the reader of stdout goes.
    err = tmp_path / "stderr.txt"
    jobs = tmp_path / "jobs.ndjson"
    jobs.write_bytes(ndjson(replace_name(offer_id(n), f"v{n}") for n in range(1, 2001)))
    async with running(SimConfig(offers=2000)) as sim:
        command = " ".join(
            [
                *CLI,
                "run",
                str(jobs),
                "--endpoint",
                sim.endpoint,
                "--rate",
                "0",
                f"2>{err}",
                "| head -n 1",
                '; echo "status=${PIPESTATUS[0]}" >&2',
            ]
        )
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=sim_env(sim),
        )
        out, status = await asyncio.wait_for(proc.communicate(), WAIT_S)
        stats = await sim_stats(sim.base_url)
    assert len(out.splitlines()) == 1
    assert orjson.loads(out)["ok"] is True
    assert stats["writes_applied"] < 2000  # it stopped once nobody read its outcomes
    assert status.strip() in (b"status=1", b"status=141"), status
    stderr = read_text(err)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "Exception ignored" not in stderr, stderr[-3000:]
