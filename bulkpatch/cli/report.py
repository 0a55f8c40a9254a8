"""``bulkpatch report``: draw an HTML report from outcome lines."""

from __future__ import annotations

import argparse
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bulkpatch.cli.exits import EXIT_OK
from bulkpatch.cli.logs import add_logging_options
from bulkpatch.cli.parser import ENV_LOCAL, epilog
from bulkpatch.errors import ConfigError
from bulkpatch.report import INSTALL_HINT, write_report


def add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="draw an HTML report from outcome lines",
        description="Read outcome lines (files or '-' for stdin) and write one "
        "self-contained HTML page. Lines are grouped by their run id: one run's shards and "
        "resumes merge (the last line read for an input line wins), other runs are sections "
        "of their own under the totals, and a file without run ids is a run of its own. Per "
        "run: throughput, 429s and retries, ms/server_ms/wait_ms, outcomes by kind, failures "
        f"by reason, and the facts of its FILE.run.json. Needs the optional extra: {INSTALL_HINT}",
        epilog=epilog(
            ENV_LOCAL,
            [("0", "the page is written"), ("2", "no page: an input unreadable or empty, the page unwritable, or the extra missing")],
            [
                "bulkpatch report outcomes.ndjson -o report.html",
                "cat shard-*.ndjson | bulkpatch report - -o report.html --title 'price migration'",
            ],
        ),
    )
    add_logging_options(p)
    p.add_argument(
        "outcomes", nargs="+", metavar="OUTCOMES", help="outcome files ('-' reads stdin)"
    )
    p.add_argument(
        "-o", "--output", dest="html", type=Path, metavar="PATH",
        help="the page to write (required: no default)",
    )  # fmt: skip
    p.add_argument("--html", dest="html", type=Path, help=argparse.SUPPRESS)  # the old name
    p.add_argument("--title", default="bulkpatch report", help="the page's title")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """Exit 0; ``ReportError`` (exit 2) when no page can be written."""
    if args.html is None:  # not argparse's required=: the hidden --html may give it
        raise ConfigError("-o/--output is required: the page to write")

    async def report() -> int:
        # CPU-bound and alone on the loop: nothing else to schedule meanwhile.
        write_report(args.outcomes, args.html, title=args.title)
        return EXIT_OK

    return report()
