"""Checklist B12 (no AUTH over plaintext) and B13 (brute force, SASL parsing)."""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ferrosmtp import handlers
from ferrosmtp.server import AuthResult
from tests.security.support import RawFrom
from tests.server.support import Certs, Raw, running

GOOD = base64.b64encode(b"\0alice\0secret")
WRONG = base64.b64encode(b"\0alice\0guess")
INVALID = b"535 5.7.8 Authentication credentials invalid\r\n"
TOO_MANY = b"421 4.7.0 mx.test Error: too many authentication failures\r\n"
BLOCKED = b"454 4.7.0 Error: too many authentication failures, try later\r\n"


class Authenticator:
    """Counts its calls: the proof that a refused AUTH never reached the password check."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        self.calls.append(data.login)
        return AuthResult(success=data == (b"alice", b"secret"), handled=False)


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator()


@pytest.fixture
def insecure(auth: Authenticator) -> Iterator[int]:
    """AUTH allowed without TLS, so that the SASL parsing can be tested on raw sockets."""
    with running(auth, authenticator=auth, auth_require_tls=False, auth_failure_delay=0) as c:
        yield c.port


def ehlo(raw: Raw) -> bytes:
    raw.reply()
    raw.send(b"EHLO client.example\r\n")
    return raw.reply()


# -- B12: plaintext ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [b"AUTH PLAIN " + GOOD, b"AUTH LOGIN", b"AUTH LOGIN YWxpY2U=", b"AUTH PLAIN"]
)
def test_no_auth_over_plaintext(auth: Authenticator, command: bytes) -> None:
    certs = Certs()
    with running(auth, authenticator=auth, tls_context=certs.server_context()) as c:
        with Raw(c.port) as raw:
            reply = ehlo(raw)
            assert b"AUTH" not in reply  # not even advertised (RFC 4954 §4, §6)
            raw.send(command + b"\r\n")
            assert raw.reply() == b"530 5.7.0 Must issue a STARTTLS command first\r\n"
            raw.send(b"NOOP\r\n")
            assert raw.reply() == b"250 2.0.0 OK\r\n"
    assert auth.calls == []


def test_auth_works_after_starttls(auth: Authenticator) -> None:
    certs = Certs()
    with running(auth, authenticator=auth, tls_context=certs.server_context()) as c:
        with Raw(c.port) as raw:
            ehlo(raw)
            raw.send(b"STARTTLS\r\n")
            assert raw.reply().startswith(b"220 ")
            tls = certs.client_context().wrap_socket(raw.sock, server_hostname="mx.test")
            tls.settimeout(5)
            tls.sendall(b"EHLO client.example\r\n")
            time.sleep(0.2)
            assert b"250-AUTH LOGIN PLAIN\r\n" in tls.recv(65536)
            tls.sendall(b"AUTH PLAIN " + GOOD + b"\r\n")
            assert tls.recv(65536) == b"235 2.7.0 Authentication successful\r\n"
            tls.close()
    assert auth.calls == [b"alice"]


# -- B13: brute force ------------------------------------------------------------------------


def test_failures_are_capped_per_connection_and_slowed(auth: Authenticator) -> None:
    delay = 0.3
    with (
        running(auth, authenticator=auth, auth_require_tls=False, auth_failure_delay=delay) as c,
        Raw(c.port) as raw,
    ):
        ehlo(raw)
        for _ in range(2):
            started = time.monotonic()
            raw.send(b"AUTH PLAIN " + WRONG + b"\r\n")
            assert raw.reply() == INVALID
            assert time.monotonic() - started >= delay * 0.9  # the guesser pays for each try
        raw.send(b"AUTH PLAIN " + WRONG + b"\r\n")
        assert raw.read_to_eof() == INVALID + TOO_MANY  # RFC 4954 §9: not before 3 failures
    assert len(auth.calls) == 3


def test_failures_are_capped_per_address_across_connections(auth: Authenticator) -> None:
    with running(
        auth,
        authenticator=auth,
        auth_require_tls=False,
        auth_failure_delay=0,
        max_auth_failures=3,
        max_auth_failures_per_ip=4,
    ) as c:
        with Raw(c.port) as first:
            ehlo(first)
            first.send(b"AUTH PLAIN " + WRONG + b"\r\n")
            assert first.reply() == INVALID
            first.send(b"AUTH PLAIN " + WRONG + b"\r\n")
            assert first.reply() == INVALID
            first.send(b"AUTH PLAIN " + WRONG + b"\r\n")
            assert first.read_to_eof() == INVALID + TOO_MANY
        with Raw(c.port) as second:
            ehlo(second)
            second.send(b"AUTH PLAIN " + WRONG + b"\r\n")
            assert second.reply() == INVALID  # the 4th failure from this address
            second.send(b"AUTH PLAIN " + GOOD + b"\r\n")  # even the right password
            assert second.reply() == BLOCKED
            second.send(b"AUTH LOGIN\r\n")
            assert second.reply() == BLOCKED
            second.send(b"NOOP\r\n")
            assert second.reply() == b"250 2.0.0 OK\r\n"
        with Raw(c.port) as third:
            ehlo(third)
            third.send(b"AUTH PLAIN " + GOOD + b"\r\n")
            assert third.reply() == BLOCKED
    assert len(auth.calls) == 4  # blocked attempts never reach the password check


# -- B13: SASL parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "blob", [b"dGVzd A==", b"=AAA", b"AAA=BBB", b"AGFsaWNl!", b"A===", b"\xff"]
)
def test_malformed_base64_initial_response(insecure: int, auth: Authenticator, blob: bytes) -> None:
    with Raw(insecure) as raw:
        ehlo(raw)
        raw.send(b"AUTH PLAIN " + blob + b"\r\n")
        assert raw.reply()[:4] in (b"501 ", b"500 ")
        raw.send(b"NOOP\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"
    assert auth.calls == []


@pytest.mark.parametrize("blob", [b"dGVzd A==", b"=AAA", b"AAA=BBB"])
def test_malformed_base64_in_the_exchange(insecure: int, auth: Authenticator, blob: bytes) -> None:
    with Raw(insecure) as raw:
        ehlo(raw)
        raw.send(b"AUTH LOGIN\r\n")
        assert raw.reply() == b"334 VXNlciBOYW1lAA==\r\n"
        raw.send(blob + b"\r\n")
        assert raw.reply() == b"501 5.5.2 Can't decode base64\r\n"
        raw.send(b"NOOP\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"
    assert auth.calls == []


def test_cancel_with_star(insecure: int, auth: Authenticator) -> None:
    with Raw(insecure) as raw:
        ehlo(raw)
        raw.send(b"AUTH PLAIN\r\n")
        assert raw.reply() == b"334 \r\n"
        raw.send(b"*\r\n")
        assert raw.reply().startswith(b"501 ")
    assert auth.calls == []


def test_auth_after_success_is_503(insecure: int) -> None:
    with Raw(insecure) as raw:
        ehlo(raw)
        raw.send(b"AUTH PLAIN " + GOOD + b"\r\n")
        assert raw.reply() == b"235 2.7.0 Authentication successful\r\n"
        raw.send(b"AUTH PLAIN " + GOOD + b"\r\n")
        assert raw.reply() == b"503 5.5.1 Error: already authenticated\r\n"


def test_auth_in_a_transaction_is_503(insecure: int, auth: Authenticator) -> None:
    with Raw(insecure) as raw:
        ehlo(raw)
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        raw.reply()
        raw.send(b"AUTH PLAIN " + GOOD + b"\r\n")
        assert raw.reply() == b"503 5.5.1 Error: MAIL transaction in progress\r\n"
    assert auth.calls == []


def test_unknown_mechanism_and_auth_before_ehlo(insecure: int) -> None:
    with Raw(insecure) as raw:
        raw.reply()
        raw.send(b"AUTH PLAIN " + GOOD + b"\r\n")
        assert raw.reply() == b"503 5.5.1 Error: send EHLO first\r\n"
        raw.send(b"EHLO client.example\r\n")
        raw.reply()
        raw.send(b"AUTH GSSAPI\r\n")
        assert raw.reply() == b"504 5.5.4 Unrecognized authentication type\r\n"


def test_overlong_line_in_the_exchange(insecure: int, auth: Authenticator) -> None:
    """RFC 4954 §4: 500 5.5.6 for a line over the 12288-octet auth buffer."""
    with Raw(insecure) as raw:
        ehlo(raw)
        raw.send(b"AUTH PLAIN\r\n")
        assert raw.reply() == b"334 \r\n"
        raw.send(b"A" * 12287 + b"\r\n")  # 12289 octets with the CRLF
        assert raw.reply() == b"500 5.5.6 Authentication exchange line is too long\r\n"
        raw.send(b"NOOP\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"
    assert auth.calls == []


def test_longest_exchange_line_is_read(insecure: int) -> None:
    with Raw(insecure) as raw:
        ehlo(raw)
        raw.send(b"AUTH PLAIN\r\n")
        assert raw.reply() == b"334 \r\n"
        raw.send(b"A" * 12286 + b"\r\n")  # 12288 octets: within the limit, not base64 PLAIN
        assert raw.reply()[:4] == b"501 "


def test_overlong_initial_response(insecure: int, auth: Authenticator) -> None:
    """An AUTH command line over 12288 octets: refused with 500, the session goes on."""
    line = b"AUTH PLAIN " + b"A" * (12289 - len(b"AUTH PLAIN \r\n")) + b"\r\n"
    assert len(line) == 12289
    with Raw(insecure) as raw:
        ehlo(raw)
        raw.send(line)
        assert raw.reply()[:4] == b"500 "
        raw.send(b"NOOP\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"
    assert auth.calls == []


def test_overlong_initial_response_enhanced_code(insecure: int) -> None:
    line = b"AUTH PLAIN " + b"A" * (12289 - len(b"AUTH PLAIN \r\n")) + b"\r\n"
    with Raw(insecure) as raw:
        ehlo(raw)
        raw.send(line)
        assert raw.reply().startswith(b"500 5.5.6 ")


def test_implicit_tls_offers_auth(auth: Authenticator) -> None:
    certs = Certs()
    with running(auth, authenticator=auth, ssl_context=certs.server_context()) as c:
        raw_context = certs.client_context()
        with socket.create_connection(("127.0.0.1", c.port), timeout=5) as plain:
            tls: ssl.SSLSocket = raw_context.wrap_socket(plain, server_hostname="mx.test")
            assert tls.recv(1000).startswith(b"220 ")
            tls.sendall(b"EHLO client.example\r\n")
            time.sleep(0.2)
            assert b"AUTH LOGIN PLAIN" in tls.recv(65536)
            tls.close()


# swaks with AUTH PLAIN as alice, and a message
SWAKS_AUTH_PLAIN = (
    *("--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "secret"),
    *("--from", "a@example.com", "--to", "b@example.net"),
)


@pytest.mark.interop
def test_swaks_cannot_authenticate_over_plaintext(auth: Authenticator) -> None:
    """A real client asked to AUTH over a plaintext connection: the server offers no AUTH,
    swaks gives up, and the password check never runs (checklist B12)."""
    from tests.peers import swaks

    certs = Certs()
    with running(auth, authenticator=auth, tls_context=certs.server_context()) as c:
        result = swaks(*SWAKS_AUTH_PLAIN, port=c.port)
    assert result.returncode != 0, result.stdout
    assert "AUTH PLAIN" not in result.stdout  # never even sent
    assert auth.calls == []


@pytest.mark.interop
def test_swaks_authenticates_after_starttls(auth: Authenticator) -> None:
    from tests.peers import swaks

    certs = Certs()
    with running(auth, authenticator=auth, tls_context=certs.server_context()) as c:
        result = swaks("--tls", *SWAKS_AUTH_PLAIN, port=c.port)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0 Authentication successful" in result.stdout
    assert auth.calls == [b"alice"]


# -- async credential checks ---------------------------------------------------------------


async def async_refuses(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    """A credential check that needs I/O (a database, an LDAP bind) is naturally async."""
    return AuthResult(success=False, handled=False)


async def async_callback_refuses(mechanism: str, login: bytes, password: bytes) -> bool:
    return False


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
@pytest.mark.parametrize("option", ["authenticator", "auth_callback"])
def test_an_async_credential_check_is_not_a_success(option: str) -> None:
    check = async_refuses if option == "authenticator" else async_callback_refuses
    options: dict[str, Any] = {option: check}
    with (
        running(
            handlers.Sink(),
            auth_require_tls=False,
            auth_failure_delay=0,
            auth_required=True,
            **options,
        ) as c,
        Raw(c.port) as raw,
    ):
        ehlo(raw)
        raw.send(b"AUTH PLAIN " + base64.b64encode(b"\0mallory\0wrong") + b"\r\n")
        reply = raw.reply()
        raw.send(b"MAIL FROM:<mallory@example.com>\r\n")
        after = raw.reply()
    assert not reply.startswith(b"235"), reply
    assert after == b"530 5.7.0 Authentication required\r\n"


def test_the_per_address_auth_limit_only_touches_that_address(auth: Authenticator) -> None:
    with running(
        auth,
        authenticator=auth,
        auth_require_tls=False,
        auth_failure_delay=0,
        max_auth_failures=5,
        max_auth_failures_per_ip=2,
    ) as c:
        with Raw(c.port) as raw:
            ehlo(raw)
            for _ in range(2):
                raw.send(b"AUTH PLAIN " + WRONG + b"\r\n")
                assert raw.reply() == INVALID
            raw.send(b"AUTH PLAIN " + GOOD + b"\r\n")
            assert raw.reply() == BLOCKED
        with RawFrom(c.port, "127.0.0.2") as other:
            ehlo(other)
            other.send(b"AUTH PLAIN " + GOOD + b"\r\n")
            assert other.reply() == b"235 2.7.0 Authentication successful\r\n"
