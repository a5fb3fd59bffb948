"""The server fixes of issue 9 that hold in every namespace (ferrosmtp.Server and
ferrosmtp.compat.aiosmtpd alike), each over a real socket."""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from aiosmtpd.handlers import Sink

from ferrosmtp import MISSING, LoginPassword, auth_mechanism
from ferrosmtp.compat import aiosmtpd as compat
from ferrosmtp.server import Controller
from tests.server.support import HOST, Certs, Raw, running


@contextmanager
def running_compat(handler: Any, **kwargs: Any) -> Iterator[compat.Controller]:
    controller = compat.Controller(handler, hostname=HOST, port=0, **kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


Runner = Callable[..., AbstractContextManager[Any]]
NAMESPACES = pytest.mark.parametrize("run", [running, running_compat], ids=["default", "compat"])


def code(reply: bytes) -> int:
    return int(reply[:3])


@NAMESPACES
def test_require_starttls_refuses_all_but_ehlo_noop_quit_starttls(run: Runner) -> None:
    class Verifier:
        called = False

        async def handle_VRFY(self, *args: Any) -> str:
            Verifier.called = True
            return "250 yes"

    with run(Verifier(), require_starttls=True) as c, Raw(c.port) as raw:
        raw.reply()
        for line in (b"HELO c.example", b"VRFY root", b"HELP", b"MAIL FROM:<a@b.c>", b"XYZZY"):
            raw.send(line + b"\r\n")
            reply = raw.reply()
            assert code(reply) == 530, (line, reply)
            assert b"STARTTLS" in reply
        raw.send(b"DATA\r\n")
        assert code(raw.reply()) == 530
        raw.send(b"NOOP\r\n")
        assert code(raw.reply()) == 250  # the reader resumed after the refused DATA
        raw.send(b"EHLO c.example\r\n")
        assert code(raw.reply()) == 250
        raw.send(b"QUIT\r\n")
        assert code(raw.reply()) == 221
    assert not Verifier.called


@NAMESPACES
def test_auth_required_refuses_help_and_vrfy(run: Runner) -> None:
    with run(Sink(), auth_required=True) as c, Raw(c.port) as raw:
        raw.greet()
        for line in (b"HELP", b"VRFY root"):
            raw.send(line + b"\r\n")
            reply = raw.reply()
            assert code(reply) == 530 and b"Authentication required" in reply


def test_login_password_repr_hides_the_password() -> None:
    for cls in (LoginPassword, compat.LoginPassword):
        value = cls(b"user", b"hunter2")
        assert "hunter2" not in repr(value) and "hunter2" not in str(value)
        assert repr(value) == "LoginPassword(login='user', password=...)"
        assert value.password == b"hunter2"


def test_auth_mechanism_refuses_invalid_names() -> None:
    for decorator in (auth_mechanism, compat.auth_mechanism):
        with pytest.raises(ValueError, match="Invalid AUTH mechanism name"):
            decorator("BAD NAME")
        with pytest.raises(ValueError):
            decorator("caf\u00e9")
        assert decorator("x-custom")(lambda: None).__auth_mechanism_name__ == "X-CUSTOM"


@NAMESPACES
def test_handle_auth_without_authenticator_is_offered_and_called(run: Runner) -> None:
    class Hooked:
        calls: list[list[str]] = []

        async def handle_AUTH(self, server: Any, session: Any, envelope: Any, args: list[str]):
            Hooked.calls.append(args)
            if args[0] == "PLAIN":
                return "235 2.7.0 Welcome"
            return MISSING  # LOGIN: the built-in mechanism decides (no checker: refused)

    with run(Hooked(), auth_require_tls=False) as c:
        with smtplib.SMTP(HOST, c.port, timeout=10) as client:
            client.ehlo("c.example")
            assert client.has_extn("AUTH")
            assert set(client.esmtp_features["auth"].split()) >= {"PLAIN", "LOGIN"}
            assert client.docmd("AUTH PLAIN AHUAcA==")[0] == 235
        with smtplib.SMTP(HOST, c.port, timeout=10) as client:
            client.ehlo("c.example")
            assert client.docmd("AUTH LOGIN dQ==")[0] == 334  # the password challenge
            assert client.docmd("cA==")[0] == 535
    assert Hooked.calls == [["PLAIN", "AHUAcA=="], ["LOGIN", "dQ=="]]


@NAMESPACES
def test_esmtp_parameters_after_helo_are_refused(run: Runner) -> None:
    with run(Sink()) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"HELO c.example\r\n")
        raw.reply()
        raw.send(b"MAIL FROM:<a@example.com> SIZE=10\r\n")
        assert code(raw.reply()) == 501
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert code(raw.reply()) == 250
        raw.send(b"RCPT TO:<b@example.com> NOTIFY=NEVER\r\n")
        assert code(raw.reply()) == 501


