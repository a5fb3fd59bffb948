"""RFC 2920 §3.2: the replies to a pipelined group leave in one write."""

from __future__ import annotations

from typing import Any

from ferrosmtp.handlers import Sink
from ferrosmtp.server import SMTP
from tests.server.support import Raw, running


class _Recording:
    """The connection's transport, its writes recorded."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def test_one_write_per_pipelined_group(monkeypatch: Any) -> None:
    writes: list[bytes] = []
    original = SMTP.connection_made

    def recording(self: SMTP, transport: Any) -> None:
        original(self, _Recording(transport, writes))

    monkeypatch.setattr(SMTP, "connection_made", recording)
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
