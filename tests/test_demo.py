"""``bulkpatch demo`` as a newcomer sees it: the summary ``run`` prints, a one-sentence
verdict, and nothing left behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import structlog

from bulkpatch.cli import build_parser, configure_logging, run_command


def run_demo(*argv: str) -> int:
    """The command as ``bulkpatch demo`` runs it, logs on stderr."""
    args = build_parser().parse_args(["demo", "--offers", "20", "--jobs-per-offer", "3", *argv])
    configure_logging(0, "console")
    try:
        return run_command(args)
    finally:
        structlog.reset_defaults()


def test_demo_prints_the_run_summary_and_the_verdict_and_leaves_no_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a temp dir would go
    assert run_demo() == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("bulkpatch: 60 jobs in ")
    assert out[1].startswith("  outcomes  ok 60")
    assert any(line.startswith("  ms        p50 ") for line in out)
    assert any(line.startswith("  server_ms p50 ") for line in out)
    assert out[-1].startswith("Check passed: all 20 offers are as the jobs say, each job applied exactly once")
    assert list(tmp_path.iterdir()) == []


def test_demo_with_a_workdir_keeps_its_files_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo("--workdir", str(tmp_path / "demo")) == 0
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["jobs.ndjson", "outcomes.ndjson"]
    assert capsys.readouterr().out.splitlines()[-1] == f"The jobs and outcomes are in {tmp_path / 'demo'}."


def test_a_failed_check_is_one_sentence_naming_the_offers() -> None:
    from bulkpatch.demo import Checked

    checked = Checked(summary={}, failed=2, wrong=["o1", "o2"], offers=20, faults=5)
    assert checked.verdict() == (
        "Check failed: 2 of 20 offers differ from every job applied once, in input order "
        "(first: o1, o2), and 2 jobs failed."
    )
