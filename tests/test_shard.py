"""--shard K/N: N processes, one simulator, every job exactly once, the same end state."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from bulkpatch.admission import shard_of
from bulkpatch.demo import chaos_jobs, differences, expected_state
from bulkpatch.simulator import RunningSimulator, SimConfig, running

SHARDS = 4


def env_for(sim: RunningSimulator) -> dict[str, str]:
    return {
        **os.environ,
        "ADOBE_ACCESS_TOKEN": sim.config.access_token,
        "ADOBE_API_KEY": "shard-test",
        "ADOBE_ORG_ID": "SHARD@AdobeOrg",
        "ADOBE_SANDBOX_NAME": "prod",
    }


async def run_shards(
    sim: RunningSimulator, jobs_file: Path, out_dir: Path, shards: int
) -> list[dict[str, Any]]:
    """Run every shard as its own process at once; all their outcome lines."""
    procs = []
    for index in range(shards):
        out = out_dir / f"out-{index}.ndjson"
        shard = [] if shards == 1 else ["--shard", f"{index}/{shards}"]
        command = [
            sys.executable, "-m", "bulkpatch.cli", "run", str(jobs_file),
            "--endpoint", sim.endpoint, "--rate", "0", "--concurrency", "8",
            "--receipts", str(out), "-q", *shard,
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *command, env=env_for(sim), stdin=asyncio.subprocess.DEVNULL
        )
        procs.append((out, proc))
    codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for _, p in procs)), 60)
    # The bad line is shard 0's alone to report: its run has a failed item, the others not.
    assert codes == [1] + [0] * (shards - 1)
    return [orjson.loads(line) for out, _ in procs for line in out.read_bytes().splitlines()]


def test_shards_split_by_entity_and_are_stable() -> None:
    keys = [("offers", "personalized", f"personalizedOffer{n:06d}") for n in range(4000)]
    slices = [shard_of(key, SHARDS) for key in keys]
    assert slices == [shard_of(key, SHARDS) for key in keys]  # the same on every call
    counts = [slices.count(k) for k in range(SHARDS)]
    assert min(counts) > 800  # roughly even: 1,000 each
    # The documented formula, so another tool can compute the same split.
    digest = hashlib.blake2b(b"offers\x1fpersonalized\x1fpersonalizedOffer000001", digest_size=8)
    expected = int.from_bytes(digest.digest(), "big") % 7
    assert shard_of(("offers", "personalized", "personalizedOffer000001"), 7) == expected


async def test_four_shards_run_every_job_once_and_end_like_one_process(tmp_path: Path) -> None:
    config = SimConfig(offers=120, fault_seed=3)
    async with running(config) as sim:
        initial = {d["id"]: d for d in sim.store.dump()["offers/personalized"]}
    jobs = chaos_jobs(initial, 1200, seed=21)
    lines = [orjson.dumps(job) for job in jobs]
    lines.insert(600, b'{"id": "broken", "pacth": []}')  # one bad line, for shard 0 alone
    jobs_file = tmp_path / "jobs.ndjson"
    jobs_file.write_bytes(b"\n".join(lines) + b"\n")

    finals = []
    for shards in (SHARDS, 1):
        async with running(config) as sim:
            # A directory per run: a finished run's receipts are not written over.
            out_dir = tmp_path / f"{shards}-shards"
            out_dir.mkdir()
            outcomes = await run_shards(sim, jobs_file, out_dir, shards)
            finals.append({d["id"]: d for d in sim.store.dump()["offers/personalized"]})
        numbers = sorted(o["line"] for o in outcomes)
        assert numbers == list(range(1, len(lines) + 1)), f"{shards} shard(s)"
        bad = [o for o in outcomes if not o["ok"]]
        assert [(o["line"], o["error"]["kind"]) for o in bad] == [(601, "input")]
    sharded, single = finals
    assert differences(expected_state(initial, jobs), sharded) == []
    assert differences(single, sharded) == []
