"""bulkpatch: bulk JSON Patch for the Adobe Offer Library API."""

from bulkpatch._version import __version__
from bulkpatch.auth import Credentials
from bulkpatch.engine import Engine, RunConfig, patch_all
from bulkpatch.errors import BulkpatchError, ConfigError, InputError
from bulkpatch.jobs import BadLine, Job, Outcome, parse_line
from bulkpatch.source import read_jobs

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
