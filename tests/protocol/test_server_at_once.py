"""ServerConnection.answer_at_once(), next_events() and receive(): a connection that
answers some kinds of events by itself, handing out several events a call, behaves on the
wire and in its state exactly as one whose application answers those events with
respond_default(), one receive_data() and next_event() at a time. Hypothesis draws the
input, its chunking, the kinds answered at once, the batch limit and the configuration;
both codec backends."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferrosmtp import _core, _pure
from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import CLOSED, NEED_DATA, Response
from ferrosmtp.protocol.server import ServerConfig, ServerConnection
from tests.protocol.test_server_stateful import wire

# Every kind an application may leave to the connection.
ELIGIBLE = [
    ev.Hello,
    ev.MailFrom,
    ev.RcptTo,
    ev.Content,
    ev.MessageEnd,
    ev.MessageAborted,
    ev.Reset,
    ev.Noop,
    ev.Verify,
    ev.Expand,
    ev.Help,
    ev.Quit,
    ev.Unknown,
    ev.Delay,
]


def _config(lmtp: bool, strict: bool, auth: bool, max_size: Any) -> ServerConfig:
    return ServerConfig(
        hostname="mx.test",
        lmtp=lmtp,
        strict_pipelining=strict,
        auth_mechanisms=("PLAIN",) if auth else (),
        auth_require_tls=False,
        starttls=True,
        max_message_size=max_size,
        max_command_line=64,
        max_recipients=3,
        max_errors=8,
        soft_error_limit=2,
        error_sleep=0.5,
    )


def _answer(conn: ServerConnection, event: ev.Event) -> None:
    """What both applications answer the events not answered at once."""
    if isinstance(event, (ev.Auth, ev.AuthLine)):
        conn.auth_failed()
    elif isinstance(event, ev.StartTLS):
        conn.respond(454, "TLS not available now", "4.7.0")
    elif isinstance(event, ev.MessageEnd) and conn.config.lmtp:
        conn.respond_lmtp([Response.of(250, "ok")] * len(conn.recipients))
    else:
        conn.respond_default()


def _state(conn: ServerConnection) -> tuple[Any, ...]:
    return (
        conn.closed,
        conn.hello,
        conn.hello_name,
        conn.mail,
        list(conn.recipients),
        conn.errors,
        conn.junk,
        conn.authenticated,
        conn.in_bdat,
    )


def _one_at_a_time(conn: ServerConnection, kinds: frozenset[type]) -> list[Any]:
    """The reference: next_event(), and respond_default() for the kinds at once."""
    seen: list[Any] = []
    for _ in range(1000):
        event = conn.next_event()
        seen.append(event)
        if event is NEED_DATA or event is CLOSED:
            return seen
        if event.needs_answer:
            if type(event) in kinds:
                conn.respond_default()
            else:
                _answer(conn, event)
    raise AssertionError("next_event() never ran out of events")


def _batched(
    conn: ServerConnection, kinds: frozenset[type], limit: int, data: bytes | None
) -> list[Any]:
    """receive(data, limit) (an I/O layer's call per read), then next_events(limit)."""
    seen: list[Any] = []
    for _ in range(1000):
        events = conn.receive(data, limit)
        data = None
        assert 1 <= len(events) <= limit + 1
        for i, event in enumerate(events):
            seen.append(event)
            if event is NEED_DATA or event is CLOSED:
                assert i == len(events) - 1, "a sentinel ends the list"
                return seen
            if type(event) not in kinds:
                assert i == len(events) - 1, "an event not answered at once ends the list"
                if event.needs_answer:
                    _answer(conn, event)
        assert len(events) <= limit or events[-1] in (NEED_DATA, CLOSED)
    raise AssertionError("next_events() never ran out of events")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    codec=st.sampled_from([_core, _pure]),
    chunks=st.lists(wire, min_size=1, max_size=6),
    kinds=st.sets(st.sampled_from(ELIGIBLE)).map(frozenset),
    limit=st.integers(1, 5),
    lmtp=st.booleans(),
    strict=st.booleans(),
    auth=st.booleans(),
    max_size=st.sampled_from([None, 5, 100]),
)
def test_at_once_is_respond_default(
    codec: ModuleType,
    chunks: list[bytes],
    kinds: frozenset[type],
    limit: int,
    lmtp: bool,
    strict: bool,
    auth: bool,
    max_size: Any,
) -> None:
    reference = ServerConnection(_config(lmtp, strict, auth, max_size), codec=codec)
    batched = ServerConnection(_config(lmtp, strict, auth, max_size), codec=codec)
    batched.answer_at_once(kinds)
    ours: list[Any] = []
    theirs: list[Any] = []
    for conn in (reference, batched):
        conn.start()
    for data in [*chunks, None]:
        if data is None:
            reference.receive_eof()
            batched.receive_eof()
        else:
            reference.receive_data(data)
        theirs += _one_at_a_time(reference, kinds)
        ours += _batched(batched, kinds, limit, data)
        assert batched.data_to_send() == reference.data_to_send()
        assert _state(batched) == _state(reference)
    assert ours == theirs


@pytest.mark.parametrize("kind", [ev.Auth, ev.AuthLine, ev.StartTLS])
def test_the_exchanges_of_the_application_are_never_at_once(kind: type) -> None:
    with pytest.raises(ValueError, match="need the application"):
        ServerConnection().answer_at_once(frozenset({ev.MailFrom, kind}))


def test_a_pipelined_group_in_one_call() -> None:
    conn = ServerConnection(ServerConfig(hostname="mx.test"))
    conn.answer_at_once(frozenset({ev.Hello, ev.MailFrom, ev.RcptTo}))
    conn.start()
    conn.receive_data(b"EHLO c.test\r\n")
    hello, need = conn.next_events(100)
    assert isinstance(hello, ev.Hello) and need is NEED_DATA and conn.hello == "EHLO"
    assert conn.data_to_send().startswith(b"220 mx.test")
    conn.receive_data(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test>\r\n")
    events = conn.next_events(100)
    assert [type(e) for e in events[:-1]] == [ev.MailFrom, ev.RcptTo, ev.RcptTo]
    assert events[-1] is NEED_DATA
    assert conn.mail is events[0] and conn.recipients == events[1:3]
    assert conn.data_to_send() == b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n"
