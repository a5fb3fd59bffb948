"""Issue 10, faults 4-6, 11 and 12: the PROXY protocol's client address, and AUTH; each
replayed over a real socket against a live server. Every test here failed before the fix."""

from __future__ import annotations

import asyncio
import base64
import logging
import smtplib
import socket
import threading
from typing import Any

import pytest

from ferrosmtp.handlers import received_header
from ferrosmtp.server import AuthResult
from tests.server.support import HOST, Certs, Raw, running

GOOD = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n"
WRONG = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0guess") + b"\r\n"
OK = b"235 2.7.0 Authentication successful\r\n"
INVALID = b"535 5.7.8 Authentication credentials invalid\r\n"
BLOCKED = b"454 4.7.0 Error: too many authentication failures, try later\r\n"


def proxy_v1(client: str, port: int = 40000) -> bytes:
    return f"PROXY TCP4 {client} 192.0.2.1 {port} 25\r\n".encode()


class Proxied(Raw):
    """A client behind the load balancer: the PROXY header first, then SMTP."""

    def __init__(self, port: int, client: str) -> None:
        super().__init__(port)
        self.send(proxy_v1(client))


class Checker:
    """An authenticator that accepts alice/secret, and records what it was asked."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[Any] = []
        self.delay = delay

    async def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        self.calls.append(data)
        if self.delay:
            await asyncio.sleep(self.delay)
        return AuthResult(success=data == (b"alice", b"secret"), handled=False)


# -- fault 4: behind --proxy-protocol, everything is keyed on the proxied client -------------


def test_fault4_the_per_address_cap_counts_proxied_clients() -> None:
    """50 connections from a load balancer capped the whole site; now each client behind
    it has its own count."""
    with running(object(), proxy_protocol_timeout=5, max_connections_per_ip=2) as c:
        others = [Proxied(c.port, f"203.0.113.{i}") for i in range(1, 6)]
        try:
            for raw in others:  # five clients, one balancer: all served
                assert raw.reply().startswith(b"220 ")
            same = [Proxied(c.port, "198.51.100.9") for _ in range(3)]
            assert same[0].reply().startswith(b"220 ")
            assert same[1].reply().startswith(b"220 ")
            assert same[2].read_to_eof() == (
                b"421 4.7.0 mx.test Error: too many connections from your address\r\n"
            )
            for raw in same:
                raw.close()
        finally:
            for raw in others:
                raw.close()


def test_fault4_the_auth_lockout_counts_proxied_clients(caplog: pytest.LogCaptureFixture) -> None:
    """Ten failed logins from one client locked out everyone behind the balancer."""
    caplog.set_level(logging.INFO, logger="ferrosmtp.server")
    checker = Checker()
    options: dict[str, Any] = {
        "proxy_protocol_timeout": 5,
        "authenticator": checker,
        "auth_require_tls": False,
        "auth_failure_delay": 0,
        "max_auth_failures_per_ip": 2,
    }
    with running(object(), **options) as c:
        for _ in range(2):
            with Proxied(c.port, "203.0.113.7") as raw:
                raw.greet()
                raw.send(WRONG)
                assert raw.reply() == INVALID
        with Proxied(c.port, "203.0.113.7") as raw:  # the guesser is locked out
            raw.greet()
            raw.send(GOOD)
            assert raw.reply() == BLOCKED
        with Proxied(c.port, "203.0.113.8") as raw:  # another client is not
            raw.greet()
            raw.send(GOOD)
            assert raw.reply() == OK
    lines = [r.getMessage() for r in caplog.records if r.name == "ferrosmtp.server"]
    assert any(line.startswith("203.0.113.7:40000 failed AUTH PLAIN") for line in lines), lines
    assert any(line.startswith("203.0.113.8:40000 connected via 127.0.0.1:") for line in lines)
    assert not any("failed AUTH" in line and line.startswith("127.0.0.1") for line in lines)


# -- fault 5: proxy_data survives STARTTLS ---------------------------------------------------


class ProxiedSMTP(smtplib.SMTP):
    """smtplib behind a load balancer: the PROXY header goes first on its socket."""

    def __init__(self, header: bytes, host: str, port: int) -> None:
        self.header = header
        super().__init__(host, port, timeout=10)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        sock.sendall(self.header)
        return sock  # type: ignore[no-any-return]


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.seen.append((session.proxy_data, received_header(server, session, envelope)))
        return "250 OK"


def test_fault5_proxy_data_survives_starttls() -> None:
    certs = Certs()
    recorder = Recorder()
    with running(recorder, proxy_protocol_timeout=5, tls_context=certs.server_context()) as c:
        client = ProxiedSMTP(proxy_v1("203.0.113.7"), HOST, c.port)
        try:
            client.starttls(context=certs.client_context())
            client.sendmail("a@b.example", ["c@d.example"], b"Subject: x\r\n\r\nbody\r\n")
        finally:
            client.quit()
    [(proxy_data, header)] = recorder.seen
    assert proxy_data is not None and str(proxy_data.src_addr) == "203.0.113.7"
    assert b"([203.0.113.7])" in header and b"with ESMTPS" in header


# -- fault 6: an AUTH exchange counts when it starts -----------------------------------------


def test_fault6_exchanges_opened_at_once_are_counted_at_once() -> None:
    """30 exchanges opened together, with a slow credential check: the per-address limit
    (10) was checked before any of them failed, so all 30 guesses were checked."""
    checker = Checker(delay=0.5)
    options: dict[str, Any] = {
        "authenticator": checker,
        "auth_require_tls": False,
        "auth_failure_delay": 0,
        "max_auth_failures_per_ip": 10,
    }
    with running(object(), **options) as c:
        raws = [Raw(c.port) for _ in range(30)]
        try:
            for raw in raws:
                raw.greet()
            barrier = threading.Barrier(len(raws))

            def guess(raw: Raw) -> None:
                barrier.wait(5)
                raw.send(WRONG)

            threads = [threading.Thread(target=guess, args=(raw,)) for raw in raws]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            replies = sorted(raw.reply(timeout=10) for raw in raws)
        finally:
            for raw in raws:
                raw.close()
    assert len(checker.calls) == 10
    assert replies == sorted([INVALID] * 10 + [BLOCKED] * 20)


def test_fault6_a_success_is_not_counted() -> None:
    options: dict[str, Any] = {
        "authenticator": Checker(),
        "auth_require_tls": False,
        "auth_failure_delay": 0,
        "max_auth_failures_per_ip": 2,
    }
    with running(object(), **options) as c:
        for _ in range(5):
            with Raw(c.port) as raw:
                raw.greet()
                raw.send(GOOD)
                assert raw.reply() == OK


# -- fault 11: AUTH PLAIN's authorization identity -------------------------------------------


class Authorizer(Checker):
    """Accepts alice/secret; lets alice act as bob only when ``allow`` says so."""

    def __init__(self, allow: bool) -> None:
        super().__init__()
        self.allow = allow

    async def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        result = await super().__call__(server, session, envelope, mechanism, data)
        if self.allow and data.authzid == b"bob":
            result.authorization_id = b"bob"
        return result


@pytest.mark.parametrize(
    ("message", "allow", "reply"),
    [
        (b"bob\0alice\0secret", False, INVALID),  # authenticated as alice before
        (b"bob\0alice\0secret", True, OK),  # the authenticator allows it
        (b"\0alice\0secret", False, OK),
        (b"alice\0alice\0secret", False, OK),
        (b"carol\0alice\0secret", True, INVALID),
    ],
)
def test_fault11_the_authorization_identity(message: bytes, allow: bool, reply: bytes) -> None:
    authorizer = Authorizer(allow)
    options = {"authenticator": authorizer, "auth_require_tls": False, "auth_failure_delay": 0}
    with running(object(), **options) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(b"AUTH PLAIN " + base64.b64encode(message) + b"\r\n")
        assert raw.reply() == reply
    assert [call.authzid for call in authorizer.calls] == [message.split(b"\0")[0]]


# -- fault 12: only an explicit success authenticates ----------------------------------------


@pytest.mark.parametrize(
    "returned",
    [0, "", [], "alice", b"alice", 1, {"ok": True}, AuthResult(success=1, handled=False)],  # type: ignore[arg-type]
    ids=repr,
)
def test_fault12_anything_but_true_or_success_fails_closed(
    returned: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ferrosmtp.server")

    def authenticator(*args: Any) -> Any:
        return returned

    options = {"authenticator": authenticator, "auth_require_tls": False, "auth_failure_delay": 0}
    with running(object(), **options) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(GOOD)
        assert raw.reply() == INVALID
        raw.send(b"MAIL FROM:<a@b.example>\r\n")
        raw.reply()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("authentication refused" in w or "only True" in w for w in warnings), warnings


@pytest.mark.parametrize("returned", [True, AuthResult(success=True, handled=False)], ids=repr)
def test_fault12_true_or_a_successful_result_authenticates(returned: Any) -> None:
    def authenticator(*args: Any) -> Any:
        return returned

    options = {"authenticator": authenticator, "auth_require_tls": False}
    with running(object(), **options) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(GOOD)
        assert raw.reply() == OK


def test_fault12_a_failed_result_cannot_answer_235() -> None:
    def authenticator(*args: Any) -> Any:
        return AuthResult(success=False, handled=False, message="235 2.7.0 welcome")

    options = {"authenticator": authenticator, "auth_require_tls": False, "auth_failure_delay": 0}
    with running(object(), **options) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(GOOD)
        assert raw.reply() == INVALID
