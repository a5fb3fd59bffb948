"""Checklist B1 against the live server: every ending of the smuggling table, under both
policies, written whole and byte by byte. Nothing is ever split into two messages."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.server.support import Raw, running

SMUGGLED = b"MAIL FROM:<s@x.example>\r\nRCPT TO:<r@y.example>\r\nDATA\r\nS\r\n.\r\n"
TAIL = SMUGGLED[:-3]  # what stays in the body when the fake ending is not an ending

# ending: (reject policy outcome, normalize policy outcome); an outcome is the reply code
# and the content stored (None: nothing stored).
TABLE: dict[bytes, tuple[tuple[int, bytes | None], tuple[int, bytes | None]]] = {
    b"\n.\n": ((550, None), (250, b"A\r\n" + TAIL)),
    b"\r.\r": ((550, None), (250, b"A\r.\r" + TAIL)),
    b"\n.\r\n": ((550, None), (250, b"A\r\n" + TAIL)),
    b"\r\n.\n": ((550, None), (250, b"A\r\n" + TAIL)),
    b"\r.\n": ((550, None), (250, b"A\r.\r\n" + TAIL)),
    b"\n.\r": ((550, None), (250, b"A\r\n\r" + TAIL)),
    b"\r.\r\n": ((550, None), (250, b"A\r.\r\n" + TAIL)),
    b"\r\n.\r": ((550, None), (250, b"A\r\n\r" + TAIL)),
    b"\r\n\x00.\r\n": ((250, b"A\r\n\x00.\r\n" + TAIL), (250, b"A\r\n\x00.\r\n" + TAIL)),
    b"\r\n.\x00\r\n": ((250, b"A\r\n\x00\r\n" + TAIL), (250, b"A\r\n\x00\r\n" + TAIL)),
    b"\r\n. \r\n": ((250, b"A\r\n \r\n" + TAIL), (250, b"A\r\n \r\n" + TAIL)),
    b"\r\n..\r\n": ((250, b"A\r\n.\r\n" + TAIL), (250, b"A\r\n.\r\n" + TAIL)),
}


class Store:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, envelope.content))
        return "250 OK"


@pytest.mark.parametrize("policy", ["reject", "normalize"])
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("ending", list(TABLE), ids=[repr(e)[2:-1] for e in TABLE])
def test_smuggling_table(ending: bytes, policy: str, bytewise: bool) -> None:
    code, content = TABLE[ending][policy == "normalize"]
    store = Store()
    with running(store, bare_newline=policy) as c, Raw(c.port) as raw:
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.reply()
        raw.send(b"EHLO client.example\r\n")
        raw.reply()
        raw.send(b"MAIL FROM:<a@trusted.example>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        raw.replies(3)
        payload = b"A" + ending + SMUGGLED
        if bytewise:
            for i in range(len(payload)):
                raw.send(payload[i : i + 1])
        else:
            raw.send(payload)
        reply = raw.reply()
        assert int(reply[:3]) == code, reply
        raw.send(b"QUIT\r\n")
        assert raw.read_to_eof() == b"221 2.0.0 Bye\r\n"  # no reply for a smuggled transaction
    expected = [] if content is None else [("a@trusted.example", content)]
    assert store.messages == expected
