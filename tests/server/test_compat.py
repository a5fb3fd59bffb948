"""aiosmtpd handlers run unchanged on ferrosmtp: aiosmtpd's own handler classes, the hook
call shapes, MISSING, both EHLO hook forms, AUTH with aiosmtpd's AuthResult, exceptions."""

from __future__ import annotations

import email.message
import io
import mailbox
import smtplib
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd import handlers as aio_handlers
from aiosmtpd.smtp import MISSING as AIO_MISSING
from aiosmtpd.smtp import AuthResult as AioAuthResult
from aiosmtpd.smtp import LoginPassword as AioLoginPassword

from ferrosmtp import MISSING, auth_mechanism
from tests.server.support import HOST, Certs, Raw, running

MESSAGE = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: compat\r\n\r\nHello.\r\n.dot\r\n"


def send(port: int, **kwargs: Any) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(HOST, port, timeout=10) as client:
        return client.sendmail(
            kwargs.get("sender", "a@example.com"),
            kwargs.get("to", ["b@example.net"]),
            kwargs.get("message", MESSAGE),
        )


def test_aiosmtpd_sink() -> None:
    with running(aio_handlers.Sink()) as c:
        assert send(c.port) == {}


def test_aiosmtpd_debugging() -> None:
    out = io.StringIO()
    with running(aio_handlers.Debugging(out)) as c:
        send(c.port)
    text = out.getvalue()
    assert "---------- MESSAGE FOLLOWS ----------" in text
    assert "Subject: compat" in text and ".dot" in text


class Collect(aio_handlers.Message):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[email.message.Message] = []

    def handle_message(self, message: email.message.Message) -> None:
        self.messages.append(message)


def test_aiosmtpd_message_subclass() -> None:
    handler = Collect()
    with running(handler) as c:
        send(c.port, to=["b@example.net", "c@example.net"])
    [message] = handler.messages
    assert message["Subject"] == "compat"
    assert message["X-MailFrom"] == "a@example.com"
    assert message["X-RcptTo"] == "b@example.net, c@example.net"
    assert message["X-Peer"].startswith("('127.0.0.1'")
    assert message.get_payload() == "Hello.\r\n.dot\r\n"


class AsyncCollect(aio_handlers.AsyncMessage):
    def __init__(self) -> None:
        super().__init__()
        self.subjects: list[str] = []

    async def handle_message(self, message: email.message.Message) -> None:
        self.subjects.append(str(message["Subject"]))


def test_aiosmtpd_async_message_subclass() -> None:
    handler = AsyncCollect()
    with running(handler) as c:
        send(c.port)
        send(c.port)
    assert handler.subjects == ["compat", "compat"]


def test_aiosmtpd_mailbox(tmp_path: Path) -> None:
    with running(aio_handlers.Mailbox(tmp_path / "md")) as c:
        send(c.port)
    [message] = list(mailbox.Maildir(tmp_path / "md"))
    assert message["Subject"] == "compat"


