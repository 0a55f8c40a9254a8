"""``bulkpatch report``: a self-contained page whose figures match the outcome lines."""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

pytest.importorskip("matplotlib")  # the optional extra bulkpatch[report]

from bulkpatch import chaos, report
from bulkpatch.cli import run_command
from bulkpatch.cli.report import add_report
from bulkpatch.demo import chaos_jobs
from bulkpatch.errors import ConfigError
from bulkpatch.simulator import FaultRates, running

MISSING_EVERY = 25  # one job in 25 names an offer that does not exist: a 404


def write_ndjson(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records))
    return path


def headline(page: str) -> dict[str, str]:
    cards = re.findall(r'data-figure="([^"]+)"><div class="v">([^<]*)</div>', page)
    return dict(cards)


def times(page: str) -> dict[str, str]:
    """The cells of the first table of times: ``{"ms p50": "12.0 ms", ...}``."""
    table = page[page.index('<table class="latency">') :]
    table = table[: table.index("</table>")]
    return dict(re.findall(r'data-figure="([^"]+)">([^<]*)</td>', table))


def failure_rows(page: str, table_id: str = "failures") -> list[list[str]]:
    table = page[page.index(f'id="{table_id}">') :]
    table = table[: table.index("</table>")]
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        rows.append([re.sub(r"<br>.*", "", c, flags=re.S) for c in cells])
    return rows


def assert_self_contained(page: str) -> None:
    # Nothing the browser would fetch: no remote src/href, no script, no stylesheet link,
    # no remote CSS url(); the SVG's own references are fragment ids.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert set(re.findall(r"url\((.)", page)) <= {"#"}  # clip paths: fragment ids
    assert "@import" not in page
    assert set(re.findall(r'xlink:href="(.)', page)) <= {"#"}
    # matplotlib's metadata names namespaces by URL; the page carries none at all.
    assert "http://" not in page
    assert "https://" not in page


@pytest.fixture(scope="module")
def engine_outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """A real run: the engine against the simulator, with 503s and 429s to retry and
    jobs on unknown ids that fail for good with a 404."""

    async def run() -> list[dict[str, Any]]:
        faults = FaultRates(error_503=0.08, throttle_429=0.08)
        async with running(chaos.sim_config(faults=faults, offers=40)) as sim:
            jobs = chaos_jobs(chaos.initial_offers(sim), 400)
            for n in range(0, len(jobs), MISSING_EVERY):
                jobs[n] = {"id": f"missing-{n}", "patch": [{"op": "add", "path": "/x", "value": 1}]}
            jobs.append({"id": "no-patch-member"})  # an input error
            outcomes, _ = await chaos.run_in_process(sim, jobs, concurrency=16)
        return [o.to_dict() for o in outcomes]

    return asyncio.run(run())


