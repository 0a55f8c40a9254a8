"""``bulkpatch run``, ``plan`` and ``rollback``: one run of jobs each, through ``run_jobs``.

What the command line adds to the library call: the options, SIGINT and SIGTERM (stop
reading, give the jobs in flight ``GRACE_S`` to finish, abort them on a second signal;
the process ends ``HARD_STOP_S`` after either, whatever it waits on), and the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Any, Final

import structlog

from bulkpatch import runid
from bulkpatch.cli.exits import EXIT_FAILED_ITEMS, EXIT_OK, EXIT_SYSTEMIC, interrupted
from bulkpatch.cli.logs import add_logging_options, log_format, verbosity
from bulkpatch.cli.options import (
    add_api_and_pace,
    add_output,
    add_outputs,
    add_progress_option,
    add_run_id_options,
    run_config,
    shard,
)
from bulkpatch.cli.parser import ENV_API, ENV_CREDENTIALS, EXITS_RUN, epilog
from bulkpatch.config import RunConfig
from bulkpatch.engine import Engine
from bulkpatch.runner import STDOUT_GONE, RunOutputs, RunResult, run_jobs

# After SIGINT/SIGTERM, jobs in flight get this long to finish before they are aborted.
GRACE_S: Final = 10.0
# This long after the grace period, or after a second signal, the process ends even if
# the run has not (its loop blocked writing to a full pipe, say): a kill -9's state, which
# --resume continues exactly.
HARD_STOP_S: Final = 1.0

INPUT_HELP: Final = "NDJSON job file (default: '-', stdin)"
ENV_RUN: Final = (*ENV_CREDENTIALS, *ENV_API)


def add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="apply NDJSON patch jobs",
        description="Apply one JSON Patch job per NDJSON line; write one outcome line per job.",
        epilog=epilog(
            ENV_RUN,
            EXITS_RUN,
            [
                "bulkpatch run jobs.ndjson -o outcomes.ndjson --failures failed.ndjson --backup backup.ndjson",
                "bulkpatch run jobs.ndjson -o outcomes.ndjson --resume    # after a crash or Ctrl-C",
            ],
        ),
    )
    add_logging_options(p)
    p.add_argument("input", nargs="?", default="-", help=INPUT_HELP)
    add_api_and_pace(p)
    _add_run_options(p)
    add_prefetch_options(p)
    _add_create_delete_options(p)
    add_outputs(p, resumable=True)
    p.set_defaults(func=cmd_run, force=False)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument(
        "--guard",
        choices=("auto", "always"),
        default="auto",
        help="auto: If-Match whenever the etag is known; always: read first so every write "
        "has one (default auto)",
    )
    g.add_argument(
        "--shard",
        type=shard,
        metavar="K/N",
        help="run only slice K (0..N-1) of N, split by a stable hash of the entity "
        "(default: every job)",
    )
    g.add_argument(
        "--skip-noop",
        action="store_true",
        help="read each entity first and send no write that would leave it unchanged",
    )
    g.add_argument(
        "--backup",
        type=Path,
        metavar="PATH",
        help="record each entity before its first write (for bulkpatch rollback PATH; "
        "default: no backup)",
    )
    g.add_argument("--dry-run", action="store_true", help="validate every line, send nothing")


def add_prefetch_options(p: argparse.ArgumentParser) -> None:
    """``--prefetch`` and ``--page-size``: run, plan and rollback."""
    g = p.add_argument_group("entities' state")
    g.add_argument(
        "--prefetch",
        choices=("auto", "list", "get"),
        default="auto",
        help="where jobs that need an entity's state get it: list: from list pages of the "
        "collections they name; get: one read per entity; auto: list when the pages are "
        "fewer than the entities named (default auto; the dps dialect only)",
    )
    g.add_argument(
        "--page-size",
        type=int,
        default=100,
        metavar="N",
        help="entities asked for per list page; a 400 to it halves it (default 100)",
    )


def _add_create_delete_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("create and delete jobs")
    g.add_argument("--allow-delete", action="store_true", help="run delete jobs (else they fail)")
    g.add_argument(
        "--create-key",
        default="name",
        metavar="FIELD",
        help="the field that finds a create's entity after an unknown outcome (default name)",
    )
    g.add_argument(
        "--adopt-existing",
        action="store_true",
        help="a create whose key exists already reports that entity instead of a conflict",
    )
    add_write_id_map(g, 'append {"key", "id"} of each created entity')


def add_write_id_map(g: argparse._ArgumentGroup, what: str) -> None:
    """``--write-id-map PATH``: a file bulkpatch writes ids to (``--id-map`` is one it
    reads them from; the old spelling here is still accepted, not shown)."""
    g.add_argument(
        "--write-id-map", dest="id_map", type=Path, metavar="PATH", help=f"{what} (default: none)"
    )
    g.add_argument("--id-map", dest="id_map", type=Path, help=argparse.SUPPRESS)


def add_plan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan",
        help="show what a job file would change, sending no write",
        description="Read each entity the jobs target, apply the jobs locally in input order, "
        "and say per job: change (old -> new), noop, or fail. Sends no write.",
        epilog=epilog(
            ENV_RUN,
            [("0", "every job would apply"), *EXITS_RUN[1:]],
            [
                "bulkpatch plan jobs.ndjson -o plan.ndjson",
                "bulkpatch plan jobs.ndjson --log-format json | jq -c 'select(.plan == \"fail\")'",
            ],
        ),
    )
    add_logging_options(p)
    p.add_argument("input", nargs="?", default="-", help=INPUT_HELP)
    add_api_and_pace(p)
    add_prefetch_options(p)
    g = p.add_argument_group("output")
    add_output(g, "the plan lines", alias="--receipts", dest="receipts")
    add_progress_option(g)
    add_run_id_options(g)
    p.set_defaults(
        func=cmd_run,
        plan=True,
        failures=None,
        resume=False,
        durable=False,
        summary=None,
        shard=None,
        guard="auto",
        dry_run=False,
        skip_noop=False,
        backup=None,
        force=False,
    )


def add_rollback(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rollback",
        help="undo a run recorded with --backup",
        description="Put every entity of a backup back as the run found it, on the fields "
        "the run changed, guarded by If-Match; an entity changed since the run left it "
        "is reported as a conflict unless --force. A rollback is a run like any other.",
        epilog=epilog(
            ENV_RUN,
            EXITS_RUN,
            [
                "bulkpatch rollback backup.ndjson -o undone.ndjson --failures not-undone.ndjson",
                "bulkpatch rollback backup.ndjson -o undone.ndjson --force",
            ],
        ),
    )
    add_logging_options(p)
    p.add_argument("input", help="the backup file a run wrote with --backup")
    add_api_and_pace(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="restore entities changed since the run left them as well (default: off, "
        "they are reported as conflicts)",
    )
    add_prefetch_options(p)
    add_outputs(p, resumable=True)
    add_write_id_map(
        p.add_argument_group("created again"), 'append {"key", "id"} of each entity created again'
    )
    p.set_defaults(
        func=cmd_run,
        rollback=True,
        shard=None,
        guard="auto",
        dry_run=False,
        skip_noop=False,
        backup=None,
        allow_delete=True,
        create_key="name",
        adopt_existing=False,
    )


def cmd_run(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """run, plan and rollback: the exit status; ``ConfigError`` for bad usage."""
    config = run_config(args)
    return _run(config, args.input, run_outputs(args), rollback=getattr(args, "rollback", False))


def run_outputs(args: argparse.Namespace) -> RunOutputs:
    """The output options as ``run_jobs`` takes them."""
    json_logs = log_format(args) == "json"
    return RunOutputs(
        receipts=args.receipts,
        failures=args.failures,
        summary=args.summary,
        backup=args.backup,
        id_map=getattr(args, "id_map", None),
        resume=args.resume,
        durable=args.durable,
        progress=_progress_shown(args),
        # With --log-format json, stderr is for machines: the summary is one event there.
        summary_to=sys.stderr if verbosity(args) >= 0 and not json_logs else None,
        summary_event=json_logs,
        run_id=_run_id(args),
        overwrite=getattr(args, "overwrite", False),
    )


def _run_id(args: argparse.Namespace) -> str | None:
    """``--run-id``, else ``BULKPATCH_RUN_ID``, checked; None: the run makes its own."""
    given = getattr(args, "run_id", None)
    if given is not None:
        return runid.check_id(given)
    env = os.environ.get(runid.ENV)
    return runid.check_id(env, runid.ENV) if env else None


def _progress_shown(args: argparse.Namespace) -> bool:
    """On a terminal (or with --progress), unless --no-progress or -q."""
    if args.progress is not None:
        return bool(args.progress)
    return sys.stderr.isatty() and verbosity(args) >= 0


async def _run(config: RunConfig, source: str, outputs: RunOutputs, *, rollback: bool) -> int:
    signals: list[int] = []
    result = await run_jobs(
        config,
        source,
        outputs,
        rollback=rollback,
        on_engine=lambda engine: _handle_signals(engine, signals),
    )
    return _exit_status(result, signals)


def _handle_signals(engine: Engine, signals: list[int]) -> None:
    """The first SIGINT or SIGTERM stops the run and gives the jobs in flight
    ``GRACE_S``; a second one aborts them at once. The process ends ``HARD_STOP_S`` after
    that in any case. ``signals`` collects them."""
    loop = asyncio.get_running_loop()

    def on_loop(count: int) -> None:
        if count == 1:
            engine.stop(f"interrupted by {signal.Signals(signals[0]).name}")
            loop.call_later(GRACE_S, engine.abort_in_flight)
        else:
            engine.abort_in_flight()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # A Python handler, not the loop's: it runs even while the loop is blocked (in a
        # write to a full pipe, say). It only arms the deadline and hands the rest to the
        # loop, since it may run between any two bytecodes of the run.
        signals.append(signum)
        _end_at(HARD_STOP_S + (GRACE_S if len(signals) == 1 else 0.0), signals[0])
        loop.call_soon_threadsafe(on_loop, len(signals))

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)


def _end_at(seconds: float, signum: int) -> None:
    """End the process ``seconds`` from now unless it has ended by then."""

    def end() -> None:
        name = signal.Signals(signum).name
        structlog.get_logger().error(
            "run.killed", reason=f"still running {seconds:g} s after {name}: ended; continue with --resume"
        )
        sys.stderr.flush()
        os._exit(interrupted(signum))  # the journal holds every intent: --resume continues

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()


def _exit_status(result: RunResult, signals: list[int]) -> int:
    if result.systemic:
        structlog.get_logger().error("run.stopped_early", reason=result.systemic)
        return EXIT_SYSTEMIC
    if signals:
        return interrupted(signals[0])
    if result.stop_reason == STDOUT_GONE:
        return EXIT_FAILED_ITEMS  # lines left unread have no outcome
    # A resumed run answers for the whole run: lines that failed before fail still.
    return EXIT_OK if result.all_ok else EXIT_FAILED_ITEMS
