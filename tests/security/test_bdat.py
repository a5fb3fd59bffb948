"""Checklist B4, BDAT desync: whatever the server answers to a syntactically valid
``BDAT n``, the n octets after it are chunk bytes, never commands, even when they spell a
whole SMTP transaction. A BDAT whose size cannot be read closes the connection (521)."""

from __future__ import annotations

import random
import socket
import time
from typing import Any

import pytest

from tests.server.support import Raw, running

# A complete transaction as chunk text: if any of it ran, the spy would see it.
TX = (
    b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nS\r\n.\r\nNOOP\r\n"
)
EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<a@example.com>\r\n"
RCPT = b"RCPT TO:<b@example.net>\r\n"


class Spy:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.log.append(("MAIL", address))
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.log.append(("RCPT", address))
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.log.append(("DATA", envelope.content))
        return "250 OK"

    def evil(self) -> list[tuple[str, Any]]:
        return [e for e in self.log if "attacker" in str(e[1]) or "victim" in str(e[1])]


def dialog(raw: Raw, steps: list[bytes]) -> list[bytes]:
    raw.reply()
    out = []
    for step in steps:
        raw.send(step)
        out.append(raw.reply())
    return out


# (setup commands, server options, the refusal the chunk gets)
REFUSALS: dict[str, tuple[list[bytes], dict[str, Any], bytes]] = {
    "before-ehlo": ([], {}, b"503 5.5.1 Error: send HELO/EHLO first\r\n"),
    "before-mail": ([EHLO], {}, b"503 5.5.1 Error: need MAIL command\r\n"),
    "no-rcpt": ([EHLO, MAIL], {}, b"554 5.5.1 Error: no valid recipients\r\n"),
    "over-size": (
        [EHLO, MAIL, RCPT],
        {"data_size_limit": 64},
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n",
    ),
    "no-chunking": (
        [EHLO, MAIL, RCPT],
        {"chunking": False},
        b"502 5.5.1 Error: command not implemented\r\n",
    ),
    "auth-required": (
        [EHLO],
        {"auth_required": True, "authenticator": lambda *a: None, "auth_require_tls": False},
        b"530 5.7.0 Authentication required\r\n",
    ),
}