@NAMESPACES
def test_no_bare_size_without_a_limit(run: Runner) -> None:
    with run(Sink(), data_size_limit=None) as c, Raw(c.port) as raw:
        lines = raw.greet().split(b"\r\n")
        assert not any(line[4:].startswith(b"SIZE") for line in lines)


def last_words_at_shutdown(controller: Any) -> bytes:
    """The last reply line a connected client gets when the server stops."""
    controller.start()
    with Raw(controller.port) as raw:
        raw.greet()
        controller.stop()
        return raw.read_to_eof().split(b"\r\n")[-2]


def test_shutdown_421_has_no_enhanced_code_when_they_are_off() -> None:
    plain = Controller(
        Sink(), hostname=HOST, port=0, server_hostname="localhost", enhanced_status_codes=False
    )
    assert last_words_at_shutdown(plain) == b"421 localhost Service shutting down"


def test_compat_closes_without_a_word_at_shutdown_as_aiosmtpd() -> None:
    """aiosmtpd cancels its connections when it stops; smtplib's ``with SMTP(...)``
    then ends quietly (a 421 would make its QUIT raise). compat.aiosmtpd does the same."""
    drop_in = compat.Controller(Sink(), hostname=HOST, port=0, server_hostname="localhost")
    drop_in.start()
    with Raw(drop_in.port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert raw.reply() == b"250 OK\r\n"
        drop_in.stop()
        assert raw.read_to_eof() == b""


def test_shutdown_421_keeps_its_enhanced_code_by_default() -> None:
    controller = Controller(Sink(), hostname=HOST, port=0, server_hostname="localhost")
    assert last_words_at_shutdown(controller) == b"421 4.3.2 localhost Service shutting down"


def test_auth_result_repr_hides_auth_data() -> None:
    from ferrosmtp import AuthResult

    for cls in (AuthResult, compat.AuthResult):
        result = cls(success=True, auth_data=LoginPassword(b"user", b"hunter2"))
        assert "hunter2" not in repr(result) and "user" not in repr(result)
        assert repr(result).endswith("auth_data=...)")


def tls_reply(tls: Any) -> bytes:
    out = b""
    while not out.endswith(b"\r\n") or out.split(b"\r\n")[-2][3:4] == b"-":
        chunk = tls.recv(4096)
        if not chunk:
            break
        out += chunk
    return out


@NAMESPACES
def test_handle_starttls_false_keeps_the_connection_and_refuses_mail(run: Runner) -> None:
    class RefusesTLS:
        async def handle_STARTTLS(self, server: Any, session: Any, envelope: Any) -> bool:
            return False

    certs = Certs()
    with run(RefusesTLS(), tls_context=certs.server_context()) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(b"STARTTLS\r\n")
        assert code(raw.reply()) == 220
        tls = certs.client_context().wrap_socket(raw.sock, server_hostname="mx.test")
        tls.settimeout(5)
        for line in (b"EHLO c.example", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>"):
            tls.sendall(line + b"\r\n")
            reply = tls_reply(tls)
            assert code(reply) == 554 and b"lack of security" in reply, (line, reply)
        tls.sendall(b"QUIT\r\n")
        assert code(tls_reply(tls)) == 221


@NAMESPACES
def test_connection_reset_from_a_hook_drops_without_handle_exception(run: Runner) -> None:
    class Resets:
        errors: list[Exception] = []

        async def handle_MAIL(self, *args: Any) -> str:
            raise ConnectionResetError("the client is gone")

        async def handle_exception(self, error: Exception) -> str:
            Resets.errors.append(error)
            return "451 never sent"

    with run(Resets()) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert raw.read_to_eof() == b""  # dropped: no reply at all
    assert Resets.errors == []


@NAMESPACES
def test_a_failed_tls_handshake_reaches_handle_exception(run: Runner) -> None:
    class Records:
        errors: list[Exception] = []

        async def handle_exception(self, error: Exception) -> str:
            Records.errors.append(error)
            return "500 ignored"

    certs = Certs()
    with run(Records(), tls_context=certs.server_context()) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(b"STARTTLS\r\n")
        assert code(raw.reply()) == 220
        raw.send(b"this is not a TLS ClientHello\r\n")
        raw.read_to_eof()
    deadline = time.monotonic() + 5
    while not Records.errors and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Records.errors
    error = Records.errors[0]
    if run is running_compat:  # aiosmtpd's TLSSetupException, the TLS error its cause
        assert isinstance(error, compat.TLSSetupException)
        error = error.__cause__  # type: ignore[assignment]
    assert isinstance(error, (OSError, ssl.SSLError))
