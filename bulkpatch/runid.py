"""A run's identity: the id every outcome line carries, and the sidecar that says what
the run was.

The id is given (``--run-id``, ``BULKPATCH_RUN_ID``: every shard of one run gets the
same), kept in the journal so a resume goes on under it, or else made up at start:
UTC time and 8 random hex digits (``20261123T100405Z-5f1e2a9c``). The sidecar
``<receipts>.run.json`` is written before the first request: the run's id, command,
input, endpoint, dialect, organization, sandbox and settings; never a token, a secret
or the API key. ``bulkpatch report`` reads it beside each outcome file.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from bulkpatch.errors import ConfigError

if TYPE_CHECKING:  # the journal imports this module, and the configuration the journal
    from bulkpatch.config import RunConfig

ENV: Final = "BULKPATCH_RUN_ID"
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# The settings a sidecar records: how the run was paced and what it was allowed to do.
_SETTINGS: Final = (
    "rate", "auto_rate", "max_rate", "shard", "concurrency", "timeout", "max_attempts",
    "max_conflicts", "max_failures", "force", "allow_delete", "create_key", "adopt_existing",
    "guard", "dry_run", "plan", "skip_noop", "verify_tls", "max_wait", "window",
)


def new_id() -> str:
    """A fresh run id: the UTC start time to the second and 32 random bits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def check_id(value: str, source: str = "--run-id") -> str:
    """``value`` if it is a usable run id (1-128 of ``A-Z a-z 0-9 . _ : -``, starting
    with a letter or digit); else ``ConfigError`` naming ``source``."""
    if not _ID.fullmatch(value):
        raise ConfigError(
            f"{source} {value!r}: a run id is 1 to 128 letters, digits, '.', '_', ':' or '-'"
        )
    return value


def kept(db: sqlite3.Connection, wanted: str | None) -> str:
    """The run id a journal holds (``meta.run``), or ``wanted`` (else a new one) recorded
    there. ``ConfigError`` when the journal holds another than ``wanted``: a resume goes
    on under the id it started with."""
    row = db.execute("SELECT value FROM meta WHERE key = 'run'").fetchone()
    if row is not None:
        if wanted is not None and wanted != row[0]:
            raise ConfigError(f"the run being resumed is {row[0]}, not {wanted}: drop --run-id, or give {row[0]}")
        return str(row[0])
    run = wanted or new_id()
    db.execute("INSERT INTO meta VALUES ('run', ?)", (run,))
    return run


def sidecar_path(receipts: Path) -> Path:
    return receipts.with_name(receipts.name + ".run.json")


def facts(run: str, config: RunConfig, source: str, command: str) -> dict[str, Any]:
    """What a sidecar records (no secrets: the credentials and the API key stay out)."""
    settings = {name: getattr(config, name) for name in _SETTINGS}
    settings["shard"] = None if config.shard is None else f"{config.shard[0]}/{config.shard[1]}"
    api = asdict(config.api)
    return {
        "run": run,
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "input": source,
        "endpoint": api["endpoint"],
        "dialect": api["dialect"],
        "org": api["org_id"],
        "sandbox": api["sandbox"],
        "container": api["container_id"],
        "settings": settings,
    }


def write_sidecar(receipts: Path, record: dict[str, Any], *, keep: bool = False) -> None:
    """Write the sidecar of ``receipts`` whole (a temporary file renamed), unless ``keep``
    (a resume) and one is there; ``ConfigError`` if it cannot be written."""
    path = sidecar_path(receipts)
    if keep and path.exists():
        return
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
        os.replace(partial, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """A sidecar's facts, or None when there is none or it cannot be read."""
    try:
        record = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None
