"""Checklist B5 (STARTTLS command injection, CVE-2011-0411) and B9 (d) with TLS really
configured: plaintext that rides along with STARTTLS is never executed, before or after
the handshake, and a client that never finishes the handshake is dropped."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.server.support import HOST, Certs, Raw, running

INJECTED = b"MAIL FROM:<evil@attacker.example>\r\n"


class Spy:
    """Records every MAIL the handler is asked about, and every message."""

    def __init__(self) -> None:
        self.senders: list[str] = []
        self.messages: list[str] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.senders.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.mail_from)
        return "250 OK"


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


@pytest.fixture
def tls_server(certs: Certs) -> Iterator[tuple[int, Spy]]:
    spy = Spy()
    with running(spy, tls_context=certs.server_context(), tls_handshake_timeout=1) as c:
        yield c.port, spy


def ehlo(raw: Raw) -> bytes:
    raw.reply()
    raw.send(b"EHLO client.example\r\n")
    reply = raw.reply()
    assert b"250-STARTTLS\r\n" in reply
    return reply


@pytest.mark.parametrize("tail", [b"NOOP\r\n", INJECTED, b"RSET\r\n" + INJECTED, b"\r\n", b"X"])
def test_commands_in_the_starttls_segment_get_554_and_close(
    tls_server: tuple[int, Spy], tail: bytes
) -> None:
    port, spy = tls_server
    with Raw(port) as raw:
        ehlo(raw)
        raw.send(b"STARTTLS\r\n" + tail)
        rest = raw.read_to_eof()
    assert rest == b"554 5.5.1 Error: commands pipelined after STARTTLS\r\n"
    assert spy.senders == []


def test_plaintext_after_the_220_closes_without_a_reply(tls_server: tuple[int, Spy]) -> None:
    """Checklist B5 (b): the 220 came, then plaintext instead of a ClientHello."""
    port, spy = tls_server
    with Raw(port) as raw:
        ehlo(raw)
        raw.send(b"STARTTLS\r\n")
        assert raw.reply() == b"220 2.0.0 Ready to start TLS\r\n"
        raw.send(INJECTED + b"NOOP\r\n")
        rest = raw.read_to_eof()
    assert b"250" not in rest
    assert spy.senders == []


def test_injection_then_handshake_never_gets_a_tls_session(
    tls_server: tuple[int, Spy], certs: Certs
) -> None:
    """Checklist B5 (c): STARTTLS and MAIL in one segment, then the client (a MitM'd one)
    tries to go on with TLS: there is no 220, the handshake fails, and the injected MAIL
    was never executed in any form."""
    port, spy = tls_server
    with Raw(port) as raw:
        ehlo(raw)
        raw.send(b"STARTTLS\r\n" + INJECTED)
        assert raw.reply() == b"554 5.5.1 Error: commands pipelined after STARTTLS\r\n"
        with pytest.raises((ssl.SSLError, OSError)):
            tls = certs.client_context().wrap_socket(raw.sock, server_hostname="mx.test")
            tls.sendall(b"EHLO client.example\r\n")
            tls.recv(1000)
    assert spy.senders == []


def test_injection_in_its_own_segment_right_behind_starttls(
    tls_server: tuple[int, Spy], certs: Certs
) -> None:
    """The race version: MAIL written right after STARTTLS, before the 220 is read. The
    server either sees both in one read (554) or reads the MAIL as the start of a TLS
    handshake (which fails); it never runs it."""
    port, spy = tls_server
    for _ in range(5):
        with Raw(port) as raw:
            ehlo(raw)
            raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.send(b"STARTTLS\r\n")
            raw.send(INJECTED)
            rest = raw.read_to_eof()
        assert rest in (
            b"554 5.5.1 Error: commands pipelined after STARTTLS\r\n",
            b"220 2.0.0 Ready to start TLS\r\n",
        ), rest
    assert spy.senders == []


def tls_session(port: int, certs: Certs, before: bytes = b"") -> tuple[ssl.SSLSocket, bytes]:
    """EHLO, optional plaintext commands, STARTTLS and the handshake; returns the TLS
    socket and the plaintext replies to ``before``."""
    raw = Raw(port)
    ehlo(raw)
    replies = b""
    if before:
        raw.send(before)
        replies = raw.reply()
    raw.send(b"STARTTLS\r\n")
    assert raw.reply() == b"220 2.0.0 Ready to start TLS\r\n"
    assert raw.buf == b""
    tls = certs.client_context().wrap_socket(raw.sock, server_hostname="mx.test")
    tls.settimeout(5)
    return tls, replies


def tls_reply(tls: ssl.SSLSocket) -> bytes:
    out = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        chunk = tls.recv(65536)
        if not chunk:
            break
        out += chunk
        last = out.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
        if out.endswith(b"\r\n") and last[3:4] != b"-":
            break
    return out


def test_nothing_from_before_tls_survives_it(tls_server: tuple[int, Spy], certs: Certs) -> None:
    """RFC 3207 §4.2: a MAIL accepted in plaintext is forgotten: after TLS and EHLO, RCPT
    gets 503 (no transaction), and DATA cannot deliver the plaintext sender."""
    port, spy = tls_server
    tls, before = tls_session(port, certs, INJECTED)
    assert before == b"250 2.1.0 OK\r\n"
    with tls:
        tls.sendall(b"RCPT TO:<b@example.net>\r\n")
        assert tls_reply(tls) == b"503 5.5.1 Error: send HELO/EHLO first\r\n"
        tls.sendall(b"EHLO client.example\r\n")
        assert tls_reply(tls).startswith(b"250-mx.test\r\n")
        tls.sendall(b"RCPT TO:<b@example.net>\r\n")
        assert tls_reply(tls) == b"503 5.5.1 Error: need MAIL command\r\n"
        tls.sendall(b"DATA\r\n")
        assert tls_reply(tls).startswith(b"503 ")
    assert spy.messages == []


def test_after_tls_starttls_is_not_offered_and_is_refused(
    tls_server: tuple[int, Spy], certs: Certs
) -> None:
    port, spy = tls_server
    tls, _ = tls_session(port, certs)
    with tls:
        tls.sendall(b"EHLO client.example\r\n")
        reply = tls_reply(tls)
        assert reply.startswith(b"250-mx.test\r\n") and b"STARTTLS" not in reply
        tls.sendall(b"STARTTLS\r\n")
        assert tls_reply(tls) == b"554 5.5.1 Error: TLS already active\r\n"
        tls.sendall(b"MAIL FROM:<ok@example.com>\r\n")
        assert tls_reply(tls) == b"250 2.1.0 OK\r\n"  # the session goes on
    assert spy.senders == ["ok@example.com"]


@pytest.mark.parametrize("command", [b"STARTTLS now\r\n", b"STARTTLS\tx\r\n"])
def test_starttls_takes_no_argument(tls_server: tuple[int, Spy], command: bytes) -> None:
    """Unlike go-smtp's prefix match: an argument is a syntax error, not a STARTTLS."""
    port, _ = tls_server
    with Raw(port) as raw:
        ehlo(raw)
        raw.send(command)
        assert raw.reply()[:4] in (b"500 ", b"501 ")
        raw.send(b"NOOP\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"


def test_starttls_before_ehlo_is_refused(tls_server: tuple[int, Spy]) -> None:
    port, _ = tls_server
    with Raw(port) as raw:
        raw.reply()
        raw.send(b"STARTTLS\r\n")
        assert raw.reply() == b"503 5.5.1 Error: send EHLO first\r\n"


def test_a_client_that_never_sends_a_client_hello_is_dropped(tls_server: tuple[int, Spy]) -> None:
    """Checklist B9 (d): STARTTLS, 220, then silence: closed after tls_handshake_timeout
    (1 s here), even though the idle timeout is 300 s."""
    port, _ = tls_server
    with Raw(port) as raw:
        ehlo(raw)
        raw.send(b"STARTTLS\r\n")
        assert raw.reply() == b"220 2.0.0 Ready to start TLS\r\n"
        started = time.monotonic()
        assert raw.read_to_eof(timeout=15) == b""
        assert time.monotonic() - started < 15


def test_implicit_tls_silent_client_is_dropped(certs: Certs) -> None:
    """The same on an implicit-TLS port: no ClientHello, closed after the handshake
    timeout, with no SMTP byte ever sent in clear."""
    with running(Spy(), ssl_context=certs.server_context(), tls_handshake_timeout=1) as c:
        with socket.create_connection((HOST, c.port), timeout=15) as sock:
            started = time.monotonic()
            data = b""
            while time.monotonic() - started < 15:
                chunk = sock.recv(1000)
                if not chunk:
                    break
                data += chunk
            assert data == b""
            assert time.monotonic() - started < 15


class RefusesTLS:
    """A handle_STARTTLS that refuses the TLS session (say, a client certificate policy),
    written as a coroutine like every other hook of an asyncio handler."""

    async def handle_STARTTLS(self, server: Any, session: Any, envelope: Any) -> bool:
        return False


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_an_async_starttls_hook_can_refuse(certs: Certs) -> None:
    with running(RefusesTLS(), tls_context=certs.server_context()) as c, Raw(c.port) as raw:
        ehlo(raw)
        raw.send(b"STARTTLS\r\n")
        assert raw.reply() == b"220 2.0.0 Ready to start TLS\r\n"
        tls = certs.client_context().wrap_socket(raw.sock, server_hostname="mx.test")
        tls.settimeout(5)
        try:
            tls.sendall(b"EHLO client.example\r\n")
            reply = tls_reply(tls)
        except OSError:
            reply = b""  # closed: what a refusal looks like
        assert not reply.startswith(b"250"), reply
