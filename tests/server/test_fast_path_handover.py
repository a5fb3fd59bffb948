"""The server's fast path over a real socket: a handler with no hook for the transaction
runs it in the codec (ServerConnection.fast_path), and a hook it does have (VRFY here)
finds the session and envelope the transaction so far would have made, as it would
without the fast path."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from ferrosmtp import Server, handlers
from ferrosmtp.server.smtp import SMTP
from ferrosmtp.server.values import Session

from .support import Raw, running


class Verifier:
    """No hook for the transaction; VRFY reports what the session and envelope hold."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def handle_VRFY(self, server: Any, session: Any, envelope: Any, address: str) -> str:
        self.seen.append(
            (session.host_name, session.extended_smtp, envelope.mail_from, envelope.rcpt_tos)
        )
        return "252 2.0.0 maybe"


def _connections(controller: Any) -> list[Any]:
    return list(controller.server._connections)


def test_a_sink_session_runs_on_the_fast_path_and_delivers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ferrosmtp.server")  # no per-message lines
    with running(handlers.Sink()) as c, Raw(c.port) as raw:
        assert raw.reply().startswith(b"220 ")
        (smtp,) = _connections(c)
        assert smtp._fast is not None  # the codec runs the transaction
        raw.send(b"EHLO c.example\r\n")  # a sync point (RFC 2920): alone
        assert b"PIPELINING" in raw.reply()
        raw.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")  # one group
        assert raw.reply() == b"250 2.1.0 OK\r\n"
        assert raw.reply() == b"250 2.1.5 OK\r\n"
        raw.send(b"DATA\r\n")
        assert raw.reply().startswith(b"354 ")
        raw.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"
        assert smtp._fast is not None  # a whole message without leaving it
        raw.send(b"QUIT\r\n")
        assert raw.reply() == b"221 2.0.0 Bye\r\n"


def test_a_hook_after_the_hand_over_sees_the_session_so_far(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ferrosmtp.server")
    handler = Verifier()
    with running(handler) as c, Raw(c.port) as raw:
        raw.reply()
        (smtp,) = _connections(c)
        assert smtp._fast is not None
        for line in (b"EHLO c.example", b"MAIL FROM:<a@b.example>", b"RCPT TO:<c@d.example>"):
            raw.send(line + b"\r\n")
            assert raw.reply().startswith(b"250")
        raw.send(b"VRFY someone\r\n")  # the fast path stops here; the state machine goes on
        assert raw.reply() == b"252 2.0.0 maybe\r\n"
        assert smtp._fast is None
        assert handler.seen == [("c.example", True, "a@b.example", ["c@d.example"])]
        # The transaction goes on where it was: a second MAIL is nested, DATA delivers.
        raw.send(b"MAIL FROM:<x@y.example>\r\n")
        assert raw.reply().startswith(b"503")
        raw.send(b"DATA\r\n")
        assert raw.reply().startswith(b"354")
        raw.send(b"x\r\n.\r\n")
        assert raw.reply().startswith(b"250")


def test_with_message_logging_the_state_machine_runs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ferrosmtp.server")
    with running(handlers.Sink()) as c, Raw(c.port) as raw:
        raw.reply()
        (smtp,) = _connections(c)
        assert smtp._fast is None  # each message is logged: the events are needed
        for line in (b"HELO c", b"MAIL FROM:<a@b.example>", b"RCPT TO:<c@d.example>"):
            raw.send(line + b"\r\n")
            assert raw.reply().startswith(b"250")


def test_a_session_begun_fast_has_its_state_machine_only_once_it_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ServerConnection.fast_start: no ServerConnection, session or envelope while the
    fast path runs; made at the hand-over, with the client's address."""
    caplog.set_level(logging.WARNING, logger="ferrosmtp.server")
    with running(Verifier()) as c, Raw(c.port) as raw:
        raw.greet()
        (smtp,) = _connections(c)
        assert smtp._fast is not None
        assert (smtp.conn, smtp.session, smtp.envelope) == (None, None, None)
        raw.send(b"VRFY someone\r\n")
        assert raw.reply() == b"252 2.0.0 maybe\r\n"
        assert smtp.conn is not None and smtp.envelope is not None
        assert smtp.session is not None and smtp.session.peer == raw.sock.getsockname()


def test_a_subclass_that_makes_its_own_session_gets_it_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiosmtpd's override points (_create_session, _create_envelope) are called when the
    connection is made, as before the fast path began sessions without them."""
    caplog.set_level(logging.WARNING, logger="ferrosmtp.server")
    made: list[Any] = []

    class Counting(SMTP):
        def _create_session(self) -> Session:
            session = super()._create_session()
            made.append(session)
            return session

    class CountingServer(Server):
        def factory(self) -> SMTP:
            return Counting(self)

    async def main() -> None:
        server = CountingServer(handlers.Sink())
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert (await reader.readline()).startswith(b"220 ")
        (smtp,) = server._connections
        assert made == [smtp.session] and smtp._fast is not None  # and still fast
        writer.write(b"QUIT\r\n")
        assert await reader.readline() == b"221 2.0.0 Bye\r\n"
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
