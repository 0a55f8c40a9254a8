"""The command line's conventions, as a user meets them: help that answers (defaults,
environment, exit statuses, examples), one error style, options in any place, no
abbreviations, one name per kind of file, shell completion, NO_COLOR, JSON summaries."""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import structlog

from bulkpatch.cli import build_parser, main
from bulkpatch.cli.logs import configure_logging
from tests.test_run_cli import CLI, WAIT_S, clean_env, ndjson, replace_name

COMMANDS = ("run", "plan", "rollback", "export", "report", "translate", "config", "sim", "demo")
SGR = re.compile(rb"\x1b\[[0-9;]*m")  # a colour or style escape


def subparsers() -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Parse ``argv`` expecting a refusal: the stderr lines; the status must be 2."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err.splitlines()


# --------------------------------------------------------------------------- help


def without_default(parser: argparse.ArgumentParser) -> list[str]:
    """Options whose help says nothing of a default (a required one needs none)."""
    formatter = parser._get_formatter()
    return [
        action.option_strings[0]
        for action in parser._actions
        if action.option_strings
        and action.help is not argparse.SUPPRESS
        and not isinstance(action, argparse._HelpAction)
        and not action.required
        and (not action.help or "default" not in formatter._expand_help(action))
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_in_help_shows_its_default(command: str) -> None:
    assert without_default(subparsers()[command]) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_ends_with_environment_exit_statuses_and_two_examples(
    command: str,
) -> None:
    text = subparsers()[command].format_help()
    tail = text[text.index("\nenvironment:") :]
    assert "\nexit status:\n  0 " in tail
    assert "  2 " in tail
    examples = tail[tail.index("examples:") :].splitlines()[1:]
    assert len([e for e in examples if e.strip().startswith(("bulkpatch ", "curl ", "cat "))]) >= 2


def test_run_help_names_every_credential_variable() -> None:
    text = subparsers()["run"].format_help()
    for name in (
        "ADOBE_ACCESS_TOKEN", "ADOBE_CLIENT_ID", "ADOBE_CLIENT_SECRET", "ADOBE_SCOPES",
        "ADOBE_API_KEY", "ADOBE_ORG_ID", "ADOBE_SANDBOX_NAME", "BULKPATCH_ENDPOINT",
    ):  # fmt: skip
        assert name in text
    assert "130" in text  # the exit status of Ctrl-C


# --------------------------------------------------------------------------- errors


def test_a_bad_value_is_one_line_naming_the_flag_and_pointing_to_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert refused(["run", "--rate", "fast"], capsys) == [
        "bulkpatch run: error: --rate: expected a number or 'auto', got 'fast' "
        "(see 'bulkpatch run --help')"
    ]


def test_a_bad_setting_found_after_parsing_has_the_same_one_line_style(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith(("ADOBE_", "BULKPATCH_"))]:
        monkeypatch.delenv(name)
    jobs = tmp_path / "jobs.ndjson"
    jobs.write_bytes(ndjson([replace_name("o1", "x")]))
    try:
        assert main(["run", str(jobs), "--dry-run", "--rate", "-1"]) == 2
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "bulkpatch run: error: --rate must be >= 0 (0 means no limit) (see 'bulkpatch run --help')"
    ]


def test_an_abbreviated_option_is_refused_naming_the_full_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    [line] = refused(["run", "--conc", "4", "jobs.ndjson"], capsys)
    assert line.startswith("bulkpatch run: error: unrecognized arguments: --conc")
    assert "--concurrency" in line


def test_a_missing_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    [line] = refused([], capsys)
    assert line.startswith("bulkpatch: error: ")


# --------------------------------------------------------------------------- placement, names


@pytest.mark.parametrize(
    ("argv", "verbose", "fmt"),
    [
        (["-v", "run", "jobs.ndjson"], 1, "console"),
        (["run", "jobs.ndjson", "-vv", "--log-format", "json"], 2, "json"),
        (["--log-format", "json", "sim", "-v"], 1, "json"),
        (["-q", "export"], 0, "console"),
    ],
)
def test_logging_options_go_before_or_after_the_command(
    argv: list[str], verbose: int, fmt: str
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.log_format) == (verbose, fmt)


