"""ferrosmtp's server against real clients: Postfix relaying into it (pipelined, and over
STARTTLS), swaks (pipelining, TLS, implicit TLS, AUTH), aiosmtplib."""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest

from ferrosmtp.server import AuthResult
from tests.peers import PostfixRelay, swaks
from tests.server.support import HOST, Certs, running

pytestmark = pytest.mark.interop


class Store:
    """Keeps completed envelopes; ``wait(n)`` for mail that arrives asynchronously."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.sessions: list[Any] = []
        self._arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._arrived:
            self.envelopes.append(envelope)
            self.sessions.append(session)
            self._arrived.notify_all()
        return "250 2.0.0 OK: stored"

    def wait(self, count: int, timeout: float = 30) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.envelopes) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.envelopes)} of {count} messages arrived")
                self._arrived.wait(left)
            return list(self.envelopes)


def login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    return AuthResult(success=data == (b"alice", b"pw"), handled=False)


def message(subject: str, body: str) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "alice@example.com"
    m["To"] = "bob@example.net"
    m["Subject"] = subject
    m.set_content(body)
    return m


def test_postfix_relays_into_ferrosmtp_with_pipelining(
    postfix_relay_factory: Callable[..., PostfixRelay],
) -> None:
    store = Store()
    with running(store) as c:
        relay = postfix_relay_factory(c.port, debug_peer=True)
        with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
            body = "first line\n.a line that starts with a dot\n..two dots\nlast\n"
            client.send_message(
                message("via postfix", body),
                from_addr="alice@example.com",
                to_addrs=["bob@example.net", "carol@example.net"],
            )
        [envelope] = store.wait(1)
        relay.wait_queue_empty(timeout=30)
        log = relay.maillog()
    assert envelope.mail_from == "alice@example.com"
    assert sorted(envelope.rcpt_tos) == ["bob@example.net", "carol@example.net"]
    assert b"by pfx-relay.localdomain (Postfix)" in envelope.content
    assert b"\r\n.a line that starts with a dot\r\n..two dots\r\nlast\r\n" in envelope.content
    assert "Using ESMTP PIPELINING" in log
    assert "status=sent (250 2.0.0 OK: stored)" in log


def test_postfix_relays_into_ferrosmtp_over_starttls(
    postfix_relay_factory: Callable[..., PostfixRelay], tmp_path: Any
) -> None:
    certs = Certs()
    ca_file = tmp_path / "ca.pem"
    certs.ca.cert_pem.write_to_path(str(ca_file))
    store = Store()
    with running(store, tls_context=certs.server_context(), require_starttls=True) as c:
        relay = postfix_relay_factory(
            c.port, smtp_tls_security_level="encrypt", smtp_tls_ca_file=ca_file
        )
        with smtplib.SMTP(relay.host, relay.port, timeout=30) as client:
            client.send_message(
                message("tls relay", "secret\n"), "alice@example.com", ["bob@example.net"]
            )
        [envelope] = store.wait(1)
        relay.wait_queue_empty(timeout=30)
    assert store.sessions[0].ssl is not None
    assert store.sessions[0].ssl["cipher"] is not None
    assert b"secret" in envelope.content


def test_swaks_plain_and_pipelined() -> None:
    store = Store()
    with running(store) as c:
        plain = swaks("--to", "bob@example.net", "--from", "alice@example.com", port=c.port)
        assert plain.returncode == 0, plain.stdout
        piped = swaks(
            "--to",
            "bob@example.net,carol@example.net",
            "--from",
            "alice@example.com",
            "--pipeline",
            port=c.port,
        )
        assert piped.returncode == 0, piped.stdout
    # swaks shows a pipelined group as the commands, then the replies together
    assert " -> MAIL FROM:<alice@example.com>\n -> RCPT TO:<bob@example.net>\n" in piped.stdout
    assert len(store.envelopes) == 2
    assert store.envelopes[1].rcpt_tos == ["bob@example.net", "carol@example.net"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_starttls_and_auth(mechanism: str) -> None:
    certs = Certs()
    store = Store()
    with running(store, tls_context=certs.server_context(), authenticator=login) as c:
        result = swaks(
            "--to",
            "bob@example.net",
            "--from",
            "alice@example.com",
            "--tls",
            "--auth",
            mechanism,
            "--auth-user",
            "alice",
            "--auth-password",
            "pw",
            port=c.port,
        )
        assert result.returncode == 0, result.stdout
        wrong = swaks(
            "--to",
            "bob@example.net",
            "--from",
            "alice@example.com",
            "--tls",
            "--auth",
            mechanism,
            "--auth-user",
            "alice",
            "--auth-password",
            "nope",
            port=c.port,
        )
    assert wrong.returncode != 0 and "535 5.7.8" in wrong.stdout
    assert "235 2.7.0 Authentication successful" in result.stdout
    assert len(store.envelopes) == 1 and store.sessions[0].authenticated


def test_swaks_implicit_tls_with_auth() -> None:
    certs = Certs()
    store = Store()
    with running(store, ssl_context=certs.server_context(), authenticator=login) as c:
        result = swaks(
            "--to",
            "bob@example.net",
            "--from",
            "alice@example.com",
            "--tls-on-connect",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "pw",
            port=c.port,
        )
    assert result.returncode == 0, result.stdout
    assert len(store.envelopes) == 1


def test_aiosmtplib_with_starttls_and_login() -> None:
    certs = Certs()
    store = Store()
    with running(store, tls_context=certs.server_context(), authenticator=login) as c:

        async def send() -> Any:
            return await aiosmtplib.send(
                message("aiosmtplib", "hi\n"),
                hostname=HOST,
                port=c.port,
                start_tls=True,
                tls_context=certs.client_context(),
                username="alice",
                password="pw",
            )

        errors, reply = asyncio.run(send())
    assert errors == {}
    assert "2.0.0 OK: stored" in reply
    assert store.sessions[0].authenticated and store.sessions[0].ssl is not None
