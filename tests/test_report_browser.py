"""The report page in a real browser: nothing wider than the window at 1280 and 800 px.

Headless Chromium loads a copy of each page with a script appended that measures the
page and every card, table, figure and section and writes what it found into the DOM;
``--dump-dom`` prints that DOM. Skipped where no Chromium is installed.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

pytest.importorskip("matplotlib")  # the optional extra bulkpatch[report]

from bulkpatch import chaos, report
from bulkpatch.demo import chaos_jobs
from bulkpatch.simulator import FaultRates, running
from tests.test_report import write_ndjson
from tests.test_report_runs import sidecar


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


CHROMIUM: Final = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed")

WIDTHS: Final = (1280, 800)
# Longest run id there can be (runid.check_id), and a long input path: the cells most
# likely to push a table past the window.
LONG_RUN: Final = "spring-repricing-" + "0123456789abcdef" * 6 + "-shard-of-many"[:15]
LONG_INPUT: Final = "/mnt/migrations/2026_spring_repricing/offers_" + "eu_west_and_emea_" * 6 + "all.ndjson"

MEASURE: Final = """<script>
(() => {
  const limit = window.innerWidth, bad = [];
  const page = document.documentElement.scrollWidth;
  if (page > limit) bad.push(`page ${page} > ${limit}`);
  const boxes = document.querySelectorAll(".card, table, figure, section");
  for (const box of boxes) {
    const right = box.getBoundingClientRect().right;
    if (box.scrollWidth > box.clientWidth || right > limit + 0.5) {
      const name = box.id || box.dataset.figure || box.className || box.tagName;
      bad.push(`${name}: scrollWidth ${box.scrollWidth}, clientWidth ${box.clientWidth}, right ${right}`);
    }
  }
  document.body.dataset.measured = JSON.stringify({limit, boxes: boxes.length, bad});
})();
</script>"""


@pytest.fixture(scope="module")
def throttled_outcomes() -> list[dict[str, Any]]:
    """A run the simulator throttled: unpaced workers against 200 requests a second."""

    async def run() -> list[dict[str, Any]]:
        config = chaos.sim_config(faults=FaultRates(), offers=40, rate_limit=200, burst=5)
        async with running(config) as sim:
            jobs = chaos_jobs(chaos.initial_offers(sim), 150)
            jobs[7] = {"id": "personalizedOffer" + "9" * 120, "patch": [{"op": "add", "path": "/x", "value": 1}]}
            outcomes, _ = await chaos.run_in_process(sim, jobs, concurrency=16)
        return [o.to_dict() for o in outcomes]

    outcomes = asyncio.run(run())
    assert sum(o.get("throttled", 0) for o in outcomes) > 0
    return outcomes


def page_of(directory: Path, runs: dict[str, list[dict[str, Any]]]) -> Path:
    """The report of ``runs`` (run id -> its outcome lines), one file and sidecar each."""
    directory.mkdir()
    files = []
    for n, (run, outcomes) in enumerate(runs.items()):
        path = write_ndjson(
            directory / f"outcomes_2026_spring_repricing_eu_west_and_emea_shard_{n:02}_of_16.ndjson",
            [{**o, "run": run} for o in outcomes],
        )
        sidecar(path, run, input=LONG_INPUT)
        files.append(str(path))
    out = directory / "report.html"
    report.write_report(files, out)
    return out


def measure(page: Path, width: int, tmp_path: Path) -> dict[str, Any]:
    """What the appended script found in ``page`` in a window ``width`` px wide."""
    copy = tmp_path / f"{page.parent.name}-{width}.html"
    copy.write_text(page.read_text("utf-8").replace("</body>", MEASURE + "</body>"), "utf-8")
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},1000",
            "--virtual-time-budget=2000", "--dump-dom", copy.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )
    found = re.search(rb'data-measured="([^"]*)"', done.stdout)
    assert found, done.stderr.decode(errors="replace")[-2000:]
    result: dict[str, Any] = orjson.loads(html.unescape(found.group(1).decode()))
    return result


def test_nothing_overflows_a_throttled_run_or_a_three_run_merge(
    throttled_outcomes: list[dict[str, Any]], tmp_path: Path
) -> None:
    single = page_of(tmp_path / "throttled", {"20261123T100405Z-5f1e2a9c": throttled_outcomes})
    thirds = len(throttled_outcomes) // 3
    merged = page_of(
        tmp_path / "three",
        {
            "20261123T100405Z-5f1e2a9c": throttled_outcomes[:thirds],
            LONG_RUN: throttled_outcomes[thirds : 2 * thirds],
            "20261125T080000Z-0c0ffee0": throttled_outcomes[2 * thirds :],
        },
    )
    assert merged.read_text("utf-8").count('<section class="run"') == 3
    for page in (single, merged):
        for width in WIDTHS:
            found = measure(page, width, tmp_path)
            assert found["limit"] == width
            assert found["boxes"] >= 14  # the cards, tables, plots and sections were there
            assert found["bad"] == [], f"{page.parent.name} at {width} px"
