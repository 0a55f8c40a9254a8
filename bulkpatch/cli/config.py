"""``bulkpatch config show``: the settings a run would use, and where each comes from."""

from __future__ import annotations

import argparse
import os
from collections.abc import Coroutine
from typing import Any

from bulkpatch.cli.exits import EXIT_OK
from bulkpatch.cli.logs import add_logging_options
from bulkpatch.cli.options import add_profile_options
from bulkpatch.cli.parser import EXITS_LOCAL, epilog
from bulkpatch.cli.run import ENV_RUN
from bulkpatch.settings import resolve, show


def add_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "config",
        help="show the settings a run would use, and where each comes from",
        description="Print the effective settings (flags, then the environment, then the "
        "named profile, then the defaults) and where each came from; secrets masked.",
        epilog=epilog(
            ENV_RUN,
            EXITS_LOCAL,
            ["bulkpatch config show", "bulkpatch config show --profile prod --config ~/bulkpatch.toml"],
        ),
    )
    add_logging_options(p)
    p.add_argument("action", choices=("show",), help="show: the one action")
    add_profile_options(p)
    p.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """Exit 0; ``ConfigError`` for a bad profile or profiles file."""
    settings = resolve({}, os.environ, profile=args.profile, config=args.config)

    async def print_settings() -> int:
        print(show(settings))
        return EXIT_OK

    return print_settings()