@pytest.mark.parametrize("last", [True, False], ids=["LAST", "not-last"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_chunk_is_consumed_never_executed(case: str, last: bool) -> None:
    setup, options, refusal = REFUSALS[case]
    spy = Spy()
    with running(spy, **options) as c, Raw(c.port) as raw:
        dialog(raw, setup)
        raw.send(b"BDAT %d%s\r\n" % (len(TX), b" LAST" if last else b"") + TX)
        assert raw.reply() == refusal
        raw.send(b"NOOP\r\n")  # the chunk's own NOOP must not have been read as a command
        assert raw.reply() == b"250 2.0.0 OK\r\n"
        raw.send(b"QUIT\r\n")
        assert raw.read_to_eof() == b"221 2.0.0 Bye\r\n"
    assert spy.evil() == []
    assert [e for e in spy.log if e[0] == "DATA"] == []


def test_chunks_after_a_failed_chunk_are_refused_and_consumed_until_rset() -> None:
    spy = Spy()
    with running(spy, data_size_limit=100) as c, Raw(c.port) as raw:
        dialog(raw, [EHLO, MAIL, RCPT])
        raw.send(b"BDAT 90\r\n" + b"x" * 90)
        assert raw.reply() == b"250 2.0.0 90 octets received\r\n"
        raw.send(b"BDAT %d\r\n" % len(TX) + TX)  # 90 + len(TX) > 100
        assert raw.reply().startswith(b"552 5.3.4")
        raw.send(b"BDAT %d LAST\r\n" % len(TX) + TX)
        assert raw.reply() == b"503 5.5.1 Error: this message was refused; send RSET\r\n"
        raw.send(b"RSET\r\nNOOP\r\n")
        assert raw.replies(2) == [b"250 2.0.0 OK\r\n", b"250 2.0.0 OK\r\n"]
    assert spy.evil() == []
    assert [e for e in spy.log if e[0] == "DATA"] == []


def test_null_bdat_without_last_is_refused_and_the_next_command_is_read() -> None:
    spy = Spy()
    with running(spy) as c, Raw(c.port) as raw:
        dialog(raw, [EHLO, MAIL, RCPT])
        raw.send(b"BDAT 0\r\nNOOP\r\n")
        assert raw.replies(2) == [b"501 5.5.4 Error: BDAT 0 without LAST\r\n", b"250 2.0.0 OK\r\n"]


def test_checklist_vector_before_mail() -> None:
    """``BDAT 9 LAST\\r\\nMAIL FROM`` before MAIL: 503, then NOOP gets 250 (go-smtp #315)."""
    with running(Spy()) as c, Raw(c.port) as raw:
        dialog(raw, [EHLO])
        raw.send(b"BDAT 9 LAST\r\nMAIL FROM")
        assert raw.reply() == b"503 5.5.1 Error: need MAIL command\r\n"
        raw.send(b"NOOP\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"


@pytest.mark.parametrize(
    "size",
    [
        b"x",
        b"-1",
        b"+5",
        b"5 LAST extra",
        b"18446744073709551616",  # 2**64: does not fit the size type
        b"0000000000000000000000005",  # over the digit-count limit
        b"",
        b"5x",
    ],
)
def test_unreadable_size_is_fatal(size: bytes) -> None:
    """The chunk cannot be skipped when its size is unknown: 521 and close (Postfix)."""
    spy = Spy()
    with running(spy) as c, Raw(c.port) as raw:
        dialog(raw, [EHLO, MAIL, RCPT])
        raw.send(b"BDAT " + size + b"\r\n" + TX)
        assert raw.read_to_eof() == b"521 5.5.4 Syntax: BDAT count [LAST]\r\n"
    assert spy.evil() == []


def test_suricata_coalesced_chunks() -> None:
    """The Suricata review case: two chunks and their commands in one segment. (The
    checklist writes ``BDAT 5\\r\\nabcBDAT 2 LAST...``; with 5 the chunk would be
    ``abcBD``, so the vector meant 3.)"""
    spy = Spy()
    with running(spy) as c, Raw(c.port) as raw:
        dialog(raw, [EHLO, MAIL, RCPT])
        raw.send(b"BDAT 3\r\nabcBDAT 2 LAST\r\nde")
        assert raw.replies(2) == [b"250 2.0.0 3 octets received\r\n", b"250 2.0.0 OK\r\n"]
    assert spy.log[-1] == ("DATA", b"abcde")


@pytest.mark.parametrize("seed", range(4))
def test_chunk_boundaries_do_not_depend_on_segments(seed: int) -> None:
    """Chunks and refusals, written in random segments: the same replies every time."""
    rng = random.Random(seed)
    stream = b"BDAT %d\r\n" % len(TX) + TX + b"BDAT 0\r\n" + b"BDAT %d LAST\r\n" % len(TX) + TX
    cuts = sorted(rng.sample(range(1, len(stream)), 10))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    spy = Spy()
    with running(spy) as c, Raw(c.port) as raw:
        dialog(raw, [EHLO, MAIL, RCPT])
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            raw.send(piece)
            time.sleep(0.003)
        assert raw.replies(3) == [
            b"250 2.0.0 %d octets received\r\n" % len(TX),
            b"501 5.5.4 Error: BDAT 0 without LAST\r\n",
            # a refused chunk spoils the message (Postfix): the LAST one is refused too
            b"503 5.5.1 Error: this message was refused; send RSET\r\n",
        ]
        raw.send(b"BDAT %d LAST\r\n" % len(TX) + TX)  # the transaction ended at LAST
        assert raw.reply() == b"503 5.5.1 Error: need MAIL command\r\n"
    assert [e for e in spy.log if e[0] == "DATA"] == []
    assert spy.evil() == []


def test_data_is_refused_inside_a_bdat_transaction() -> None:
    spy = Spy()
    with running(spy) as c, Raw(c.port) as raw:
        dialog(raw, [EHLO, MAIL, RCPT])
        raw.send(b"BDAT 3\r\nabc")
        assert raw.reply() == b"250 2.0.0 3 octets received\r\n"
        raw.send(b"DATA\r\n")  # DATA and BDAT do not mix (Postfix's text)
        assert raw.reply() == b"503 5.5.1 Error: DATA after BDAT\r\n"
        raw.send(b"BDAT 2 LAST\r\nde")
        assert raw.reply() == b"250 2.0.0 OK\r\n"
    assert spy.log[-1] == ("DATA", b"abcde")
