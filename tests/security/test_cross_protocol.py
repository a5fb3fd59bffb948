"""Checklist B10, cross-protocol noise: HTTP on the SMTP port, and a TLS client that
speaks TLS to the plaintext port."""

from __future__ import annotations

import ssl
import time

import pytest

from ferrosmtp import handlers
from tests.security.support import read_replies
from tests.server.support import Raw, running

HTTP_502 = b"502 5.7.0 Error: HTTP command received, this is an SMTP server\r\n"


@pytest.mark.parametrize(
    "request_",
    [
        b"GET / HTTP/1.1\r\nHost: mx.test\r\n\r\n",
        b"POST /form HTTP/1.1\r\nHost: mx.test\r\nContent-Length: 4\r\n\r\nRCPT",
        b"CONNECT mx.test:25 HTTP/1.1\r\n\r\n",
        b"HEAD / HTTP/1.0\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\n\r\n",
    ],
)
@pytest.mark.parametrize("after_ehlo", [False, True])
def test_http_is_refused_and_closed(request_: bytes, after_ehlo: bool) -> None:
    """A browser form posting to the SMTP port (the old cross-protocol spam trick) gets
    one refusal and EOF: none of its lines is run as SMTP."""
    with running(handlers.Sink()) as c, Raw(c.port) as raw:
        raw.reply()
        if after_ehlo:
            raw.send(b"EHLO client.example\r\n")
            raw.reply()
        raw.send(request_)
        assert raw.read_to_eof() == HTTP_502


def client_hello() -> bytes:
    """The first flight of a real TLS client (what an implicit-TLS client sends to 25)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="mx.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16"
    return hello


def test_client_hello_on_the_plaintext_port_is_never_run_as_commands() -> None:
    with running(handlers.Sink(), timeout=1) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"EHLO client.example\r\n")  # not the first bytes: the early check is past
        raw.reply()
        raw.send(client_hello())
        replies = read_replies(raw.sock, 5)
    # Whatever the answer, it refuses (5xx) or times out (421); nothing is accepted.
    assert all(line[:1] in (b"4", b"5") for line in replies.split(b"\r\n") if line), replies


def test_client_hello_on_the_plaintext_port_closes() -> None:
    """Checklist B10: a TLS client will never understand a reply; close at once instead
    of leaving it (and a connection slot) to the idle timeout."""
    with running(handlers.Sink()) as c, Raw(c.port) as raw:
        raw.reply()
        started = time.monotonic()
        raw.send(client_hello())
        assert raw.read_to_eof(timeout=3) == b""
        assert time.monotonic() - started < 3
