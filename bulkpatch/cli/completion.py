"""``bulkpatch completion bash|zsh|tcsh``: a shell completion script, generated from the
parser by shtab, so it knows every subcommand and option as they are, with no upkeep."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bulkpatch.cli.exits import EXIT_OK
from bulkpatch.cli.logs import add_logging_options
from bulkpatch.cli.parser import ENV_LOCAL, EXITS_LOCAL, epilog
from bulkpatch.runner import silence_stdout

SHELLS = ("bash", "zsh", "tcsh")


def add_completion(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script for SHELL on stdout: subcommands, options "
        "and their choices, file names where a file is asked for.",
        epilog=epilog(
            ENV_LOCAL,
            EXITS_LOCAL,
            [
                "bulkpatch completion bash > ~/.local/share/bash-completion/completions/bulkpatch",
                "bulkpatch completion zsh > \"${fpath[1]}/_bulkpatch\"",
            ],
        ),
    )
    add_logging_options(p)
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """Exit 0; the script on stdout."""

    async def print_script() -> int:
        # Imported here: only this command needs it, and the parser is built anew so the
        # script describes the parser as the other commands see it.
        import shtab

        from bulkpatch.cli import build_parser

        parser = build_parser()
        _complete_paths(parser, shtab.FILE)
        script = shtab.complete(parser, shell=args.shell)
        try:
            sys.stdout.write(script + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            silence_stdout()
        return EXIT_OK

    return print_script()


def _complete_paths(parser: argparse.ArgumentParser, file: Any) -> None:
    """File names for every option that takes a path, and for the input arguments."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _complete_paths(subparser, file)
        elif action.type is Path or action.dest in ("input", "outcomes"):
            action.complete = file  # type: ignore[attr-defined]
