"""The end-of-run summary: percentiles from a bounded histogram, figures that match the outcomes."""

from __future__ import annotations

import math
import random
from pathlib import Path

import orjson
import pytest

from bulkpatch.simulator import FaultRates, SimConfig, running
from bulkpatch.summary import LatencyHistogram
from tests.test_run_cli import ndjson, replace_name, run_cli, sim_env


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_are_within_one_percent_of_the_exact_ones(seed: int) -> None:
    rng = random.Random(seed)
    samples = [rng.lognormvariate(3, 1.2) for _ in range(5000)]
    histogram = LatencyHistogram()
    for ms in samples:
        histogram.add(ms)
    ordered = sorted(samples)
    for p in (50, 90, 99):
        exact = ordered[math.ceil(len(ordered) * p / 100) - 1]
        # Within 1 % of the exact value, plus the rounding to 0.1 ms.
        got = histogram.percentile(p)
        assert got is not None
        assert abs(got - exact) <= 0.0101 * exact + 0.05, (p, got, exact)
    assert histogram.as_dict()["max"] == round(max(samples), 1)


def test_an_empty_run_has_no_percentiles() -> None:
    assert LatencyHistogram().as_dict() == {"p50": None, "p90": None, "p99": None, "max": None}


async def test_summary_file_and_stderr_agree_with_the_outcome_lines(tmp_path: Path) -> None:
    jobs = [replace_name(f"personalizedOffer{n % 60 + 1:06d}", f"v{n}") for n in range(200)]
    jobs.append(replace_name("no-such-offer", "x"))
    summary_path = tmp_path / "summary.json"
    config = SimConfig(
        offers=60,
        fault_seed=4,
        faults=FaultRates(error_503=0.05, throttle_429=0.05),
        fault_retry_after_s=0,
    )
    async with running(config) as sim:
        done = await run_cli(
            "-", "--endpoint", sim.endpoint, "--rate", "0", "--summary", str(summary_path),
            stdin=ndjson(jobs), env=sim_env(sim),
        )  # fmt: skip
    outcomes = [orjson.loads(line) for line in done.stdout.splitlines()]
    summary = orjson.loads(summary_path.read_bytes())
    assert summary["jobs"] == len(outcomes) == 201
    assert summary["outcomes"] == {"ok": 200, "http": 1}
    assert summary["throttled"] == sum(o.get("throttled", 0) for o in outcomes) > 0
    assert summary["retries"] > 0
    assert summary["statuses"]["404"] == 1
    latencies = sorted(o["ms"] for o in outcomes)
    assert summary["latency_ms"]["max"] == pytest.approx(latencies[-1], abs=0.11)
    exact_p50 = latencies[math.ceil(len(latencies) / 2) - 1]
    assert abs(summary["latency_ms"]["p50"] - exact_p50) <= 0.0101 * exact_p50 + 0.1
    stderr = done.stderr.decode()
    assert "201 jobs in" in stderr
    assert "ok 200, http 1" in stderr
