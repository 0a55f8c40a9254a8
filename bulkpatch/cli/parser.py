"""The parser every subcommand is built on: one error style, no abbreviations, help that
shows each option's default and ends with the command's environment, exit statuses and
examples.

One error style, for argparse's refusals and bulkpatch's own alike (``usage_error``)::

    bulkpatch run: error: --rate must be >= 0 (see 'bulkpatch run --help')

one line on stderr, the flag named, exit 2: not argparse's usage block, not a log event.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any, Final, NoReturn

EXIT_USAGE: Final = 2
_WIDTH: Final = 88  # epilog lines, as wide as a terminal of 90 columns shows whole

# argparse names the option it refuses as "argument -o/--output: ..."; the one style
# names it as the user would type it.
_ARGUMENT = re.compile(r"^argument ([^:]+): ")

ENV_CREDENTIALS: Final = (
    ("ADOBE_ACCESS_TOKEN", "a bearer token, used as it is (never renewed)"),
    ("ADOBE_CLIENT_ID", "with ADOBE_CLIENT_SECRET: OAuth server-to-server credentials: IMS issues and renews the token"),
    ("ADOBE_CLIENT_SECRET", "see ADOBE_CLIENT_ID"),
    ("ADOBE_SCOPES", "the scopes asked of IMS (default: the Experience Platform ones)"),
    ("ADOBE_IMS_URL", "--ims-url"),
)
ENV_API: Final = (
    ("ADOBE_API_KEY", "--api-key (default: ADOBE_CLIENT_ID)"),
    ("ADOBE_ORG_ID", "--org-id"),
    ("ADOBE_SANDBOX_NAME", "--sandbox"),
    ("BULKPATCH_ENDPOINT", "--endpoint"),
    ("BULKPATCH_PROFILE", "--profile"),
    ("NO_COLOR", "set and not empty: no colours in the logs"),
)
ENV_LOCAL: Final = (("NO_COLOR", "set and not empty: no colours in the logs"),)

EXITS_RUN: Final = (
    ("0", "every job ok"),
    ("1", "some jobs failed (each has its outcome line)"),
    ("2", "bad usage or configuration: nothing was sent"),
    ("3", "a systemic failure stopped the run early (credentials, outage, a file that cannot be written)"),
    ("130, 143", "interrupted by SIGINT, SIGTERM (--resume continues)"),
)
EXITS_LOCAL: Final = (
    ("0", "done"),
    ("2", "bad usage: nothing was done"),
)


def usage_error(prog: str, message: str) -> str:
    """The one-line form of a usage error: ``PROG: error: MESSAGE (see 'PROG --help')``."""
    message = " ".join(message.split())  # one line, whatever the message held
    return f"{prog}: error: {message} (see '{prog} --help')"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs as written (they are tables); each option's default at the end of its help
    unless the help states it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default is argparse.SUPPRESS:
            return text
        if action.default is None:
            return text  # the help must say what leaving it out means: the tests check
        if action.default is False or action.default == []:
            return f"{text} (default: off)".strip()
        spec = "g" if isinstance(action.default, float) else "s"  # 40000, not 40000.0
        return f"{text} (default: %(default){spec})".strip()


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with abbreviations refused (``--conc`` is not
    ``--concurrency``: a later option sharing the prefix would change what a script means)
    and every error in one line (exit 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, usage_error(self.prog, _ARGUMENT.sub(r"\1: ", message)) + "\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but an unknown option is refused by the subcommand it was given
        to (``bulkpatch run: error: ...``), with the option it abbreviates, if any."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(parsed, "prog", self.prog)
            self.exit(EXIT_USAGE, usage_error(prog, _unknown(extras, self, parsed)) + "\n")
        return parsed

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        return super().parse_known_args(_joined(sys.argv[1:] if args is None else args, self), namespace)


def _unknown(extras: list[str], top: argparse.ArgumentParser, parsed: argparse.Namespace) -> str:
    """"unrecognized arguments: ...", and the option a refused abbreviation stands for."""
    message = f"unrecognized arguments: {' '.join(extras)}"
    known = _options(top, getattr(parsed, "command", None))
    for extra in extras:
        name = extra.split("=", 1)[0]
        matches = sorted(o for o in known if name.startswith("--") and o.startswith(name))
        if matches:
            return f"{message} ({name} is not short for {' or '.join(matches)}: options are spelled in full)"
    return message


def _options(top: argparse.ArgumentParser, command: str | None) -> set[str]:
    """The option strings of ``command`` (of the top-level parser without one)."""
    parser = top
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            parser = action.choices[command]
    return {o for action in parser._actions for o in action.option_strings}


def _joined(args: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--order -modified`` as ``--order=-modified``: argparse takes a value that starts
    with '-' for an option of its own and refuses it, and orderby's descending form is
    exactly that. Only for the options that declare it (``takes_dash_value``)."""
    joined: list[str] = []
    pending: str | None = None
    for arg in args:
        if pending is not None:
            joined.append(f"{pending}={arg}")
            pending = None
        elif arg in _dash_value_options(parser):
            pending = arg
        else:
            joined.append(arg)
    if pending is not None:
        joined.append(pending)  # the option without its value: argparse says so
    return joined


def _dash_value_options(parser: argparse.ArgumentParser) -> frozenset[str]:
    return frozenset(getattr(parser, "dash_value_options", ()))


def takes_dash_value(parser: argparse.ArgumentParser, *options: str) -> None:
    """Let ``options`` take a value that starts with '-' without '=' (``--order -modified``)."""
    existing: Iterable[str] = getattr(parser, "dash_value_options", ())
    parser.dash_value_options = (*existing, *options)  # type: ignore[attr-defined]


def epilog(
    env: Iterable[tuple[str, str]], exits: Iterable[tuple[str, str]], examples: Iterable[str]
) -> str:
    """A subcommand's epilog: its environment variables, exit statuses and examples."""
    lines = ["environment:", *_table(env), "", "exit status:", *_table(exits), "", "examples:"]
    lines += [f"  {example}" for example in examples]
    return "\n".join(lines)


def _table(rows: Iterable[tuple[str, str]]) -> list[str]:
    """Two columns, the second wrapped to ``_WIDTH`` under itself."""
    rows = list(rows)
    width = max(len(name) for name, _ in rows) + 4
    lines: list[str] = []
    for name, what in rows:
        wrapped = textwrap.wrap(what, _WIDTH - width) or [""]
        lines.append(f"  {name.ljust(width - 2)}{wrapped[0]}")
        lines += [" " * width + more for more in wrapped[1:]]
    return lines
