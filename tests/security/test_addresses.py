"""Checklist B16-B22 live: the address edge cases a handler would otherwise have to get
right itself. For every accepted address the test checks the exact string the handler
receives (address confusion is the attack: a quoted ``"a@b"@c`` must not become
``a@b@c``, a source route must not become the mailbox)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ferrosmtp import handlers
from tests.server.support import Raw, running


class Spy:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, list[str]]] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.seen.append(("MAIL", address, options))
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.seen.append(("RCPT", address, options))
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, Spy]]:
    spy = Spy()
    with running(spy) as c:
        yield c.port, spy


def local(n: int) -> str:
    return "l" * n


def domain(n: int) -> str:
    """A valid domain of exactly n octets (labels of at most 63)."""
    labels = []
    left = n
    while left > 0:
        size = min(63, left)
        if left - size == 1:  # never leave room for just a dot
            size -= 1
        labels.append("d" * size)
        left -= size + 1
    return ".".join(labels)


def path_of(total: int) -> str:
    """``<local@domain>`` of exactly ``total`` octets, brackets included."""
    text = f"<{local(64)}@{domain(total - 67)}>"
    assert len(text) == total
    return text


# (MAIL argument, expected code, the address the handler sees or None)
MAIL_CASES: list[tuple[bytes, int, str | None]] = [
    (b"FROM:<>", 250, "<>"),
    (b"FROM:<> SIZE=100", 250, "<>"),
    (b'FROM:<"a@b"@c.example>', 250, '"a@b"@c.example'),
    (b'FROM:<"john doe"@example.com>', 250, '"john doe"@example.com'),
    (b'FROM:<"a\\"b"@x.example>', 250, '"a\\"b"@x.example'),
    (b'FROM:<"unterminated@x.example>', 501, None),
    (b'FROM:<"\x01"@x.example>', 500, None),
    (b"FROM:<a\\b@x.example>", 501, None),
    (b"FROM:<a@b@c.example>", 501, None),
    (b"FROM:<" + local(64).encode() + b"@x.example>", 250, local(64) + "@x.example"),
    (b"FROM:<" + local(65).encode() + b"@x.example>", 501, None),
    (b"FROM:" + path_of(256).encode(), 250, path_of(256)[1:-1]),
    (b"FROM:" + path_of(257).encode(), 501, None),
    ("FROM:<δοκιμή@παράδειγμα.δοκιμή>".encode(), 553, None),
    ("FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8".encode(), 250, "δοκιμή@παράδειγμα.δοκιμή"),
    (("FROM:<" + "δ" * 32 + "@x.example> SMTPUTF8").encode(), 250, "δ" * 32 + "@x.example"),
    (("FROM:<" + "€" * 22 + "@x.example> SMTPUTF8").encode(), 501, None),  # 66 octets
    (b"FROM:<\xc0\xaf@x.example> SMTPUTF8", 501, None),  # overlong encoding
    (b"FROM:<a\xed\xa0\x80@x.example> SMTPUTF8", 501, None),  # a surrogate
    (b"FROM:<a\xff@x.example> SMTPUTF8", 501, None),
    (b"FROM:<a\xce@x.example> SMTPUTF8", 501, None),  # truncated sequence
    (b"FROM:<\xc0\xaf@x.example>", 501, None),  # invalid UTF-8, SMTPUTF8 or not
    (b"FROM:<a@x.example> SMTPUTF8=yes", 501, None),
    (b"FROM: <spaced@x.example>", 250, "spaced@x.example"),  # lenient, like Postfix
    (b"FROM:", 501, None),
    (b"FROM:<a@x.example> BOGUS=1", 555, None),
    (b"FROM:<@a.example:user@c.example>", 250, "user@c.example"),
]


@pytest.mark.parametrize(
    ("arg", "code", "seen"), MAIL_CASES, ids=[repr(c[0])[2:40] for c in MAIL_CASES]
)
def test_mail_from(server: tuple[int, Spy], arg: bytes, code: int, seen: str | None) -> None:
    port, spy = server
    before = len(spy.seen)
    with Raw(port) as raw:
        raw.reply()
        raw.send(b"EHLO client.example\r\n")
        raw.reply()
        raw.send(b"MAIL " + arg + b"\r\n")
        reply = raw.reply()
        assert int(reply[:3]) == code, reply
        raw.send(b"RSET\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"
    new = spy.seen[before:]
    assert [entry[1] for entry in new] == ([] if seen is None else [seen])


RCPT_CASES: list[tuple[bytes, int, str | None]] = [
    (b"TO:<>", 501, None),
    (b"TO:<Postmaster>", 250, "Postmaster"),
    (b"TO:<postMASTER>", 250, "postMASTER"),
    (b"TO:<Postmaster@mx.test>", 250, "Postmaster@mx.test"),
    (b"TO:<@a.example,@b.example:user@c.example>", 250, "user@c.example"),
    (b"TO:<@a.example:victim@external.example>", 250, "victim@external.example"),
    (b"TO:<@:user@c.example>", 501, None),
    (b"TO:<@a.example,@b.example user@c.example>", 501, None),
    (b"TO:<@a.example@b.example:user@c.example>", 501, None),
    (b"TO:<@a.example,:user@c.example>", 501, None),
    (b"TO:<user@[192.0.2.1]>", 250, "user@[192.0.2.1]"),
    (b"TO:<user@[IPv6:2001:db8::1]>", 250, "user@[IPv6:2001:db8::1]"),
    (b"TO:<user@[IPv6:::ffff:192.0.2.1]>", 250, "user@[IPv6:::ffff:192.0.2.1]"),
    (b"TO:<user@[256.1.1.1]>", 501, None),
    (b"TO:<user@[IPv6:2001:db8::1::2]>", 501, None),
    (b"TO:<user@[IPv6:fe80::1%25eth0]>", 501, None),
    (b"TO:<user@[1.2.3]>", 501, None),
    (b"TO:<user@[foo:bar]>", 501, None),
    (b"TO:<user@[010.0.0.1]>", 501, None),
    (b'TO:<"a@b"@c.example>', 250, '"a@b"@c.example'),
    (b"TO:<victim%external.example@ours.example>", 250, "victim%external.example@ours.example"),
    (b"TO:<user@" + b"x" * 64 + b".example>", 501, None),  # a 64-octet label
    (b"TO:<user@a..b.example>", 501, None),
    (b"TO:<user@under_score.example>", 501, None),
    ("TO:<ü@example.net>".encode(), 553, None),  # the MAIL had no SMTPUTF8
    (b"TO:<b@example.net> NOTIFY=NEVER,SUCCESS", 501, None),
    (b"TO:<b@example.net> NOTIFY=SUCCESS ORCPT=rfc822;b+40example.net", 250, "b@example.net"),
]


@pytest.mark.parametrize(
    ("arg", "code", "seen"), RCPT_CASES, ids=[repr(c[0])[2:40] for c in RCPT_CASES]
)
def test_rcpt_to(server: tuple[int, Spy], arg: bytes, code: int, seen: str | None) -> None:
    port, spy = server
    with Raw(port) as raw:
        raw.reply()
        raw.send(b"EHLO client.example\r\n")
        raw.reply()
        raw.send(b"MAIL FROM:<sender@example.com>\r\n")
        assert raw.reply().startswith(b"250 ")
        before = len(spy.seen)
        raw.send(b"RCPT " + arg + b"\r\n")
        reply = raw.reply()
        assert int(reply[:3]) == code, reply
        new = spy.seen[before:]
    assert [entry[1] for entry in new] == ([] if seen is None else [seen])


def test_smtputf8_recipient_after_smtputf8_mail(server: tuple[int, Spy]) -> None:
    port, spy = server
    with Raw(port) as raw:
        raw.reply()
        raw.send(b"EHLO client.example\r\n")
        assert b"250-SMTPUTF8\r\n" in raw.reply()
        raw.send("MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8\r\n".encode())
        assert raw.reply().startswith(b"250 ")
        raw.send("RCPT TO:<ü@exämple.net>\r\n".encode())
        assert raw.reply().startswith(b"250 ")
    assert spy.seen[-1][1] == "ü@exämple.net"


def test_smtputf8_disabled() -> None:
    with running(handlers.Sink(), enable_SMTPUTF8=False) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"EHLO client.example\r\n")
        assert b"SMTPUTF8" not in raw.reply()
        raw.send("MAIL FROM:<δ@x.example> SMTPUTF8\r\n".encode())
        assert raw.reply()[:1] == b"5"
        raw.send("MAIL FROM:<δ@x.example>\r\n".encode())
        assert raw.reply()[:1] == b"5"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"mail from:<lower@example.com>", 250),  # verbs are case-insensitive
        (b"NOOP\x00", 500),
        (b"N\xc3\x96OP", 500),  # 8-bit in the command word
        (b"RSET now", 501),
        (b"DATA now", 501),
        (b"QUIT now", 501),
        (b"VRFY postmaster", 252),
        (b"EXPN staff", 502),
        (b"HELP", 214),
        (b"", 500),
        (b" ", 500),
    ],
)
def test_command_syntax(server: tuple[int, Spy], line: bytes, code: int) -> None:
    port, _ = server
    with Raw(port) as raw:
        raw.reply()
        raw.send(b"EHLO client.example\r\n")
        raw.reply()
        raw.send(line + b"\r\n")
        reply = raw.reply()
        assert int(reply[:3]) == code, reply


def test_noop_vrfy_help_rset_need_no_ehlo(server: tuple[int, Spy]) -> None:
    """RFC 5321 §4.1.4: usable at any time, no 503 before EHLO."""
    port, _ = server
    with Raw(port) as raw:
        raw.reply()
        for command, code in [(b"NOOP", 250), (b"VRFY x", 252), (b"HELP", 214), (b"RSET", 250)]:
            raw.send(command + b"\r\n")
            assert int(raw.reply()[:3]) == code


def test_sequencing(server: tuple[int, Spy]) -> None:
    port, _ = server
    with Raw(port) as raw:
        raw.reply()
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert raw.reply().startswith(b"503 ")
        raw.send(b"EHLO client.example\r\n")
        raw.reply()
        raw.send(b"RCPT TO:<b@example.net>\r\n")
        assert raw.reply().startswith(b"503 ")  # RCPT without MAIL (§3.3)
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert raw.reply().startswith(b"250 ")
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert raw.reply().startswith(b"503 ")  # nested MAIL
        raw.send(b"DATA\r\n")
        assert raw.reply()[:3] in (b"503", b"554")  # no valid recipient
        raw.send(b"EHLO client.example\r\n")  # a new EHLO resets the transaction
        raw.reply()
        raw.send(b"RCPT TO:<b@example.net>\r\n")
        assert raw.reply().startswith(b"503 ")


class KeepContent:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def test_eight_bit_content_in_strict_ascii_mode_is_refused_permanently() -> None:
    with running(KeepContent(), decode_data=True, enable_SMTPUTF8=False) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"EHLO client.example\r\n")
        raw.reply()
        raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        assert [r[:3] for r in raw.replies(3)] == [b"250", b"250", b"354"]
        raw.send("Subject: ü\r\n\r\nü\r\n.\r\n".encode())
        assert raw.reply()[:1] == b"5"