class Recorder:
    """Every hook with aiosmtpd's signature; records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
        self.calls.append(("HELO", hostname))
        session.host_name = hostname
        return "250 helo-hook"

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.calls.append(("EHLO", hostname, list(responses)))
        session.host_name = hostname
        session.custom = "kept"  # handlers may add attributes
        kept = [r for r in responses if "DSN" not in r]
        return [*kept[:-1], "250-XHOOK", responses[-1]]

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.calls.append(("MAIL", address, options, session.custom))
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        envelope.marker = "from-mail"
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.calls.append(("RCPT", address, options))
        if address.startswith("nobody"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.calls.append(
            ("DATA", envelope.mail_from, list(envelope.rcpt_tos), envelope.content, envelope.marker)
        )
        assert envelope.original_content == envelope.content
        assert server.hostname == "mx.test"
        return "250 2.0.0 Message accepted for delivery"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> Any:
        self.calls.append(("RSET",))
        return MISSING

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        self.calls.append(("NOOP", arg))
        return "250 noop-hook"

    async def handle_VRFY(self, server: Any, session: Any, envelope: Any, address: str) -> str:
        self.calls.append(("VRFY", address))
        return "252 2.1.5 maybe"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.calls.append(("QUIT",))
        return "221 see you"


def test_hook_call_shapes() -> None:
    handler = Recorder()
    with running(handler) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        assert client.helo("helo.test") == (250, b"helo-hook")
        code, text = client.ehlo("client.test")
        assert code == 250 and b"XHOOK" in text and b"DSN" not in text
        assert client.noop() == (250, b"2.0.0 noop-hook")  # ENHANCEDSTATUSCODES added
        assert client.verify("someone") == (252, b"2.1.5 maybe")
        assert client.rset() == (250, b"2.0.0 OK")  # MISSING: the default reply
        refused = client.sendmail(
            "a@example.com",
            ["b@example.net", "nobody@example.net"],
            MESSAGE,
            mail_options=["BODY=8BITMIME"],
        )
        assert refused == {"nobody@example.net": (550, b"5.1.1 No such user here")}
        assert client.quit() == (221, b"2.0.0 see you")
    names = [call[0] for call in handler.calls]
    assert names == ["HELO", "EHLO", "NOOP", "VRFY", "RSET", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    ehlo = handler.calls[1]
    assert ehlo[2][0] == "250-mx.test" and ehlo[2][-1] == "250 HELP"
    assert "250-PIPELINING" in ehlo[2] and "250-SIZE 33554432" in ehlo[2]
    size = f"SIZE={len(MESSAGE)}"
    assert handler.calls[5] == ("MAIL", "a@example.com", [size, "BODY=8BITMIME"], "kept")
    data = handler.calls[8]
    assert data[1:3] == ("a@example.com", ["b@example.net"])
    assert data[3] == MESSAGE
    assert data[4] == "from-mail"


class OldEhlo:
    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
        session.host_name = hostname
        return "250 OLDHOOK"


def test_old_ehlo_hook_form() -> None:
    with running(OldEhlo()) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        code, text = client.ehlo("client.test")
        lines = text.split(b"\n")
        assert code == 250 and lines[0] == b"mx.test" and lines[-1] == b"OLDHOOK"
        assert b"PIPELINING" in lines


class BadEhlo:
    async def handle_EHLO(self, a: Any, b: Any) -> str:
        return "250 x"


def test_unsupported_ehlo_hook_is_refused_at_start() -> None:
    with pytest.raises(RuntimeError, match="Unsupported EHLO Hook"):
        with running(BadEhlo()):
            pass


class AioMissing:
    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> Any:
        return AIO_MISSING


def test_aiosmtpd_missing_sentinel_means_default() -> None:
    with running(AioMissing()) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        assert client.noop() == (250, b"2.0.0 OK")


def aio_authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> Any:
    assert isinstance(auth_data, tuple) and len(auth_data) == 2
    ok = auth_data == AioLoginPassword(b"alice", b"s3cret")
    return AioAuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class SessionSpy:
    def __init__(self) -> None:
        self.sessions: list[Any] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.sessions.append((session.authenticated, session.auth_data, session.ssl is not None))
        envelope.mail_from = address
        return "250 OK"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_aiosmtpd_authenticator_over_starttls(mechanism: str) -> None:
    certs = Certs()
    spy = SessionSpy()
    with running(spy, tls_context=certs.server_context(), authenticator=aio_authenticator) as c:
        with smtplib.SMTP(HOST, c.port, timeout=10) as client:
            client.ehlo("client.test")
            assert not client.has_extn("auth")  # not offered before TLS (B12)
            client.starttls(context=certs.client_context())
            client.ehlo("client.test")
            assert set(client.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
            client.user, client.password = "alice", "wrong"
            method = getattr(client, "auth_" + mechanism.lower())
            with pytest.raises(smtplib.SMTPAuthenticationError) as info:
                client.auth(mechanism, method)
            assert info.value.smtp_code == 535
            client.user, client.password = "alice", "s3cret"
            assert client.auth(mechanism, method)[0] == 235
            client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
    assert spy.sessions == [(True, AioLoginPassword(b"alice", b"s3cret"), True)]


def test_auth_before_tls_is_refused_without_calling_the_authenticator() -> None:
    calls: list[Any] = []

    def authenticator(*args: Any) -> Any:
        calls.append(args)
        return AioAuthResult(success=True)

    with running(
        aio_handlers.Sink(), tls_context=Certs().server_context(), authenticator=authenticator
    ) as c:
        with Raw(c.port) as raw:
            raw.reply()
            raw.send(b"EHLO client.test\r\n")
            raw.reply()
            raw.send(b"AUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n")
            assert raw.reply() == b"530 5.7.0 Must issue a STARTTLS command first\r\n"
    assert calls == []


class CustomMechanism:
    """A handler-provided mechanism using challenge_auth, aiosmtpd style."""

    @auth_mechanism("X-TOKEN")
    async def auth_XTOKEN(self, server: Any, args: list[str]) -> Any:
        answer = await server.challenge_auth("token please")
        if answer is MISSING or answer == AIO_MISSING:
            return AioAuthResult(success=False, handled=True)
        return AioAuthResult(success=answer == b"open sesame", handled=False)


def test_handler_auth_mechanism_with_challenge() -> None:
    with running(CustomMechanism(), auth_require_tls=False) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"EHLO client.test\r\n")
        assert b"250-AUTH X-TOKEN\r\n" in raw.reply()
        raw.send(b"AUTH X-TOKEN\r\n")
        assert raw.reply() == b"334 dG9rZW4gcGxlYXNl\r\n"
        raw.send(b"b3BlbiBzZXNhbWU=\r\n")
        assert raw.reply() == b"235 2.7.0 Authentication successful\r\n"
        raw.send(b"AUTH X-TOKEN\r\n")
        assert raw.reply() == b"503 5.5.1 Error: already authenticated\r\n"


def test_auth_cancel_and_bad_base64() -> None:
    with running(CustomMechanism(), auth_require_tls=False) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"EHLO client.test\r\n")
        raw.reply()
        raw.send(b"AUTH X-TOKEN\r\n")
        raw.reply()
        raw.send(b"*\r\n")
        assert raw.reply() == b"501 5.7.0 Auth aborted\r\n"
        raw.send(b"AUTH X-TOKEN\r\n")
        raw.reply()
        raw.send(b"dGVzd A==\r\n")  # an inner space is not base64 (RFC 4954 §4)
        assert raw.reply() == b"501 5.5.2 Can't decode base64\r\n"
        raw.send(b"NOOP\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"


class Explodes:
    def __init__(self, with_hook: bool) -> None:
        if with_hook:
            self.handle_exception = self._handle_exception

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("boom"):
            raise RuntimeError("handler bug")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def _handle_exception(self, error: Exception) -> str:
        return f"451 4.3.0 handled {type(error).__name__}"


@pytest.mark.parametrize("with_hook", [False, True])
def test_a_handler_that_raises_gets_451_and_the_session_goes_on(with_hook: bool) -> None:
    with running(Explodes(with_hook)) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("a@example.com")
        code, text = client.rcpt("boom@example.net")
        assert code == 451
        assert text == (
            b"4.3.0 handled RuntimeError" if with_hook else b"4.3.0 Error: internal server error"
        )
        assert client.rcpt("fine@example.net")[0] == 250
        assert client.data(MESSAGE)[0] == 250


class Legacy:
    def __init__(self) -> None:
        self.got: list[tuple[Any, ...]] = []

    def process_message(self, peer: Any, mail_from: str, rcpt_tos: list[str], data: bytes) -> None:
        self.got.append((mail_from, rcpt_tos, data))


def test_legacy_process_message() -> None:
    handler = Legacy()
    # Still served, with aiosmtpd's DeprecationWarning at each message (issue 9).
    with running(handler) as c, pytest.warns(DeprecationWarning, match="process_message"):
        send(c.port)
    assert handler.got == [("a@example.com", ["b@example.net"], MESSAGE)]


class NullSender:
    def __init__(self) -> None:
        self.senders: list[str | None] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.senders.append(envelope.mail_from)
        return "250 OK"


def test_null_sender_is_passed_as_aiosmtpd_does() -> None:
    handler = NullSender()
    with running(handler) as c:
        send(c.port, sender="<>")
    assert handler.senders == ["<>"]


def test_decode_data_gives_str_content() -> None:
    class Text:
        content: Any = None

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            Text.content = envelope.content
            return "250 OK"

    with running(Text(), decode_data=True) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        assert b"8BITMIME" not in client.ehlo()[1]  # aiosmtpd: no 8BITMIME when decoding
        client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
    assert Text.content == MESSAGE.decode()


def test_hook_replies_verbatim_without_enhanced_status_codes() -> None:
    with running(Recorder(), enhanced_status_codes=False) as c:
        with smtplib.SMTP(HOST, c.port, timeout=10) as client:
            assert b"ENHANCEDSTATUSCODES" not in client.ehlo("client.test")[1]
            assert client.noop() == (250, b"noop-hook")
            assert client.rset() == (250, b"OK")
            assert client.quit() == (221, b"see you")
