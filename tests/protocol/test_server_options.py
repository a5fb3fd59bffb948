"""ServerConnection's options for other servers' rules (ferrosmtp.compat.aiosmtpd sets
them), without sockets: each is off in ferrosmtp.Server's configuration."""

from __future__ import annotations

from dataclasses import replace

from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import CLOSED, NEED_DATA
from ferrosmtp.protocol.replies import Replies
from ferrosmtp.protocol.server import ServerConfig, ServerConnection


def talk(conn: ServerConnection, data: bytes) -> tuple[list[ev.Event], bytes]:
    """Feed ``data``; answer every event as a server without hooks; the events and bytes."""
    conn.receive_data(data)
    events: list[ev.Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is CLOSED:
            return events, conn.data_to_send()
        events.append(event)
        if conn.awaiting is not None:
            conn.respond_default()


def started(**options: object) -> ServerConnection:
    conn = ServerConnection(ServerConfig(hostname="mx.test", **options))  # type: ignore[arg-type]
    conn.start()
    conn.data_to_send()
    return conn


def test_unknown_commands_limit() -> None:
    conn = started(max_unknown_commands=3, extra_commands=frozenset({"PING"}))
    for verb in (b"FOO", b"PING", b"PING", b"BAR"):
        events, out = talk(conn, verb + b"\r\n")
        assert [type(e) for e in events] == [ev.Unknown]
    assert not conn.closed
    events, out = talk(conn, b"BAZ\r\n")  # the third unknown one (PING is the app's)
    assert events == [] and conn.closed
    assert out == b"421 4.7.0 mx.test Error: too many unknown commands\r\n"


def test_unknown_commands_are_not_limited_by_default() -> None:
    conn = started()
    for i in range(10):
        talk(conn, b"FOO%d\r\n" % i)
    assert conn.unknown == 0 and not conn.closed  # only the error limits apply (20)


def test_help_names_the_applications_commands() -> None:
    conn = started(extra_commands=frozenset({"PING"}))
    _, out = talk(conn, b"HELP\r\n")
    assert b" PING " in out


def test_starttls_without_ehlo() -> None:
    strict = started(starttls=True)
    _, out = talk(strict, b"STARTTLS\r\n")
    assert out.startswith(b"503 ")
    lenient = started(starttls=True, starttls_needs_ehlo=False)
    events, out = talk(lenient, b"STARTTLS\r\n")
    assert [type(e) for e in events] == [ev.StartTLS] and out.startswith(b"220 ")
    assert lenient.tls_pending


def test_shutdown_without_a_word() -> None:
    quiet = ServerConnection(ServerConfig(replies=replace(Replies(), shutting_down=None)))
    quiet.start()
    quiet.data_to_send()
    quiet.shutdown()
    assert quiet.closed and quiet.data_to_send() == b""
    loud = started()
    loud.shutdown()
    assert loud.data_to_send() == b"421 4.3.2 mx.test Service shutting down\r\n"


def test_vrfy_needs_a_name_or_a_mailbox() -> None:
    conn = started(vrfy_needs_name=True)
    for argument in (b"anne", b"a.b", b'"a b"', b"<anne@example.com>", b"anne@example.com"):
        events, _ = talk(conn, b"VRFY " + argument + b"\r\n")
        assert [type(e) for e in events] == [ev.Verify], argument
    for argument in (b"@@", b"a@", b"<a@b> AUTH=<c@d>"):
        events, out = talk(conn, b"VRFY " + argument + b"\r\n")
        assert events == [] and out == b"502 5.5.4 Cannot VRFY " + argument + b"\r\n"
    lenient = started()
    events, _ = talk(lenient, b"VRFY @@\r\n")
    assert [type(e) for e in events] == [ev.Verify]
