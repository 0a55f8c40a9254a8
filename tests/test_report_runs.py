"""``bulkpatch report`` over several files: one run merges, runs stay apart, no failure hides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("matplotlib")  # the optional extra bulkpatch[report]

from bulkpatch import report
from tests.test_report import RUN, _outcome, failure_rows, headline, write_ndjson

RUN_A = "20261123T100000Z-aaaaaaaa"
RUN_B = "20261124T090000Z-bbbbbbbb"
RUN_C = "nightly-2026-11-25"


def sidecar(outcomes: Path, run: str, **facts: Any) -> None:
    """The ``<receipts>.run.json`` a run writes beside its outcome file."""
    record = {
        "run": run,
        "command": "run",
        "started": "2026-11-23T10:00:00Z",
        "input": "jobs.ndjson",
        "endpoint": "https://platform.adobe.io/data/core/dps",
        "dialect": "dps",
        "org": "ABC123@AdobeOrg",
        "sandbox": "prod",
        "container": None,
        "settings": {"rate": 20.0, "shard": None, "concurrency": 8},
    }
    record.update(facts)
    outcomes.with_name(outcomes.name + ".run.json").write_bytes(orjson.dumps(record))


def sections(page: str) -> dict[str, str]:
    """Each run's section of the page, by its ``data-run``."""
    found = re.findall(r'<section class="run" id="run-\d+" data-run="([^"]*)">', page)
    parts = re.split(r'<section class="run" id="run-\d+" data-run="[^"]*">', page)[1:]
    return dict(zip(found, parts, strict=True))


def failed_lines(part: str, table_id: str) -> dict[tuple[str, str], int]:
    """(kind, status) -> count, from a failures table."""
    return {(r[0], r[1]): int(r[3].replace(",", "")) for r in failure_rows(part, table_id)}


def test_three_runs_are_three_sections_and_every_failure_stays(tmp_path: Path) -> None:
    # Three runs over the same 200 lines. Run A failed 18 of them; B and C, later, were
    # ok on those lines: merged by line number alone, A's failures would vanish.
    a = write_ndjson(
        tmp_path / "a.ndjson",
        [_outcome(n, ok=n % 11 != 0, run=RUN_A) for n in range(1, 201)],
    )
    sidecar(a, RUN_A, sandbox="spring-prices")
    not_found = {"kind": "http", "status": 404, "message": "no entity with id 'x'"}
    b = write_ndjson(
        tmp_path / "b.ndjson",
        [_outcome(n, run=RUN_B) for n in range(1, 199)]
        + [_outcome(n, ok=False, run=RUN_B, error=not_found) for n in (199, 200)],
    )
    sidecar(b, RUN_B, started="2026-11-24T09:00:00Z", sandbox="autumn")
    c = write_ndjson(tmp_path / "c.ndjson", [_outcome(n, run=RUN_C) for n in range(1, 201)])
    out = tmp_path / "report.html"

    totals = report.write_report([str(a), str(b), str(c)], out)

    page = out.read_text(encoding="utf-8")
    figures = headline(page[: page.index("</table>")])  # the totals at the top
    assert (figures["runs"], figures["jobs"], figures["ok"], figures["failed"]) == (
        "3", "600", "580", "20",
    )
    assert [(r.run, r.jobs, r.failed) for r in totals.runs] == [
        (RUN_A, 200, 18), (RUN_B, 200, 2), (RUN_C, 200, 0),
    ]
    # The table of runs adds up to the totals, and names each run's files.
    runs_table = page[page.index('<table id="runs">') : page.index("</table>")]
    assert sum(map(int, re.findall(r'data-failed="(\d+)"', runs_table))) == 20
    assert [f.name for f in (a, b, c) if str(f) in runs_table] == ["a.ndjson", "b.ndjson", "c.ndjson"]

    parts = sections(page)
    assert list(parts) == [RUN_A, RUN_B, RUN_C]
    assert headline(parts[RUN_A])["failed"] == "18"
    assert failed_lines(parts[RUN_A], "run-1-failures") == {("exhausted", ""): 18}
    assert "11, 22, 33, 44, 55" in parts[RUN_A]  # its first failed lines
    assert failed_lines(parts[RUN_B], "run-2-failures") == {("http", "404"): 2}
    assert "No failures." in parts[RUN_C]
    # Each run's sidecar facts are in its own section.
    assert "spring-prices" in parts[RUN_A]
    assert "autumn" in parts[RUN_B]
    assert "spring-prices" not in parts[RUN_B]
    assert "https://platform.adobe.io/data/core/dps" not in parts[RUN_C]


