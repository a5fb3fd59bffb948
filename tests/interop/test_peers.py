"""Sanity tests for the real peers in tests/peers.py: each one works end to end.

These exercise only third-party software (smtplib, aiosmtpd, swaks, Postfix), so a failure
here means the peer harness or the machine is broken, not ferrosmtp. Other interop tests
build on the same fixtures to check ferrosmtp against these peers.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

from tests.peers import (
    PEER_SASL_PASSWORD,
    PEER_SASL_USER,
    PostfixRelay,
    PostfixServer,
    RecordingHandler,
    SmtpSink,
    swaks,
)

pytestmark = pytest.mark.interop

TIMEOUT = 15.0


def _message(subject: str, body: str, to: str = "bob@example.org") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def test_smtp_sink_counts_and_dumps(smtp_sink: SmtpSink) -> None:
    # A leading dot checks that the dump holds the message after dot-unstuffing.
    body = "hello sink\n.leading dot line\nend\n"
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=TIMEOUT) as client:
        features = client.ehlo("client.example.com")
        assert features[0] == 250
        assert client.has_extn("pipelining")
        refused = client.send_message(
            _message("sink test", body),
            from_addr="alice@example.com",
            to_addrs=["bob@example.org", "carol@example.org"],
        )
        assert refused == {}

    counters = smtp_sink.wait_counters(messages=1, sessions=1, timeout=TIMEOUT)
    assert counters.messages == 1
    assert counters.quits == 1
    [dumped] = smtp_sink.messages()
    assert dumped.client_addr == "127.0.0.1"
    assert dumped.helo == "client.example.com"
    assert dumped.mail_from == "alice@example.com"
    assert dumped.rcpt_tos == ("bob@example.org", "carol@example.org")
    parsed = dumped.message()
    assert parsed["Subject"] == "sink test"
    assert b"\n.leading dot line\n" in dumped.content
    assert b"..leading" not in dumped.content


def test_smtp_sink_flags_shape_ehlo(smtp_sink_factory: Callable[..., SmtpSink]) -> None:
    sink = smtp_sink_factory(pipelining=False, eightbitmime=False, dsn=False, auth=False)
    with smtplib.SMTP(sink.host, sink.port, timeout=TIMEOUT) as client:
        client.ehlo("client.example.com")
        for gone in ("pipelining", "8bitmime", "dsn", "auth"):
            assert not client.has_extn(gone), gone
        assert client.has_extn("enhancedstatuscodes")
    rejecting = smtp_sink_factory(reject=["RCPT"])
    with smtplib.SMTP(rejecting.host, rejecting.port, timeout=TIMEOUT) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("alice@example.com", ["bob@example.org"], b"Subject: x\r\n\r\nx\r\n")
    assert rejecting.wait_counters(sessions=1, timeout=TIMEOUT).messages == 0


def test_postfix_relays_into_aiosmtpd(
    postfix_relay_factory: Callable[..., PostfixRelay],
    aiosmtpd_recording: tuple[Any, RecordingHandler],
) -> None:
    controller, handler = aiosmtpd_recording
    relay = postfix_relay_factory(controller.port, debug_peer=True)
    with smtplib.SMTP(relay.host, relay.port, timeout=TIMEOUT) as client:
        client.ehlo("client.example.com")
        # Postfix's own smtpd advertises both; its smtp client pipelines toward the relay
        # host when offered (stock aiosmtpd does not offer it) and never sends BDAT.
        assert client.has_extn("pipelining")
        assert client.has_extn("chunking")
        refused = client.send_message(
            _message("relay test", "through postfix\n"),
            from_addr="alice@example.com",
            to_addrs=["bob@example.net", "carol@example.net"],
        )
        assert refused == {}

    [got] = handler.wait(1, timeout=30)
    assert got.mail_from == "alice@example.com"
    assert sorted(got.rcpt_tos) == ["bob@example.net", "carol@example.net"]
    assert got.helo == relay.myhostname
    assert b"by pfx-relay.localdomain (Postfix)" in got.content
    assert b"Subject: relay test" in got.content
    assert b"through postfix" in got.content
    relay.wait_queue_empty(timeout=TIMEOUT)
    log = relay.wait_log(
        r"to=<carol@example\.net>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+.*"
        r"status=sent"
    )
    assert str(controller.port) in log.group(0)
    # debug_peer_level=2 traces the smtp client's side of the dialog.
    relay.wait_log(r"> 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: MAIL FROM:<alice@example\.com>")


def test_postfix_server_starttls_delivers_to_maildir(postfix_server: PostfixServer) -> None:
    body = "delivered over STARTTLS\n"
    with smtplib.SMTP(postfix_server.host, postfix_server.port, timeout=TIMEOUT) as client:
        client.ehlo("client.example.com")
        assert client.has_extn("starttls")
        code, _ = client.starttls(context=postfix_server.client_ssl_context())
        assert code == 220
        sock = client.sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        client.ehlo("client.example.com")
        refused = client.send_message(
            _message("tls test", body, to="bob@example.org"),
            from_addr="alice@example.com",
            to_addrs=["bob@example.org", "carol@example.org"],
        )
        assert refused == {}

    [bob] = postfix_server.wait_messages(1, recipient="bob@example.org", timeout=30)
    [carol] = postfix_server.wait_messages(1, recipient="carol@example.org", timeout=30)
    for got, rcpt in ((bob, "bob@example.org"), (carol, "carol@example.org")):
        parsed = got.message()
        assert parsed["Delivered-To"] == rcpt
        assert parsed["Return-Path"] == "<alice@example.com>"
        assert parsed["Subject"] == "tls test"
        assert got.body == body.encode()
        # Postfix records the TLS session in its Received header.
        assert b"with ESMTPS id" in got.content
    postfix_server.wait_queue_empty(timeout=TIMEOUT)


def _read_reply(sock: socket.socket, buf: bytearray) -> bytes:
    """One complete (possibly multi-line) SMTP reply; bounded by the socket timeout."""
    while True:
        end = 0
        while (nl := buf.find(b"\r\n", end)) != -1:
            line = bytes(buf[end : nl + 2])
            end = nl + 2
            if len(line) >= 4 and line[3:4] == b" ":
                reply = bytes(buf[:end])
                del buf[:end]
                return reply
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed, pending {bytes(buf)!r}")
        buf += chunk


def test_postfix_server_accepts_bdat(postfix_server: PostfixServer) -> None:
    # smtplib cannot send BDAT, so speak it by hand: this is the peer for BDAT client tests.
    payload = [b"Subject: bdat test\r\nFrom: alice@example.com\r\n\r\n", b".no stuffing\r\n"]
    buf = bytearray()
    with socket.create_connection(postfix_server.address, timeout=TIMEOUT) as sock:
        assert _read_reply(sock, buf).startswith(b"220 ")
        sock.sendall(b"EHLO client.example.com\r\n")
        assert b"CHUNKING" in _read_reply(sock, buf).split(b"\r\n")[-2]
        sock.sendall(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<erin@example.org>\r\n")
        assert _read_reply(sock, buf).startswith(b"250 ")
        assert _read_reply(sock, buf).startswith(b"250 ")
        sock.sendall(b"BDAT %d\r\n%s" % (len(payload[0]), payload[0]))
        assert _read_reply(sock, buf).startswith(b"250 ")
        sock.sendall(b"BDAT %d LAST\r\n%s" % (len(payload[1]), payload[1]))
        assert b"queued as" in _read_reply(sock, buf)
        sock.sendall(b"QUIT\r\n")
        assert _read_reply(sock, buf).startswith(b"221 ")
    [got] = postfix_server.wait_messages(1, recipient="erin@example.org", timeout=30)
    assert got.message()["Subject"] == "bdat test"
    # BDAT content is taken literally: the leading dot is not unstuffed.
    assert got.body == b".no stuffing\n"
    assert b"with ESMTP id" in got.content


def test_postfix_server_auth_after_starttls(postfix_auth_server: PostfixServer) -> None:
    server = postfix_auth_server
    with smtplib.SMTP(server.host, server.port, timeout=TIMEOUT) as client:
        client.ehlo("client.example.com")
        # smtpd_tls_auth_only: no AUTH on the plaintext channel.
        assert not client.has_extn("auth")
        client.starttls(context=server.client_ssl_context())
        client.ehlo("client.example.com")
        assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        # auth_required: an unauthenticated RCPT is refused.
        client.mail("alice@example.com")
        code, _ = client.rcpt("bob@example.org")
        assert code == 554
        client.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(PEER_SASL_USER, "wrong password")
        client.login(PEER_SASL_USER, PEER_SASL_PASSWORD)
        refused = client.send_message(
            _message("auth test", "authenticated\n"),
            from_addr="alice@example.com",
            to_addrs=["bob@example.org"],
        )
        assert refused == {}
    [got] = server.wait_messages(1, recipient="bob@example.org", timeout=30)
    assert got.message()["Subject"] == "auth test"
    # smtpd_sasl_authenticated_header = yes puts the login name in Received.
    assert f"(Authenticated sender: {PEER_SASL_USER})".encode() in got.content

    # AUTH LOGIN through swaks (smtplib above preferred PLAIN).
    result = swaks(
        "--ehlo", "client.example.com",
        "--from", "alice@example.com",
        "--to", "carol@example.org",
        "--tls",
        "--auth", "LOGIN",
        "--auth-user", PEER_SASL_USER,
        "--auth-password", PEER_SASL_PASSWORD,
        "--header", "Subject: swaks auth login",
        port=server.port,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0 Authentication successful" in result.stdout
    [got] = server.wait_messages(1, recipient="carol@example.org", timeout=30)
    assert got.message()["Subject"] == "swaks auth login"


def test_postfix_relay_tls_into_postfix_server(
    postfix_server_factory: Callable[..., PostfixServer],
    postfix_relay_factory: Callable[..., PostfixRelay],
) -> None:
    # Both TLS knobs at once: the server insists on STARTTLS, the relay's smtp client
    # must encrypt and checks the chain against the server's test CA.
    server = postfix_server_factory(require_tls=True)
    relay = postfix_relay_factory(
        server.port, smtp_tls_security_level="encrypt", smtp_tls_ca_file=server.ca_cert_path
    )
    with smtplib.SMTP(relay.host, relay.port, timeout=TIMEOUT) as client:
        refused = client.send_message(
            _message("relay over tls", "encrypted hop\n", to="dave@example.org"),
            from_addr="alice@example.com",
            to_addrs=["dave@example.org"],
        )
        assert refused == {}
    [got] = server.wait_messages(1, recipient="dave@example.org", timeout=30)
    assert got.message()["Subject"] == "relay over tls"
    assert b"by pfx-server.localdomain (Postfix) with ESMTPS" in got.content
    relay.wait_log(r"Trusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]")
    relay.wait_queue_empty(timeout=TIMEOUT)


def test_swaks_against_aiosmtpd(aiosmtpd_recording: tuple[Any, RecordingHandler]) -> None:
    controller, handler = aiosmtpd_recording
    result = swaks(
        "--ehlo", "client.example.com",
        "--from", "alice@example.com",
        "--to", "bob@example.net,carol@example.net",
        "--header", "Subject: swaks direct",
        "--body", "hello from swaks",
        port=controller.port,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-> MAIL FROM:<alice@example.com>" in result.stdout
    assert "<-  221" in result.stdout
    [got] = handler.wait(1, timeout=TIMEOUT)
    assert got.helo == "client.example.com"
    assert got.rcpt_tos == ("bob@example.net", "carol@example.net")
    assert b"Subject: swaks direct" in got.content
    assert b"hello from swaks" in got.content
