"""The one scrubber: a registered secret never leaves in any text, whatever its form."""

from __future__ import annotations

from urllib.parse import quote

import orjson
import structlog

from bulkpatch import scrub
from bulkpatch.cli.logs import configure_logging

SECRET = "s3cr3t/client+secret=="


def test_every_form_of_a_registered_secret_is_replaced() -> None:
    scrub.register(SECRET, None, "short")
    for form in (SECRET, orjson.dumps(SECRET).decode()[1:-1], quote(SECRET, safe="")):
        assert scrub.scrub(f"IMS said: invalid {form}!") == "IMS said: invalid [secret]!"
    assert scrub.scrub("short words stay") == "short words stay"  # too short to be a secret


def test_log_events_are_scrubbed_before_they_are_written(capsys: object) -> None:
    scrub.register(SECRET)
    configure_logging(0, "json")
    try:
        structlog.get_logger().warning("auth.refused", error=f"IMS echoed {SECRET}", status=400)
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert SECRET not in err
    assert "[secret]" in err