def test_one_run_over_shards_and_a_resume_is_one_section_the_latest_line_winning(
    tmp_path: Path,
) -> None:
    # Shard 0 of a run failed line 3, then was resumed (appending to its file) and line 3
    # went through; shard 1 failed line 4 for good.
    shard0 = write_ndjson(
        tmp_path / "shard-0.ndjson",
        [_outcome(1), _outcome(3, ok=False), _outcome(5), _outcome(3, at="2026-11-23T10:05:00.000Z")],
    )
    shard1 = write_ndjson(tmp_path / "shard-1.ndjson", [_outcome(2), _outcome(4, ok=False)])
    sidecar(shard0, RUN, settings={"rate": 20.0, "shard": "0/2"})
    sidecar(shard1, RUN, started="2026-11-23T09:59:58Z", settings={"rate": 20.0, "shard": "1/2"})
    out = tmp_path / "report.html"

    totals = report.write_report([str(shard0), str(shard1)], out)

    page = out.read_text(encoding="utf-8")
    assert [r.run for r in totals.runs] == [RUN]
    assert sections(page) == {}  # one run fills the page
    assert f"run <code>{RUN}</code>" in page
    figures = headline(page)
    assert (figures["jobs"], figures["ok"], figures["failed"]) == ("5", "4", "1")
    assert [r[4] for r in failure_rows(page)] == ["4"]
    assert "1 superseded by a later line" in page
    facts = dict(re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>", page))
    assert '<span class="setting">shard=0/2, 1/2</span>' in page
    assert facts["started"] == "2026-11-23T09:59:58Z"  # the earliest shard's start
    assert facts["sandbox"] == "prod"


def test_a_file_without_run_ids_is_a_run_of_its_own(tmp_path: Path) -> None:
    # Lines from before runs had ids, read before a run that was ok on the same lines.
    legacy = write_ndjson(
        tmp_path / "legacy.ndjson",
        [_outcome(1, run=None), _outcome(2, ok=False, run=None), _outcome(3, run=None)],
    )
    current = write_ndjson(tmp_path / "current.ndjson", [_outcome(n) for n in (1, 2, 3)])
    out = tmp_path / "report.html"

    report.write_report([str(legacy), str(current)], out)

    page = out.read_text(encoding="utf-8")
    parts = sections(page)
    assert list(parts) == [f"{legacy} (lines without a run id)", RUN]
    legacy_part = parts[f"{legacy} (lines without a run id)"]
    assert failed_lines(legacy_part, "run-1-failures") == {("exhausted", ""): 1}
    figures = headline(page[: page.index("</table>")])
    assert (figures["jobs"], figures["failed"]) == ("6", "1")


def test_a_rerun_under_the_same_run_id_answers_for_the_lines_it_came_from(tmp_path: Path) -> None:
    # BULKPATCH_RUN_ID left exported: the failure log's re-run is numbered 1.. of the
    # failure file, and says which line of the run each job came from.
    first = write_ndjson(
        tmp_path / "out.ndjson", [_outcome(n, ok=n != 3) for n in range(1, 5)]
    )
    rerun = write_ndjson(tmp_path / "retried.ndjson", [_outcome(1, source_line=3)])
    out = tmp_path / "report.html"

    totals = report.write_report([str(first), str(rerun)], out)

    assert [(r.jobs, r.ok, r.failed) for r in totals.runs] == [(4, 4, 0)]
    page = out.read_text(encoding="utf-8")
    assert "No failures." in page


def test_too_many_runs_is_refused_naming_the_line(tmp_path: Path) -> None:
    many = write_ndjson(
        tmp_path / "many.ndjson",
        [_outcome(1, run=f"run-{n}") for n in range(report.MAX_RUNS + 1)],
    )
    with pytest.raises(report.ReportError) as caught:
        report.write_report([str(many)], tmp_path / "r.html")
    assert caught.value.event == "report.too_many_runs"
    assert str(caught.value) == (
        f"{many}, line {report.MAX_RUNS + 1}, field 'run': more than {report.MAX_RUNS} runs "
        "in the input; report fewer files at once"
    )
    assert not (tmp_path / "r.html").exists()
