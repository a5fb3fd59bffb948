"""A hook's reply string as a Response: parsed once per string, the cache bounded."""

from __future__ import annotations

import pytest

from ferrosmtp.protocol.events import Response
from ferrosmtp.server import status


def test_a_repeated_reply_is_parsed_once_into_the_same_response() -> None:
    first = status.parse_status("250 2.1.5 Recipient ok")
    assert first == Response(250, ("Recipient ok",), "2.1.5")
    assert status.parse_status("250 2.1.5 Recipient ok") is first
    # Without enhanced codes the code stays in the text: another entry, not this one.
    plain = status.parse_status("250 2.1.5 Recipient ok", False)
    assert plain == Response(250, ("2.1.5 Recipient ok",), None)
    assert status.parse_status(b"250 2.1.5 Recipient ok") == first


def test_bad_replies_are_refused_every_time_and_the_cache_stays_bounded() -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            status.parse_status("hello")
        with pytest.raises(ValueError):
            status.parse_status(["250 OK"])  # type: ignore[arg-type]
    for n in range(3 * status._PARSED_SIZE):
        assert status.parse_status(f"250 Ok: queued as {n}").lines == (f"Ok: queued as {n}",)
        assert len(status._parsed) <= status._PARSED_SIZE
