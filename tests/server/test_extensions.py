"""The ESMTP extensions, limits and timeouts of the live server."""

from __future__ import annotations

import base64
import mailbox
import smtplib
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from ferrosmtp import handlers
from ferrosmtp.server import AuthResult
from tests.server.support import HOST, Certs, Raw, running

MESSAGE = b"Subject: ext\r\n\r\nbody\r\n"


class Keep:
    """Keep every envelope the server completes."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    return AuthResult(success=data == (b"alice", b"pw"), handled=False)


def greet(raw: Raw) -> bytes:
    raw.reply()
    raw.send(b"EHLO client.test\r\n")
    return raw.reply()


# -- STARTTLS and implicit TLS ---------------------------------------------------------


def test_starttls_resets_the_session_and_is_not_offered_twice() -> None:
    certs = Certs()
    handler = Keep()
    with running(handler, tls_context=certs.server_context()) as c:
        with smtplib.SMTP(HOST, c.port, timeout=10) as client:
            client.ehlo("client.test")
            assert client.has_extn("starttls")
            client.mail("before@example.com")
            assert client.starttls(context=certs.client_context())[0] == 220
            # RFC 3207 §4.2: the EHLO and the transaction from before TLS are forgotten
            assert client.docmd("MAIL", "FROM:<a@example.com>")[0] == 503
            client.ehlo("client.test")
            assert not client.has_extn("starttls")
            assert client.docmd("STARTTLS") == (554, b"5.5.1 Error: TLS already active")
            client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
    [envelope] = handler.envelopes
    assert envelope.mail_from == "a@example.com"


def test_require_starttls() -> None:
    certs = Certs()
    with running(Keep(), tls_context=certs.server_context(), require_starttls=True) as c:
        with smtplib.SMTP(HOST, c.port, timeout=10) as client:
            client.ehlo()
            assert client.mail("a@example.com") == (
                530,
                b"5.7.0 Must issue a STARTTLS command first",
            )
            client.starttls(context=certs.client_context())
            client.ehlo()
            assert client.mail("a@example.com")[0] == 250


def test_a_failed_handshake_closes_the_connection() -> None:
    with running(Keep(), tls_context=Certs().server_context(), tls_handshake_timeout=1) as c:
        with Raw(c.port) as raw:
            greet(raw)
            raw.send(b"STARTTLS\r\n")
            assert raw.reply() == b"220 2.0.0 Ready to start TLS\r\n"
            raw.send(b"this is not a TLS ClientHello\r\n")
            assert raw.read_to_eof() in (b"",) or b"220" not in raw.read_to_eof()


def test_implicit_tls_with_auth() -> None:
    certs = Certs()
    handler = Keep()
    with running(handler, ssl_context=certs.server_context(), authenticator=login) as c:
        with smtplib.SMTP_SSL(HOST, c.port, timeout=10, context=certs.client_context()) as client:
            client.ehlo("client.test")
            # aiosmtpd #274/#281: AUTH must be offered and work over implicit TLS
            assert set(client.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
            assert not client.has_extn("starttls")
            assert client.login("alice", "pw")[0] == 235
            client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
    assert len(handler.envelopes) == 1


# -- AUTH --------------------------------------------------------------------------------


def test_auth_required() -> None:
    with running(Keep(), authenticator=login, auth_required=True, auth_require_tls=False) as c:
        with smtplib.SMTP(HOST, c.port, timeout=10) as client:
            client.ehlo()
            assert client.mail("a@example.com") == (530, b"5.7.0 Authentication required")
            client.login("alice", "pw")
            assert client.mail("a@example.com")[0] == 250
            assert client.docmd("AUTH", "PLAIN AGFsaWNlAHB3")[0] == 503  # in a transaction


def test_auth_failures_are_capped_per_connection() -> None:
    wrong = base64.b64encode(b"\0alice\0nope")
    with running(Keep(), authenticator=login, auth_require_tls=False) as c, Raw(c.port) as raw:
        greet(raw)
        for _ in range(2):
            raw.send(b"AUTH PLAIN " + wrong + b"\r\n")
            assert raw.reply() == b"535 5.7.8 Authentication credentials invalid\r\n"
        raw.send(b"AUTH PLAIN " + wrong + b"\r\n")
        rest = raw.read_to_eof()
        assert rest == (
            b"535 5.7.8 Authentication credentials invalid\r\n"
            b"421 4.7.0 mx.test Error: too many authentication failures\r\n"
        )


def test_auth_plain_initial_response_and_malformed_answers() -> None:
    with running(Keep(), authenticator=login, auth_require_tls=False) as c, Raw(c.port) as raw:
        greet(raw)
        for bad in [b"=AAA", b"AAA=BBB", b"dGVzd A=="]:
            raw.send(b"AUTH PLAIN " + bad + b"\r\n")
            reply = raw.reply()
            assert reply.startswith(b"501 "), (bad, reply)
        raw.send(b"AUTH PLAIN\r\n")
        assert raw.reply() == b"334 \r\n"
        raw.send(base64.b64encode(b"\0alice\0pw") + b"\r\n")
        assert raw.reply() == b"235 2.7.0 Authentication successful\r\n"


def test_auth_line_too_long() -> None:
    with running(Keep(), authenticator=login, auth_require_tls=False) as c, Raw(c.port) as raw:
        greet(raw)
        raw.send(b"AUTH LOGIN\r\n")
        assert raw.reply() == b"334 VXNlciBOYW1lAA==\r\n"
        raw.send(b"A" * 12289 + b"\r\n")
        assert raw.reply() == b"500 5.5.6 Authentication exchange line is too long\r\n"
        raw.send(b"NOOP\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"


# -- DSN, SIZE, SMTPUTF8, BDAT, LMTP ---------------------------------------------------------


def test_dsn_parameters_reach_the_handler() -> None:
    handler = Keep()
    with running(handler) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("dsn")
        client.sendmail(
            "a@example.com",
            ["b@example.net"],
            MESSAGE,
            mail_options=["RET=HDRS", "ENVID=QQ+2B1"],
            rcpt_options=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;b+40example.net"],
        )
    [envelope] = handler.envelopes
    assert envelope.mail_params == {"SIZE": str(len(MESSAGE)), "RET": "HDRS", "ENVID": "QQ+2B1"}
    assert envelope.rcpt_params == {
        "b@example.net": {"NOTIFY": "SUCCESS,DELAY", "ORCPT": "rfc822;b+40example.net"}
    }
    assert "ENVID=QQ+2B1" in envelope.mail_options  # aiosmtpd's upper-cased list


def test_size_is_checked_at_mail_time_and_during_data() -> None:
    with (
        running(Keep(), data_size_limit=100) as c,
        smtplib.SMTP(HOST, c.port, timeout=10) as client,
    ):
        client.ehlo()
        assert client.esmtp_features["size"] == "100"
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            client.sendmail("a@example.com", ["b@example.net"], b"x" * 200)  # SIZE=200
        assert info.value.smtp_code == 552
        client.mail("a@example.com")
        client.rcpt("b@example.net")
        assert client.data(b"y" * 150) == (
            552,
            b"5.3.4 Message size exceeds fixed maximum message size",
        )
        assert client.noop()[0] == 250


def test_smtputf8_and_8bitmime() -> None:
    handler = Keep()
    body = "Subject: héllo\r\n\r\nκείμενο\r\n".encode()
    with running(handler) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        client.sendmail(
            "δοκιμή@παράδειγμα.δοκιμή",
            ["ü@example.net"],
            body,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
    [envelope] = handler.envelopes
    assert envelope.smtp_utf8 and envelope.mail_from == "δοκιμή@παράδειγμα.δοκιμή"
    assert envelope.content == body


def test_bdat_end_to_end() -> None:
    handler = Keep()
    with running(handler) as c, Raw(c.port) as raw:
        assert b"250-CHUNKING\r\n" in greet(raw)
        raw.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 14\r\nSubject: b\r\n\r\n"
        )
        assert raw.replies(3) == [
            b"250 2.1.0 OK\r\n",
            b"250 2.1.5 OK\r\n",
            b"250 2.0.0 14 octets received\r\n",
        ]
        raw.send(b"BDAT 6 LAST\r\n.body\n")  # a bare LF: refused under the default policy
        assert raw.reply() == b"550 5.5.2 Error: bare <LF> received\r\n"
        raw.send(
            b"RSET\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"
            b"BDAT 7 LAST\r\n.body\r\n"
        )
        assert raw.replies(4)[-1] == b"250 2.0.0 OK\r\n"
    [envelope] = handler.envelopes
    assert envelope.content == b".body\r\n"  # BDAT is not dot-stuffed


class PerRecipient:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> list[str]:
        return [
            "250 2.1.5 delivered" if "ok" in r else "550 5.2.2 mailbox full"
            for r in envelope.rcpt_tos
        ]


def test_lmtp_replies_once_per_recipient() -> None:
    with running(PerRecipient(), lmtp=True) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"LHLO client.test\r\n")
        raw.reply()
        raw.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<ok@x.example>\r\n"
            b"RCPT TO:<full@x.example>\r\nDATA\r\n"
        )
        raw.replies(4)
        raw.send(b"hi\r\n.\r\n")
        assert raw.replies(2) == [b"250 2.1.5 delivered\r\n", b"550 5.2.2 mailbox full\r\n"]


# -- timeouts and connection limits ----------------------------------------------------------


def test_idle_timeout() -> None:
    with running(Keep(), timeout=0.5) as c, Raw(c.port) as raw:
        raw.reply()
        started = time.monotonic()
        assert raw.read_to_eof() == b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
        assert 0.4 < time.monotonic() - started < 3


def test_a_stalled_data_times_out_too() -> None:
    with running(Keep(), timeout=0.5) as c, Raw(c.port) as raw:
        greet(raw)
        raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        raw.replies(3)
        raw.send(b"Subject: never ends\r\n")
        assert raw.read_to_eof() == b"421 4.4.2 mx.test Error: timeout exceeded\r\n"


def test_connection_limits() -> None:
    with running(Keep(), max_connections=2) as c:
        with Raw(c.port) as a, Raw(c.port) as b:
            a.reply()
            b.reply()
            with Raw(c.port) as third:
                assert third.read_to_eof() == b"421 4.7.0 mx.test Error: too many connections\r\n"
        time.sleep(0.2)
        with Raw(c.port) as again:
            assert again.reply().startswith(b"220 ")
    with running(Keep(), max_connections_per_ip=1) as c, Raw(c.port) as a:
        a.reply()
        with Raw(c.port) as second:
            assert second.read_to_eof().startswith(
                b"421 4.7.0 mx.test Error: too many connections from"
            )


def test_exempt_networks_are_not_held_to_the_per_address_limit() -> None:
    with (
        running(Keep(), max_connections_per_ip=1, connection_limit_exempt=["127.0.0.0/8"]) as c,
        Raw(c.port) as a,
        Raw(c.port) as b,
    ):
        assert a.reply().startswith(b"220 ") and b.reply().startswith(b"220 ")
    with (
        running(Keep(), max_connections_per_ip=1, connection_limit_exempt=["10.0.0.0/8"]) as c,
        Raw(c.port) as a,
    ):
        a.reply()
        with Raw(c.port) as second:
            assert second.read_to_eof().startswith(b"421 4.7.0 mx.test Error: too many")


def test_early_talker_gets_554_and_no_banner() -> None:
    with running(Keep(), greeting_delay=0.3) as c, Raw(c.port) as raw:
        raw.send(b"EHLO client.test\r\n")
        assert raw.read_to_eof() == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"


# -- storage handlers ------------------------------------------------------------------------


def test_maildir_stores_with_a_received_header(tmp_path: Path) -> None:
    with (
        running(handlers.Maildir(tmp_path / "md")) as c,
        smtplib.SMTP(HOST, c.port, timeout=10) as client,
    ):
        client.ehlo("client.test")
        client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
    [name] = list((tmp_path / "md" / "new").iterdir())
    data = name.read_bytes()
    assert data.startswith(
        b"Received: from client.test ([127.0.0.1])\r\n\tby mx.test\r\n\twith ESMTP\r\n"
    )
    assert b"for <b@example.net>;" in data
    assert data.endswith(MESSAGE)
    assert list((tmp_path / "md" / "tmp").iterdir()) == []
    [message] = list(mailbox.Maildir(tmp_path / "md"))
    assert message["Subject"] == "ext"


def test_maildir_keeps_nothing_of_a_client_that_vanishes_mid_data(tmp_path: Path) -> None:
    with running(handlers.Maildir(tmp_path / "md")) as c:
        with Raw(c.port) as raw:
            greet(raw)
            raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
            raw.replies(3)
            raw.send(b"Subject: half\r\n\r\n" + b"x" * 100_000)
            time.sleep(0.2)
        time.sleep(0.3)
        assert list((tmp_path / "md" / "new").iterdir()) == []
        assert list((tmp_path / "md" / "tmp").iterdir()) == []


def test_maildir_refused_message_leaves_nothing(tmp_path: Path) -> None:
    with running(handlers.Maildir(tmp_path / "md")) as c, Raw(c.port) as raw:
        greet(raw)
        raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        raw.replies(3)
        raw.send(b"part one\r\nbare\nLF\r\n.\r\n")
        assert raw.reply() == b"550 5.5.2 Error: bare <LF> received\r\n"
    assert list((tmp_path / "md" / "new").iterdir()) == []
    assert list((tmp_path / "md" / "tmp").iterdir()) == []


def test_unwritable_maildir_answers_451(tmp_path: Path) -> None:
    box = handlers.Maildir(tmp_path / "md")
    # Root ignores permission bits; a file where new/ should be fails for everyone.
    (tmp_path / "md" / "new").rmdir()
    (tmp_path / "md" / "new").write_bytes(b"")
    with running(box) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
        assert (info.value.smtp_code, info.value.smtp_error) == (
            451,
            b"4.3.0 Error: could not store the message",
        )
        assert client.noop()[0] == 250
    assert list((tmp_path / "md" / "tmp").iterdir()) == []


def test_storage_failure_answers_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    box = handlers.Maildir(tmp_path / "md")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with running(box) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
        assert (info.value.smtp_code, info.value.smtp_error) == (
            452,
            b"4.3.1 Error: insufficient system storage",
        )
        assert client.noop()[0] == 250
    assert list((tmp_path / "md" / "new").iterdir()) == []
    assert list((tmp_path / "md" / "tmp").iterdir()) == []


def test_mbox(tmp_path: Path) -> None:
    with running(handlers.Mailbox(tmp_path / "mail.mbox")) as c:
        for _ in range(2):
            with smtplib.SMTP(HOST, c.port, timeout=10) as client:
                client.sendmail("a@example.com", ["b@example.net"], MESSAGE + b"From here\r\n")
    messages = list(mailbox.mbox(tmp_path / "mail.mbox"))
    assert len(messages) == 2
    assert messages[0].get_from().startswith("a@example.com ")
    assert "Received" in messages[0] and messages[0].get_payload().startswith("body")


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    from ferrosmtp.server import Controller

    try:
        controller = Controller(Keep(), hostname="::1", port=0, server_hostname="mx.test")
        controller.start()
    except OSError:
        pytest.skip("::1 cannot be bound here")
    try:
        with smtplib.SMTP("::1", controller.port, timeout=10) as client:
            assert client.noop()[0] == 250
    finally:
        controller.stop()


def test_ssl_module_context_is_verified_by_default_for_clients() -> None:
    # A sanity check of the test certificates themselves: a default context refuses them.
    certs = Certs()
    with running(Keep(), ssl_context=certs.server_context()) as c:
        with pytest.raises(ssl.SSLCertVerificationError):
            smtplib.SMTP_SSL(HOST, c.port, timeout=10, context=ssl.create_default_context())


def test_auth_failures_are_slowed_down() -> None:
    wrong = base64.b64encode(b"\0alice\0nope")
    with running(Keep(), authenticator=login, auth_require_tls=False, auth_failure_delay=0.3) as c:
        with Raw(c.port) as raw:
            greet(raw)
            started = time.monotonic()
            raw.send(b"AUTH PLAIN " + wrong + b"\r\n")
            assert raw.reply().startswith(b"535 ")
            assert time.monotonic() - started >= 0.25


def test_auth_failures_are_capped_per_address() -> None:
    wrong = base64.b64encode(b"\0alice\0nope")
    right = base64.b64encode(b"\0alice\0pw")
    options = {"auth_require_tls": False, "auth_failure_delay": 0, "max_auth_failures_per_ip": 2}
    with running(Keep(), authenticator=login, **options) as c:
        for _ in range(2):  # two connections, one failure each
            with Raw(c.port) as raw:
                greet(raw)
                raw.send(b"AUTH PLAIN " + wrong + b"\r\n")
                assert raw.reply().startswith(b"535 ")
        with Raw(c.port) as raw:  # even the right password is not tried now
            greet(raw)
            raw.send(b"AUTH PLAIN " + right + b"\r\n")
            assert (
                raw.reply() == b"454 4.7.0 Error: too many authentication failures, try later\r\n"
            )


def test_sink_keeps_no_content() -> None:
    from ferrosmtp.server import Server

    assert not Server(handlers.Sink())._reads_content
    assert Server(Keep())._reads_content


def test_the_server_runs_on_uvloop_with_starttls() -> None:
    import uvloop  # a test dependency (pyproject's test extra): never skipped

    from ferrosmtp.server import Controller

    certs = Certs()
    handler = Keep()
    controller = Controller(
        handler,
        hostname=HOST,
        port=0,
        loop=uvloop.new_event_loop(),
        server_hostname="mx.test",
        tls_context=certs.server_context(),
    )
    controller.start()
    try:
        with smtplib.SMTP(HOST, controller.port, timeout=10) as client:
            client.starttls(context=certs.client_context())
            client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
    finally:
        controller.stop()
    assert len(handler.envelopes) == 1


def test_a_slowloris_trickling_one_command_is_cut_off() -> None:
    """Bytes alone do not reset the idle timer: a command must complete (checklist B9)."""
    with running(Keep(), timeout=1.0) as c, Raw(c.port) as raw:
        raw.reply()
        started = time.monotonic()
        closed = b""
        for byte in b"EHLO a-very-slow-client.example.test\r\n":
            try:
                raw.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
            raw.sock.settimeout(0.01)
            try:
                closed += raw.sock.recv(1024)
            except (TimeoutError, BlockingIOError):
                continue
            if closed.startswith(b"421"):
                break
        assert closed.startswith(b"421 4.4.2 mx.test Error: timeout exceeded"), closed
        assert time.monotonic() - started < 5


def test_a_slow_but_steady_client_is_not_cut_off() -> None:
    with running(Keep(), timeout=1.0) as c, Raw(c.port) as raw:
        raw.reply()
        for _ in range(6):  # 3 s of commands, each well within the timeout
            raw.send(b"NOOP\r\n")
            assert raw.reply() == b"250 2.0.0 OK\r\n"
            time.sleep(0.5)


def test_a_data_trickled_below_the_minimum_rate_is_cut_off() -> None:
    """Checklist B9: content must keep up data_min_rate, or the idle timeout cuts it."""
    with running(Keep(), timeout=1.0, data_min_rate=100) as c, Raw(c.port) as raw:
        greet(raw)
        raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        raw.replies(3)
        started = time.monotonic()
        got = b""
        while time.monotonic() - started < 8 and not got:
            try:
                raw.send(b"x")  # 5 octets a second, far below 100
            except OSError:
                break
            time.sleep(0.2)
            raw.sock.settimeout(0.01)
            try:
                got = raw.sock.recv(1024)
            except (TimeoutError, BlockingIOError):
                pass
        assert got.startswith(b"421 4.4.2 mx.test Error: timeout exceeded"), got