def test_page_is_self_contained_with_four_plots_and_matching_figures(
    engine_outcomes: list[dict[str, Any]], tmp_path: Path
) -> None:
    outcomes = engine_outcomes
    source = write_ndjson(tmp_path / "out.ndjson", outcomes)
    html_path = tmp_path / "report.html"
    report.write_report([str(source)], html_path)  # raises when no page is written
    page = html_path.read_text(encoding="utf-8")

    assert_self_contained(page)
    assert page.count("<svg") == 4
    for key, title in report.PLOT_TITLES.items():
        figure = page[page.index(f'<figure id="plot-{key}">') :]
        figure = figure[: figure.index("</figure>")]
        assert f"<h2>{title}</h2>" in figure
        assert f"<title>{title}</title>" in figure
        assert figure.count("<svg") == 1

    # The run met throttling and retries, so the second plot has something to show.
    throttled = sum(o.get("throttled", 0) for o in outcomes)
    retries = sum(max(o["attempts"] - 1, 0) for o in outcomes)
    assert throttled > 0
    assert retries > 0

    ok = sum(1 for o in outcomes if o["ok"])
    figures = headline(page)
    assert figures["jobs"] == f"{len(outcomes):,}"
    assert figures["ok"] == f"{ok:,}"
    assert figures["failed"] == f"{len(outcomes) - ok:,}"
    assert figures["429s"] == f"{throttled:,}"
    assert figures["retries"] == f"{retries:,}"
    # The three times of the outcome lines, by their names there: p50 is the middle job's
    # (the lowest value with at least half the jobs at or below it).
    sent = [o for o in outcomes if o["attempts"] > 0]
    for name in ("ms", "server_ms", "wait_ms"):
        ordered = sorted(o[name] for o in sent)
        middle = ordered[math.ceil(len(ordered) / 2) - 1]
        assert times(page)[f"{name} p50"] == f"{middle:,.1f} ms"

    missing = [o for o in outcomes if str(o.get("id", "")).startswith("missing-")]
    assert missing
    assert all(o["error"]["status"] == 404 for o in missing)
    rows = failure_rows(page)
    counts = [int(r[3].replace(",", "")) for r in rows]
    assert counts == sorted(counts, reverse=True)  # most frequent first
    assert sum(counts) == len(outcomes) - ok
    not_found = [r for r in rows if r[0] == "http" and r[1] == "404"]
    assert sum(int(r[3]) for r in not_found) == len(missing)
    top = not_found[0]
    assert "no entity with id" in top[2]
    lines = [int(n) for n in top[4].split(", ")]
    assert 1 <= len(lines) <= report.EXAMPLE_LINES
    assert set(lines) <= {o["line"] for o in missing}
    assert any(r[0] == "input" and "field &#x27;patch&#x27;" in r[2] for r in rows)


RUN = "20261123T100000Z-5f1e2a9c"


def _outcome(
    line: int,
    *,
    ok: bool = True,
    at: str = "2026-11-23T10:00:00.100Z",
    run: str | None = RUN,
    **extra: Any,
) -> dict[str, Any]:
    """An outcome line of run ``run`` (None: a line without one)."""
    record: dict[str, Any] = {
        "line": line,
        "id": f"o{line}",
        "ok": ok,
        "attempts": 1,
        "ms": 10.0 * line,
        "at": at,
    }
    if not ok:
        record["error"] = {
            "kind": "exhausted",
            "message": "gave up after 8 attempts; last: HTTP 503: busy",
        }
        record["attempts"] = 8
        record["throttled"] = 2
    if run is not None:
        record["run"] = run
    record.update(extra)
    return record


def test_shards_and_resumed_files_merge_last_line_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two shards of one run (odd and even lines); line 3 failed in the first run and
    # succeeded when the run was resumed, appending to the shard's file. The resumed
    # shard also ends in a line torn by a kill.
    shard_a = write_ndjson(
        tmp_path / "a.ndjson",
        [
            _outcome(1),
            _outcome(3, ok=False),
            _outcome(5),
            _outcome(3, at="2026-11-23T10:00:02.500Z"),
        ],
    )
    with shard_a.open("ab") as f:
        f.write(b'{"line": 7, "ok": tr')
    shard_b = write_ndjson(tmp_path / "b.ndjson", [_outcome(2), _outcome(4, ok=False)])
    # A later file (read from stdin) settles line 4 too, and repeats line 2 unchanged.
    later = b"".join(
        orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE)
        for r in (_outcome(4, at="2026-11-23T10:00:03.230Z"), _outcome(2))
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(later)))
    html_path = tmp_path / "merged.html"
    report.write_report([str(shard_a), str(shard_b), "-"], html_path)  # raises when no page is written
    page = html_path.read_text(encoding="utf-8")
    figures = headline(page)
    assert (figures["jobs"], figures["ok"], figures["failed"]) == ("5", "5", "0")
    assert "No failures." in page
    assert "3 superseded by a later line" in page  # lines 3, 4 and 2
    assert "1 lines skipped" in page
    # The retries and 429s of the superseded failures are not counted.
    assert (figures["retries"], figures["429s"]) == ("0", "0")
    # From the earliest start (line 5: 10:00:00.100 less 50 ms) to the last completion.
    assert figures["wall span"] == "3.2 s"

    # Read the other way round, the failures are the last word for lines 3 and 4.
    finals = report.Finals()
    for path in (tmp_path / "later.ndjson", shard_b, shard_a):
        if path.name == "later.ndjson":
            path.write_bytes(later)
        with path.open("rb") as stream:
            report.read_outcomes([stream], finals)
    summary = report.summarize(finals)
    assert (summary.jobs, summary.ok, summary.failed) == (5, 4, 1)
    assert summary.kinds == Counter({"ok": 4, "exhausted": 1})
    # Shard a's later line 3 (ok) still wins over its earlier failure: only 4 fails.
    assert [(r.reason.kind, r.count, r.lines) for r in summary.failures] == [("exhausted", 1, (4,))]
    assert summary.retries == 7
    assert summary.throttled == 2
    assert summary.wall_s == pytest.approx(2.45)  # line 3's ok at 10:00:02.500 is the last