def test_order_takes_a_descending_field_without_an_equals_sign() -> None:
    args = build_parser().parse_args(["export", "--order", "-modified", "--page-size", "5"])
    assert (args.order, args.page_size) == ("-modified", 5)


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["run", "-o", "a"], "receipts", "a"),
        (["run", "--output", "a"], "receipts", "a"),
        (["run", "--receipts", "a"], "receipts", "a"),
        (["plan", "--output", "a"], "receipts", "a"),
        (["plan", "--receipts", "a"], "receipts", "a"),
        (["rollback", "b", "-o", "a"], "receipts", "a"),
        (["export", "-o", "a"], "output", "a"),
        (["translate", "--from", "xcore", "--to", "dps", "-o", "a"], "output", "a"),
        (["report", "x", "-o", "a"], "html", "a"),
        (["report", "x", "--html", "a"], "html", "a"),
        (["run", "--write-id-map", "a"], "id_map", "a"),
        (["run", "--id-map", "a"], "id_map", "a"),
        (["rollback", "b", "--write-id-map", "a"], "id_map", "a"),
        (["translate", "--from", "xcore", "--to", "dps", "--id-map", "a"], "id_map", "a"),
    ],
)
def test_one_name_per_kind_of_file_and_the_old_names_still_work(
    argv: list[str], dest: str, value: str
) -> None:
    assert getattr(build_parser().parse_args(argv), dest) == Path(value)


@pytest.mark.parametrize(
    ("command", "shown", "hidden"),
    [
        ("run", ["-o PATH, --output PATH, --receipts PATH", "--write-id-map"], ["--id-map"]),
        ("plan", ["-o PATH, --output PATH"], ["--receipts"]),
        ("report", ["-o PATH, --output PATH"], ["--html"]),
        ("translate", ["--id-map", "-o PATH, --output PATH"], ["--write-id-map"]),
    ],
)
def test_help_shows_the_names_and_hides_the_old_spellings(
    command: str, shown: list[str], hidden: list[str]
) -> None:
    text = subparsers()[command].format_help()
    assert all(name in text for name in shown)
    assert not any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) for name in hidden)


# --------------------------------------------------------------------------- completion


def test_completion_script_completes_commands_and_options(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "bulkpatch.bash"
    script.write_text(capfd.readouterr().out)
    complete = (
        f"source {script}; COMP_WORDS=(bulkpatch run --write-); COMP_CWORD=2; "
        '_shtab_bulkpatch; echo "${COMPREPLY[@]}"; '
        "COMP_WORDS=(bulkpatch ro); COMP_CWORD=1; _shtab_bulkpatch; echo \"${COMPREPLY[@]}\""
    )
    done = subprocess.run(["bash", "-c", complete], capture_output=True, text=True, timeout=30)
    assert done.stdout.split("\n")[:2] == ["--write-id-map", "rollback"], done.stderr


def test_completion_for_zsh(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "zsh"]) == 0
    out = capfd.readouterr().out
    assert out.startswith("#compdef bulkpatch")
    assert "--max-response-bytes" in out


# --------------------------------------------------------------------------- NO_COLOR, JSON


@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("1", False), ("", True)])
def test_no_color_turns_colours_off_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, no_color: str | None, coloured: bool
) -> None:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w")
    monkeypatch.setattr(sys, "stderr", terminal)
    try:
        configure_logging(0, "console")
        structlog.get_logger().warning("some.event", detail="x")
        terminal.flush()
        shown = os.read(master, 65536)
    finally:
        structlog.reset_defaults()
        terminal.close()
        os.close(master)
    assert b"some.event" in shown
    assert bool(SGR.search(shown)) is coloured


async def test_json_logs_make_the_end_summary_one_json_event(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.ndjson"
    jobs.write_bytes(ndjson([replace_name("o1", "x"), {"id": "o2"}]))
    proc = await asyncio.create_subprocess_exec(
        *CLI, "run", str(jobs), "--dry-run", "--log-format", "json",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=clean_env(),
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    events = [orjson.loads(line) for line in err.splitlines()]  # every line is JSON
    [summary] = [e for e in events if e["event"] == "run.summary"]
    assert summary["jobs"] == 2
    assert summary["outcomes"] == {"ok": 1, "input": 1}
    assert b"bulkpatch: 2 jobs in" not in err  # no text summary among the events
