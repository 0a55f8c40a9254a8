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


def test_an_excerpt_cut_inside_a_secret_shows_no_part_of_it() -> None:
    token = "tok-" + "x7/+" * 300  # as long as an IMS token
    scrub.register(token)
    for head in ("", "Authorization: Bearer ", "a" * 150):
        shown = scrub.excerpt(f"{head}{token} and more", 200)
        assert "x7/+" not in shown, shown
        assert len(shown) <= 200
        assert shown.startswith(head)
    # Given the head of a longer text, the end of it may be a secret's head: not shown.
    assert "x7/+" not in scrub.excerpt("said: " + token[:90], 200, cut=True)
