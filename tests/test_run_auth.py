"""Credentials through the command line: IMS client credentials, renewal, and secrecy.

``bulkpatch run`` is a process given ADOBE_CLIENT_ID / ADOBE_CLIENT_SECRET / ADOBE_IMS_URL
(or ADOBE_ACCESS_TOKEN); the simulator serves IMS and the API in-process, and its
``/_sim/stats`` counts the tokens it issued and the 401s it answered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bulkpatch.simulator import FaultRates, RunningSimulator, SimConfig, offer_id, running
from tests.test_run_cli import (
    clean_env,
    count,
    ndjson,
    offers_of,
    replace_name,
    run_cli,
    sim_stats,
)

# Every token the simulator's IMS issues starts with this.
IMS_TOKEN_PREFIX = b"sim-ims-"


def ims_env(sim: RunningSimulator, *, secret: str | None = None) -> dict[str, str]:
    return clean_env(
        ADOBE_CLIENT_ID=sim.config.client_id,
        ADOBE_CLIENT_SECRET=sim.config.client_secret if secret is None else secret,
        ADOBE_IMS_URL=sim.ims_url,
        ADOBE_ORG_ID="AUTH000@AdobeOrg",
        ADOBE_SANDBOX_NAME="prod",
    )


def unauthorized(stats: dict[str, Any]) -> int:
    return count(stats, "PATCH", "401") + count(stats, "GET", "401")


def files_under(root: Path) -> list[bytes]:
    """The bytes of every file the run wrote (receipts, failures, the journal)."""
    return [p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()]


async def test_an_expired_token_is_renewed_once_for_all_the_workers_it_fails() -> None:
    # Latency keeps many requests in flight, so when a token expires several workers
    # are refused with it at once; they must share one renewal.
    config = SimConfig(
        offers=240, fault_seed=12, faults=FaultRates(token_expiry=0.04), latency_ms=15
    )
    async with running(config) as sim:
        jobs = [replace_name(offer_id(n), f"renewed {n}") for n in range(1, 241)]
        done = await run_cli(
            "--endpoint",
            sim.endpoint,
            "--rate",
            "0",
            "--concurrency",
            "16",
            env=ims_env(sim),
            stdin=ndjson(jobs),
        )
        stats = await sim_stats(sim.base_url)
        final = offers_of(sim)
    assert done.code == 0, done.stderr.decode()[-2000:]
    assert all(o["ok"] for o in done.outcomes())
    assert all(final[offer_id(n)]["name"] == f"renewed {n}" for n in range(1, 241))
    expiries = stats["faults"].get("token_expiry", 0)
    assert expiries >= 1
    # Many refusals (every worker in flight with the expired token) ...
    assert unauthorized(stats) > expiries
    # ... but one new token per expiry, plus the first: not one per refused worker.
    assert 2 <= stats["tokens_issued"] <= expiries + 1


async def test_a_short_lived_token_is_renewed_before_it_expires() -> None:
    # Tokens live 2 s; 100 jobs, 4 at a time, 100 ms each: the run lasts 2.5 s or more.
    config = SimConfig(offers=100, token_ttl_s=2.0, latency_ms=100)
    async with running(config) as sim:
        jobs = [replace_name(offer_id(n), f"fresh {n}") for n in range(1, 101)]
        done = await run_cli(
            "--endpoint",
            sim.endpoint,
            "--rate",
            "0",
            "--concurrency",
            "4",
            env=ims_env(sim),
            stdin=ndjson(jobs),
        )
        stats = await sim_stats(sim.base_url)
    assert done.code == 0, done.stderr.decode()[-2000:]
    assert all(o["ok"] for o in done.outcomes())
    # The run outlived its first token, yet nothing was refused: each token was
    # replaced before the simulator would have refused it.
    assert stats["tokens_issued"] >= 2
    assert unauthorized(stats) == 0


async def test_a_wrong_client_secret_exits_3_with_a_clear_message_and_never_shows_it(
    tmp_path: Path,
) -> None:
    secret = "WRONG-secret-1f6e0c9a"
    receipts = tmp_path / "out.ndjson"
    failures = tmp_path / "failed.ndjson"
    async with running(SimConfig(offers=10)) as sim:
        jobs = [replace_name(offer_id(n), "never") for n in range(1, 11)]
        done = await run_cli(
            "--endpoint",
            sim.endpoint,
            "--rate",
            "0",
            "--receipts",
            receipts,
            "--failures",
            failures,
            "-vv",
            env=ims_env(sim, secret=secret),
            stdin=ndjson(jobs),
        )
        stats = await sim_stats(sim.base_url)
    # README, exit status: 3 = stopped early on a systemic failure (credentials rejected).
    assert done.code == 3, done.stderr.decode()
    stderr = done.stderr.decode()
    assert "IMS refused the client credentials" in stderr
    assert "client_secret" in stderr  # IMS's own reason: which credential is wrong
    assert b"Traceback" not in done.stderr
    assert count(stats, "PATCH") == 0
    assert stats["writes_applied"] == 0
    written = files_under(tmp_path)
    assert written  # receipts and failures were written
    for blob in (done.stdout, done.stderr, *written):
        assert secret.encode() not in blob


@pytest.mark.parametrize("mode", ["client credentials", "access token"])
async def test_no_secret_appears_in_any_output_even_with_debug_logs_and_faults(
    tmp_path: Path, mode: str
) -> None:
    # A static token refused (401) stops the run at that answer: token expiry is a fault
    # for IMS-issued tokens only here.
    expiry = 0.02 if mode == "client credentials" else 0.0
    faults = FaultRates(
        error_503=0.1, throttle_429=0.05, drop_after=0.05, token_expiry=expiry, concurrent_writer=0.1
    )
    config = SimConfig(offers=60, fault_seed=21, faults=faults, fault_retry_after_s=0)
    receipts = tmp_path / "out.ndjson"
    failures = tmp_path / "failed.ndjson"
    async with running(config) as sim:
        jobs = [
            {"id": offer_id(n), "patch": [{"op": "add", "path": "/tags/-", "value": str(n)}]}
            for n in range(1, 61)
        ] + [replace_name("no-such-offer", "x")]
        if mode == "access token":
            env = clean_env(
                ADOBE_ACCESS_TOKEN=sim.config.access_token,
                ADOBE_API_KEY="auth-tests",
                ADOBE_ORG_ID="AUTH000@AdobeOrg",
                ADOBE_SANDBOX_NAME="prod",
            )
        else:
            env = ims_env(sim)
        done = await run_cli(
            "--endpoint",
            sim.endpoint,
            "--rate",
            "0",
            "--concurrency",
            "8",
            "--timeout",
            "5",
            "--receipts",
            receipts,
            "--failures",
            failures,
            "-vv",
            "--log-format",
            "json",
            env=env,
            stdin=ndjson(jobs),
        )
        stats = await sim_stats(sim.base_url)
    assert done.code == 1, done.stderr.decode()[-2000:]  # the one 404
    assert stats["faults_total"] > 0
    assert b"job.retry" in done.stderr  # debug events were written
    written = files_under(tmp_path)
    assert len(written) >= 2
    secrets = [sim.config.access_token.encode(), sim.config.client_secret.encode()]
    for blob in (done.stdout, done.stderr, *written):
        for secret in secrets:
            assert secret not in blob
        assert IMS_TOKEN_PREFIX not in blob  # no token IMS issued, either


async def test_a_refused_client_secret_is_sent_to_ims_once_not_once_per_worker() -> None:
    # README (Auth): the token is "fetched once ... by one worker while the others wait".
    # IMS's 401 invalid_client is final (it is not retried), so one refusal is enough to
    # stop; a burst of refused logins, one per worker, is what trips an IdP's lockout.
    async with running(SimConfig(offers=50)) as sim:
        jobs = [replace_name(offer_id(n), "never") for n in range(1, 51)]
        done = await run_cli(
            "--endpoint",
            sim.endpoint,
            "--rate",
            "0",
            "--concurrency",
            "16",
            env=ims_env(sim, secret="WRONG-secret-2b7d"),
            stdin=ndjson(jobs),
        )
        stats = await sim_stats(sim.base_url)
    assert done.code == 3
    assert count(stats, "POST", "401") == 1