def test_lines_past_the_dense_range_and_without_times_still_count(tmp_path: Path) -> None:
    finals = report.Finals()
    finals.add(_outcome(report.DENSE_LINES + 5))
    finals.add(_outcome(report.DENSE_LINES + 5, ok=False))
    finals.add(_outcome(2, at="not a time"))
    finals.add({"line": "x"})
    summary = report.summarize(finals)
    assert (summary.jobs, summary.ok, summary.undated, finals.skipped) == (2, 1, 1, 1)
    assert summary.failures[0].lines == (report.DENSE_LINES + 5,)
    assert summary.series["done"].sum() == 1  # only the dated job is in the time plots


def test_messages_fold_values_but_keep_statuses_and_fields() -> None:
    fold = report.normalise_message
    assert fold("no entity with id 'personalizedOffer7'") == fold("no entity with id 'x'")
    assert fold("line 8, field 'patch': required") == "line N, field 'patch': required"
    assert fold("gave up after 8 attempts; last: HTTP 503: x") == (
        "gave up after N attempts; last: HTTP 503: x"
    )
    assert fold("can't remove '0'") == "can't remove '…'"


def test_without_the_extra_it_exits_2_and_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_ndjson(tmp_path / "out.ndjson", [_outcome(1)])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.raises(report.ReportError) as caught:
        report.write_report([str(source)], tmp_path / "r.html")
    assert caught.value.event == "report.unavailable"
    assert "pip install 'bulkpatch[report]'" in str(caught.value)
    assert not (tmp_path / "r.html").exists()


def test_unreadable_or_empty_input_raises_a_report_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"\n")
    events = []
    for sources in ([str(tmp_path / "nope.ndjson")], [str(empty)], ["-", "-"]):
        with pytest.raises(report.ReportError) as caught:
            report.write_report(sources, tmp_path / "r.html")
        assert isinstance(caught.value, ConfigError)  # bad usage: exit 2
        events.append(caught.value.event)
    assert events == ["report.unreadable", "report.empty", "report.usage"]
    assert not (tmp_path / "r.html").exists()


def test_the_command_says_a_report_error_in_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parser().parse_args(["report", str(tmp_path / "nope.ndjson"), "--html", "r.html"])
    assert run_command(args) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"bulkpatch: error: {tmp_path / 'nope.ndjson'}: ")


def test_with_json_logs_a_report_error_is_one_event(tmp_path: Path) -> None:
    args = _parser().parse_args(["report", str(tmp_path / "nope.ndjson"), "--html", "r.html"])
    args.log_format = "json"
    with structlog.testing.capture_logs() as logs:
        assert run_command(args) == 2
    assert [(e["event"], e["path"]) for e in logs] == [
        ("report.unreadable", str(tmp_path / "nope.ndjson"))
    ]
    assert logs[0]["error"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bulkpatch")
    add_report(parser.add_subparsers(dest="command", required=True))
    return parser


def test_the_subcommand_parses_and_runs(tmp_path: Path) -> None:
    parser = _parser()
    source = write_ndjson(tmp_path / "out.ndjson", [_outcome(1), _outcome(2, ok=False)])
    out = tmp_path / "r.html"
    args = parser.parse_args(
        ["report", str(source), "--html", str(out), "--title", "Run <7>", "-q"]
    )
    assert args.quiet == 1
    assert asyncio.run(args.func(args)) == 0
    page = out.read_text(encoding="utf-8")
    assert "<title>Run &lt;7&gt;</title>" in page
    assert headline(page)["failed"] == "1"
