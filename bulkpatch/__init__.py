"""bulkpatch: bulk JSON Patch for the Adobe Offer Library API.

The names below load on first use (PEP 562), so importing one pure module
(``bulkpatch.retry``, ``bulkpatch.verify``) does not load aiohttp and the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bulkpatch._version import __version__

if TYPE_CHECKING:
    from bulkpatch.auth import Credentials
    from bulkpatch.config import RunConfig
    from bulkpatch.engine import Engine, patch_all
    from bulkpatch.errors import BulkpatchError, ConfigError, InputError
    from bulkpatch.jobs import BadLine, Job, parse_line
    from bulkpatch.outcomes import Outcome
    from bulkpatch.source import read_jobs

_HOMES: dict[str, str] = {
    "BadLine": "bulkpatch.jobs",
    "BulkpatchError": "bulkpatch.errors",
    "ConfigError": "bulkpatch.errors",
    "Credentials": "bulkpatch.auth",
    "Engine": "bulkpatch.engine",
    "InputError": "bulkpatch.errors",
    "Job": "bulkpatch.jobs",
    "Outcome": "bulkpatch.outcomes",
    "RunConfig": "bulkpatch.config",
    "parse_line": "bulkpatch.jobs",
    "patch_all": "bulkpatch.engine",
    "read_jobs": "bulkpatch.source",
}

__all__ = [
    "BadLine",
    "BulkpatchError",
    "ConfigError",
    "Credentials",
    "Engine",
    "InputError",
    "Job",
    "Outcome",
    "RunConfig",
    "__version__",
    "parse_line",
    "patch_all",
    "read_jobs",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bulkpatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found once; later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
