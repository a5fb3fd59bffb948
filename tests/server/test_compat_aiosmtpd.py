"""ferrosmtp.compat.aiosmtpd over a real socket: aiosmtpd 1.4.6's replies byte for byte,
its defaults and attributes, on ferrosmtp's engine (the incumbent's own suite is run by
tests/incumbents/run.py; these pin the behaviour it relies on)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.handlers import Sink

from ferrosmtp.compat import aiosmtpd as compat
from tests.server.support import HOST, Raw


class Refuser:
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, _o: Any):
        return "550 5.1.1 No such user"


@pytest.fixture
def controller() -> Iterator[compat.Controller]:
    controller = compat.Controller(Refuser(), hostname=HOST, port=0, server_hostname="mx.test")
    controller.start()
    yield controller
    controller.stop()


def test_replies_are_aiosmtpds(controller: compat.Controller) -> None:
    with Raw(controller.port) as raw:
        assert raw.reply() == b"220 mx.test Python SMTP 1.4.6\r\n"
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert raw.reply() == b"503 Error: send HELO first\r\n"
        raw.send(b"EHLO c.example\r\n")
        assert raw.reply() == (
            b"250-mx.test\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 HELP\r\n"
        )
        raw.send(b"HELP\r\n")
        assert raw.reply() == (
            b"250 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY\r\n"
        )
        raw.send(b"HELP MAIL\r\n")
        assert raw.reply() == b"250 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert raw.reply() == b"250 OK\r\n"
        raw.send(b"DATA\r\n")
        assert raw.reply() == b"503 Error: need RCPT command\r\n"
        # A handler's enhanced code is its own words: kept, though the server adds none.
        raw.send(b"RCPT TO:<b@example.com>\r\n")
        assert raw.reply() == b"550 5.1.1 No such user\r\n"
        raw.send(b"STARTTLS\r\n")
        assert raw.reply() == b"454 TLS not available\r\n"
        raw.send(b"FOO\r\n")
        assert raw.reply() == b'500 Error: command "FOO" not recognized\r\n'
        raw.send(b"QUIT\r\n")
        assert raw.reply() == b"221 Bye\r\n"


def test_codec_refusals_in_aiosmtpds_words(controller: compat.Controller) -> None:
    with Raw(controller.port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:\r\n")
        assert raw.reply() == b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"
        raw.send(b"X" * 600 + b"\r\n")
        assert raw.reply() == b"500 Command line too long\r\n"
        raw.send(b"AUTH\r\n")
        assert raw.reply() == (
            b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
        )
        raw.send(b"MAIL FROM:<a@example.com> FOO=BAR\r\n")
        assert raw.reply() == b"555 MAIL FROM parameters not recognized or not implemented\r\n"
        raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<\r\n")
        assert raw.replies(2) == [
            b"250 OK\r\n",
            b"501 Syntax: RCPT TO: <address> [SP <mail-parameters>]\r\n",
        ]


def test_controller_attributes_reset_by_stop() -> None:
    controller = compat.Controller(Sink(), hostname=HOST, port=0)
    controller.start()
    assert isinstance(controller.smtpd, compat.SMTP)
    assert controller.server is not None and controller.server.sockets
    assert controller.smtpd.line_length_limit == 1001
    assert controller.smtpd.max_command_size_limit == 512
    controller.stop()
    assert controller.smtpd is None and controller.server is None


def test_factory_subclass_and_lmtp() -> None:
    class LMTPController(compat.Controller):
        def factory(self) -> compat.SMTP:
            self.smtpd = compat.LMTP(self.handler)
            return self.smtpd

    controller = LMTPController(Sink(), hostname=HOST, port=0)
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.reply()
            raw.send(b"HELO c.example\r\n")
            assert raw.reply() == b'500 Error: command "HELO" not recognized\r\n'
            raw.send(b"LHLO c.example\r\n")
            assert raw.reply().startswith(b"250-")
    finally:
        controller.stop()


def test_warnings_and_argument_checks() -> None:
    with pytest.warns(UserWarning, match="Requiring AUTH while not requiring TLS"):
        compat.SMTP(Sink(), auth_required=True, auth_require_tls=False)
    with pytest.raises(TypeError, match="command_call_limit must be int or Dict"):
        compat.SMTP(Sink(), command_call_limit="7")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="All command_call_limit values must be int"):
        compat.SMTP(Sink(), command_call_limit={"MAIL": "7"})  # type: ignore[dict-item]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compat.SMTP(Sink(), auth_required=True)  # TLS required: no warning


def test_smuggling_defence_stays_on() -> None:
    """A deliberate difference: a bare LF in DATA (the SMTP smuggling vector) is refused
    at the end of the message, as by ferrosmtp.Server; aiosmtpd 1.4.6 accepts it."""
    controller = compat.Controller(Sink(), hostname=HOST, port=0)
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.greet()
            raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
            assert raw.replies(3)[2].startswith(b"354 ")
            raw.send(b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@example.com>\r\n.\r\n")
            assert raw.reply() == b"550 Error: bare <LF> received\r\n"
    finally:
        controller.stop()


def test_command_call_limit_closes_with_aiosmtpds_421() -> None:
    controller = compat.Controller(
        Sink(), hostname=HOST, port=0, command_call_limit={"NOOP": 2, "*": 5}
    )
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.greet()
            for _ in range(2):
                raw.send(b"NOOP\r\n")
                assert raw.reply() == b"250 OK\r\n"
            raw.send(b"NOOP\r\n")
            assert raw.read_to_eof() == b"421 4.7.0 NOOP sent too many times\r\n"
    finally:
        controller.stop()


def test_malformed_paths_get_aiosmtpds_553(controller: compat.Controller) -> None:
    with Raw(controller.port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<@example.com>\r\n")
        assert raw.reply() == b"553 5.1.3 Error: malformed address\r\n"
