"""RFC 2920 §3.2: the replies to a pipelined group leave in one write."""

from __future__ import annotations

from typing import Any

from ferrosmtp.handlers import Sink
from ferrosmtp.server import SMTP
from tests.server.support import Raw, running


def test_one_write_per_pipelined_group(monkeypatch: Any) -> None:
    writes: list[bytes] = []
    original = SMTP._write

    def recording(self: SMTP, data: bytes) -> None:
        if data:  # an empty flush writes nothing
            writes.append(data)
        original(self, data)

    monkeypatch.setattr(SMTP, "_write", recording)
    with running(Sink()) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"EHLO client.test\r\n")
        raw.reply()
        writes.clear()
        raw.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"
            b"RCPT TO:<c@example.net>\r\nDATA\r\n"
        )
        raw.replies(4)
    assert writes == [
        b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    ]
