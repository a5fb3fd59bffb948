"""ServerConnection.fast_path() and fast_start(): a connection run through the codec's
ServerFastPath, and by the state machine once it stops (take_over; after fast_start, by the
connection resume() makes then), sends the same bytes at the same reads,
closes at the same point and ends in the same state as one run by the state machine alone,
whose application answers every event by default; and the fast path keeps the I/O layer's
idle-timeout rule (last_progress) as an I/O layer driving the state machine would. Hypothesis
draws the client's input (mostly valid sessions), its split into reads, the configuration,
the fast path's item limit and when the I/O layer takes over; both codec backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferrosmtp import _core, _pure
from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import CLOSED, NEED_DATA, Response
from ferrosmtp.protocol.server import ServerConfig, ServerConnection

BACKENDS = [pytest.param(_core, id="rust"), pytest.param(_pure, id="pure")]
BIG = 10**6
RATE = 500.0
CRLF = b"\r\n"

# Every kind of event but the exchanges that need the application (AUTH, STARTTLS).
KINDS = frozenset(
    kind
    for kind in vars(ev).values()
    if isinstance(kind, type) and issubclass(kind, ev.Event) and kind is not ev.Event
) - {ev.Auth, ev.AuthLine, ev.StartTLS}


# ServerFastPath.take_over()'s tuple, by name.
FIELDS = (
    "hello",
    "hello_name",
    "mail",
    "recipients",
    "in_data",
    "junk",
    "closed",
    "replies",
    "items",
    "unread",
    "received_any",
    "last_progress",
    "data_started",
    "data_bytes",
)


def fields(state: tuple[Any, ...]) -> dict[str, Any]:
    assert len(state) == len(FIELDS)
    return dict(zip(FIELDS, state, strict=True))


def _conn(config: ServerConfig, codec: ModuleType) -> ServerConnection:
    conn = ServerConnection(config, codec=codec)
    conn.answer_at_once(KINDS)
    conn.start()
    return conn


def _drain(conn: ServerConnection, data: bytes | None) -> list[Any]:
    """Feed ``data`` (unless None) and answer by default until the connection needs data
    or closes; the events of each receive() call."""
    calls: list[Any] = []
    for _ in range(10_000):
        events = conn.receive(data, BIG)
        data = None
        calls.append(events)
        if conn.awaiting is not None:  # AUTH or STARTTLS: their default answers
            conn.respond_default()
        if events and events[-1] in (NEED_DATA, CLOSED):
            return calls
    raise AssertionError("receive() never ran out of events")


def _state(conn: ServerConnection) -> tuple[Any, ...]:
    return (
        conn.closed,
        conn.hello,
        conn.hello_name,
        conn.in_transaction,
        None if conn.mail is None else conn.mail.path,
        [r.path for r in conn.recipients],
        conn.junk,
        conn.errors,
        conn.smtputf8,
        conn.unknown,
        conn.tls_pending,
    )


@dataclass
class _Progress:
    """The I/O layer's idle-timeout rule over the state machine's events (server/smtp.py
    _advance and server/hooks.py _content_progress, _message_seen): a receive() call that
    yields an event is progress; content counts at the minimum rate; the end of a message
    is progress at any rate."""

    rate: float | None
    last: float
    started: float | None = None
    octets: int = 0

    def seen(self, events: list[Any], now: float) -> None:
        if events[0] is not NEED_DATA:
            self.last = now
        for event in events:
            if type(event) is ev.Content and self.rate:
                if self.started is None:
                    self.started, self.octets = now, 0
                self.octets += len(event.data)
                self.last = min(now, self.started + self.octets / self.rate)
            elif type(event) is ev.MessageEnd and self.started is not None:
                self.started = None
                self.last = now


@dataclass
class _Run:
    sent: list[bytes] = field(default_factory=list)  # [0]: before any read (the greeting)
    closed: list[bool] = field(default_factory=list)
    states: list[Any] = field(default_factory=list)  # per read, None while the fast path runs
    progress: list[Any] = field(default_factory=list)  # per read (last_progress, started)
    stopped: int | None = None  # the read at which the fast path stopped
    final: Any = None


def run_plain(
    config: ServerConfig, codec: ModuleType, reads: list[bytes], nows: list[float]
) -> _Run:
    conn = _conn(config, codec)
    run = _Run(sent=[conn.data_to_send()])
    model = _Progress(RATE, 0.0)
    for data, now in zip(reads, nows, strict=True):
        for events in _drain(conn, data):
            model.seen(events, now)
        run.sent.append(conn.data_to_send())
        run.closed.append(conn.closed)
        run.states.append(_state(conn))
        run.progress.append((model.last, model.started))
    _drain_eof(conn, run)
    return run


def _drain_eof(conn: ServerConnection, run: _Run) -> None:
    conn.receive_eof()
    _drain(conn, None)
    run.sent.append(conn.data_to_send())
    run.closed.append(conn.closed)
    run.final = _state(conn)


def run_fast(
    config: ServerConfig,
    codec: ModuleType,
    reads: list[bytes],
    nows: list[float],
    limit: int,
    handover: int | None = None,
    *,
    lazy: bool = False,
) -> _Run:
    """The I/O layer with the fast path: ``limit`` items a call; after read ``handover``
    (if any) it takes over although the fast path did not stop (as at EOF). ``lazy``: the
    session begins with ``fast_start()``, and its connection is made at the take-over
    (``resume()``), not before."""
    conn: ServerConnection | None
    if lazy:
        started = ServerConnection.fast_start(config, codec=codec, data_min_rate=RATE, now=0.0)
        assert started is not None
        fast, greeting = started
        conn = None
        run = _Run(sent=[greeting])
    else:
        conn = _conn(config, codec)
        fast = conn.fast_path(data_min_rate=RATE, now=0.0)
        assert fast is not None
        run = _Run(sent=[conn.data_to_send()])

    def take_over() -> tuple[ServerConnection, tuple[Any, ...]]:
        nonlocal conn
        assert fast is not None
        if conn is None:
            conn = ServerConnection.resume(fast, config, codec=codec)
            conn.answer_at_once(KINDS)
        return conn, conn.take_over(fast)

    for i, (data, now) in enumerate(zip(reads, nows, strict=True)):
        if fast is not None:
            out = fast.receive(data, limit, now)
            if out is None:
                run.stopped = i
                conn, _ = take_over()
                fast = None
                _drain(conn, None)
                run.sent.append(conn.data_to_send())
                run.closed.append(conn.closed)
                run.states.append(_state(conn))
                run.progress.append(None)
                continue
            assert conn is None or conn.data_to_send() == b"", "the connection sends nothing"
            run.sent.append(out)
            run.closed.append(False)
            run.states.append(None)
            run.progress.append((fast.last_progress,))
            if handover == i:
                conn, state = take_over()
                fast = None
                got = fields(state)
                run.progress[-1] = (got["last_progress"], got["data_started"])
                assert (got["replies"], got["items"], got["unread"]) == (b"", [], b"")
            continue
        assert conn is not None
        _drain(conn, data)
        run.sent.append(conn.data_to_send())
        run.closed.append(conn.closed)
        run.states.append(_state(conn))
        run.progress.append(None)
    if fast is not None:
        conn, state = take_over()
        got = fields(state)
        assert (got["replies"], got["items"], got["unread"]) == (b"", [], b"")
        if run.progress:
            run.progress[-1] = (got["last_progress"], got["data_started"])
    _drain_eof(conn, run)
    return run


def assert_same(plain: _Run, fast: _Run) -> None:
    assert fast.sent == plain.sent
    assert fast.closed == plain.closed
    for ours, theirs in zip(fast.states, plain.states, strict=True):
        if ours is not None:
            assert ours == theirs
    for ours, theirs in zip(fast.progress, plain.progress, strict=True):
        if ours is not None:  # (last_progress,) or, taken over, (.., data_started)
            assert ours == theirs[: len(ours)]
    assert fast.final == plain.final


def check(
    config: ServerConfig,
    codec: ModuleType,
    reads: list[bytes],
    *,
    nows: list[float] | None = None,
    limit: int = BIG,
    handover: int | None = None,
) -> tuple[_Run, _Run]:
    nows = nows if nows is not None else [float(i + 1) for i in range(len(reads))]
    plain = run_plain(config, codec, reads, nows)
    for lazy in (False, True):
        fast = run_fast(config, codec, reads, nows, limit, handover, lazy=lazy)
        assert_same(plain, fast)
    return plain, fast


# -- the input ---------------------------------------------------------------------------

HELLOS = [b"EHLO x.example", b"EHLO x.example", b"HELO x", b"LHLO x"]
MAILS = [
    b"MAIL FROM:<a@b.example>",
    b"MAIL FROM:<a@b.example>",
    b"MAIL FROM:<>",
    b"MAIL FROM:<a@b.example> SIZE=100",
    b"MAIL FROM:<a@b.example> BODY=8BITMIME",
]
RCPTS = [
    b"RCPT TO:<c@d.example>",
    b"RCPT TO:<c@d.example>",
    "RCPT TO:<ü@d.example>".encode(),
    b"RCPT TO:<c@d.example> NOTIFY=NEVER",
]
BODY = [
    b"Subject: hi",
    b"",
    b"line of text",
    b".leading dot",
    b"..",
    b"bare\nLF",
    b"bare\rCR",
    b"x" * 1100,
    "ünïcode".encode(),
]
OTHERS = [
    b"RSET",
    b"NOOP",
    b"NOOP x",
    b"QUIT",
    b"VRFY x",
    b"EXPN x",
    b"HELP",
    b"STARTTLS",
    b"AUTH PLAIN",
    b"AUTH PLAIN AGE=",
    b"GET / HTTP/1.0",
    b"",
    b"garbage",
    b"\x00\xff junk",
    b"DATA",
    b".",
    b"NOOP " + b"x" * 600,
    b"DATA x",
    b"HELO",
    b"noop",
    "EHLO ü.example".encode(),
    b"mail from:<a@b.example>",
    b"MAIL FROM: <a@b.example>",
    b"RCPT TO:<Postmaster>",
    b"RCPT TO:<>",
    b"RCPT TO:<@r.example:c@d.example>",
    "RCPT TO:<@ü.example:c@d.example>".encode(),
    b'RCPT TO:<"q x"@d.example>',
    "RCPT TO:<c@ü.example>".encode(),
    b"RCPT TO:<c@d.example> ",
    *HELLOS,
    *MAILS,
    *RCPTS,
]
BDAT = b"BDAT 5 LAST\r\nhello"  # its chunk follows, not a line
TLS_HELLO = b"\x16\x03\x01\x00\x2a\x01\x00\x00\x26\x03\x03"

# A block: lines (bytes) or raw bytes (a tuple of one: no line ending after it).
Block = list[Any]

# What the fast path takes (the first of each list above, and clean message lines).
CLEAN_BODY = [b"Subject: hi", b"", b"line of text", b".leading dot", b"..", b"x" * 1100]


@st.composite
def transactions(draw: st.DrawFn, clean: bool) -> Block:
    block: Block = [draw(st.sampled_from(MAILS[:3] if clean else MAILS))]
    rcpts = RCPTS[:1] if clean else RCPTS
    block += draw(st.lists(st.sampled_from(rcpts), min_size=1 if clean else 0, max_size=3))
    if clean or draw(st.integers(0, 3)):
        block.append(b"DATA")
        block += draw(st.lists(st.sampled_from(CLEAN_BODY if clean else BODY), max_size=4))
        if clean or draw(st.integers(0, 5)):
            block.append(b".")
    return block


def blocks(clean: bool) -> st.SearchStrategy[Block]:
    if clean:
        return st.one_of(
            transactions(True),
            transactions(True),
            st.sampled_from([b"RSET", b"NOOP", b"NOOP x", b"QUIT", *HELLOS[:3]]).map(
                lambda line: [line]
            ),
        )
    return st.one_of(
        transactions(False),
        transactions(False),
        st.sampled_from(OTHERS).map(lambda line: [line]),
        st.sampled_from([b"RSET", b"NOOP"]).map(lambda line: [line]),
        st.just([(BDAT,)]),
    )


@st.composite
def client_input(draw: st.DrawFn) -> list[bytes]:
    """What the client sends, line by line (each with its line ending): mostly valid
    sessions, half of them all of what the fast path takes and then anything."""
    clean = draw(st.booleans())
    lines: Block = []
    if clean or draw(st.integers(0, 5)):
        lines.append(draw(st.sampled_from(HELLOS[:3] if clean else HELLOS)))
    for block in draw(st.lists(blocks(clean), max_size=6)):
        lines += block
    if clean:
        for block in draw(st.lists(blocks(False), max_size=2)):
            lines += block
    bare_lf = draw(st.integers(0, 4)) == 0  # now and then a bare LF ends a line
    pieces = []
    for line in lines:
        if isinstance(line, tuple):
            pieces.append(line[0])
        else:
            end = b"\n" if bare_lf and draw(st.booleans()) else CRLF
            pieces.append(line + end)
    if draw(st.integers(0, 15)) == 0:
        pieces.insert(0, TLS_HELLO)
    return pieces


@st.composite
def split(draw: st.DrawFn, pieces: list[bytes]) -> list[bytes]:
    """The client's lines in reads: a line a read, groups of lines, cut anywhere (an
    empty read now and then), or all in one read."""
    mode = draw(st.sampled_from(["lines", "groups", "anywhere", "one"]))
    if mode == "lines":
        return pieces or [b""]
    stream = b"".join(pieces)
    if mode == "one":
        return [stream]
    if mode == "groups":
        ends = [0]
        for piece in pieces:
            ends.append(ends[-1] + len(piece))
        cuts = draw(st.lists(st.sampled_from(ends), max_size=8))
    else:
        cuts = draw(st.lists(st.integers(0, len(stream)), max_size=8))
    bounds = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in pairwise(bounds)]


OPTIONS: dict[str, dict[str, Any]] = {
    "lenient": {"strict_pipelining": False},
    "rcpt2": {"max_recipients": 2},
    "junk2": {"max_junk_commands": 2},
    "errors": {"max_errors": 3, "soft_error_limit": 2},
    "ascii": {"smtputf8": False},
    "no-codes": {"enhanced_status_codes": False},
    "tls": {"tls_active": True},
    "no-pipelining": {"pipelining": False},
    "no-chunking": {"chunking": False},
    "small": {"max_message_size": 50},
    "starttls": {"starttls": True},
    "auth": {"auth_mechanisms": ("PLAIN",), "auth_require_tls": False},
    "unknown2": {"max_unknown_commands": 2},
    "normalize": {"bare_newline": "normalize"},
    "text-line": {"max_text_line": 100},
    "command-line": {"max_command_line": 30},
    "unlimited": {"max_message_size": None},
    "junk0": {"max_junk_commands": 0},
    "rcpt1": {"max_recipients": 1},
}


def _config(names: list[str]) -> ServerConfig:
    options: dict[str, Any] = {}
    for name in names:
        options.update(OPTIONS[name])
    return ServerConfig(**options)


configs = st.lists(st.sampled_from(sorted(OPTIONS) + ["lenient"] * 3), max_size=3)


@pytest.mark.parametrize("codec", BACKENDS)
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    pieces=client_input(),
    names=configs,
    limit=st.sampled_from([1, 2, 3, 5, BIG, BIG, BIG, BIG]),
    step=st.sampled_from([0.0, 0.01, 0.5, 2.0]),
)
def test_fast_path_is_the_state_machine(
    codec: ModuleType,
    data: st.DataObject,
    pieces: list[bytes],
    names: list[str],
    limit: int,
    step: float,
) -> None:
    reads = data.draw(split(pieces))
    handover = data.draw(st.none() | st.integers(0, len(reads) - 1))
    nows = [step * (i + 1) for i in range(len(reads))]
    check(_config(names), codec, reads, nows=nows, limit=limit, handover=handover)


# -- cases written out -------------------------------------------------------------------

SINK = [
    b"EHLO x.example\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"RCPT TO:<c@d.example>\r\n",
    b"DATA\r\n",
    b"Subject: hi\r\n\r\nbody\r\n",
    b".\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"HELO x\r\n",  # no pipelining after HELO
    b"MAIL FROM:<>\r\n",
    b"RCPT TO:<c@d.example>\r\n",
    b"DATA\r\n",
    b"..dot\r\n.\r\n",
    b"EHLO y.example\r\n",
    b"MAIL FROM:<>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@f.example>\r\nDATA\r\n",
    b"x\r\n.\r\n",
]


def _fast(config: ServerConfig, codec: ModuleType, **kw: Any) -> tuple[ServerConnection, Any]:
    conn = _conn(config, codec)
    fast = conn.fast_path(**({"data_min_rate": RATE, "now": 0.0} | kw))
    assert fast is not None
    assert conn.data_to_send().startswith(b"220 ")
    return conn, fast


@pytest.mark.parametrize("codec", BACKENDS)
def test_a_sink_transaction_never_stops(codec: ModuleType) -> None:
    conn, fast = _fast(ServerConfig(), codec)
    outs = []
    for i, data in enumerate(SINK):
        out = fast.receive(data, BIG, float(i))
        assert out is not None, f"stopped at {data!r}"
        outs.append(out)
    assert conn.data_to_send() == b""
    plain = run_plain(ServerConfig(), codec, SINK, [float(i) for i in range(len(SINK))])
    assert outs == plain.sent[1:-1]
    assert outs[0].startswith(b"250-localhost\r\n250-PIPELINING\r\n") and outs[0].endswith(
        b"250 HELP\r\n"
    )
    assert outs[1:4] == [
        b"250 2.1.0 OK\r\n",
        b"250 2.1.5 OK\r\n",
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
    ]
    assert outs[4] == b""
    assert outs[5] == b"250 2.0.0 OK\r\n"
    state = conn.take_over(fast)
    assert state[:7] == ("EHLO", "y.example", None, [], False, 0, False)
    assert not conn.closed
    conn.receive_eof()
    _drain(conn, None)
    assert _state(conn) == plain.final


@pytest.mark.parametrize("codec", BACKENDS)
def test_the_sink_transaction_is_the_state_machine(codec: ModuleType) -> None:
    check(ServerConfig(), codec, SINK)
    check(ServerConfig(), codec, [b"".join(SINK[:4]), b"".join(SINK[4:9])])  # DATA pipelined
    check(ServerConfig(strict_pipelining=False), codec, [b"".join(SINK)])


@pytest.mark.parametrize("codec", BACKENDS)
def test_a_command_read_is_progress(codec: ModuleType) -> None:
    _, fast = _fast(ServerConfig(), codec)
    assert fast.last_progress == 0.0
    assert fast.receive(b"EHLO x.example\r\n", BIG, 3.0)
    assert fast.last_progress == 3.0
    assert fast.receive(b"NOOP", BIG, 4.0) == b""  # no command complete: no progress
    assert fast.last_progress == 3.0
    assert fast.receive(b"\r\n", BIG, 5.0)
    assert fast.last_progress == 5.0


@pytest.mark.parametrize("codec", BACKENDS)
def test_data_alone_is_not_progress(codec: ModuleType) -> None:
    _, fast = _fast(ServerConfig(), codec)
    fast.receive(b"EHLO x.example\r\n", BIG, 1.0)
    fast.receive(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n", BIG, 2.0)
    assert fast.last_progress == 2.0
    assert fast.receive(b"DATA\r\n", BIG, 3.0) == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    assert fast.last_progress == 2.0


@pytest.mark.parametrize("codec", BACKENDS)
def test_content_is_progress_at_the_rate(codec: ModuleType) -> None:
    conn, fast = _fast(ServerConfig(), codec, data_min_rate=100.0, now=0.0)
    for line in SINK[:4]:
        assert fast.receive(line, BIG, 0.0) is not None
    assert fast.receive(b"12345678\r\n", BIG, 0.0) == b""  # started at 0: min(0, 0.1)
    assert fast.last_progress == 0.0
    assert fast.receive(b"abcdefgh\r\n", BIG, 5.0) == b""  # min(5, 0 + 20 / 100)
    assert fast.last_progress == 0.2
    assert fast.receive(b"y" * 498 + CRLF, BIG, 6.0) == b""  # min(6, 0 + 520 / 100)
    assert fast.last_progress == 5.2
    assert fast.receive(b"z" * 10, BIG, 100.0) == b""  # min(100, 0 + 530 / 100)
    assert fast.last_progress == 5.3
    assert fast.receive(CRLF + b".\r\n", BIG, 7.0) == b"250 2.0.0 OK\r\n"
    assert fast.last_progress == 7.0  # the end is progress at any rate
    # The next message's content counts from its own start.
    assert fast.receive(b"".join(SINK[1:4]), BIG, 8.0) is not None
    assert fast.last_progress == 8.0
    assert fast.receive(b"x" * 8 + CRLF, BIG, 20.0) == b""  # started at 20
    assert fast.last_progress == 20.0
    assert fast.receive(b"x" * 98 + CRLF, BIG, 20.5) == b""  # min(20.5, 20 + 110 / 100)
    assert fast.last_progress == 20.5
    assert fast.receive(b"x" * 298 + CRLF, BIG, 20.5) == b""  # min(20.5, 20 + 410 / 100)
    assert fast.last_progress == 20.5
    state = conn.take_over(fast)
    got = fields(state)
    assert (got["last_progress"], got["data_started"], got["data_bytes"]) == (20.5, 20.0, 410)


@pytest.mark.parametrize("codec", BACKENDS)
def test_content_and_end_in_one_read(codec: ModuleType) -> None:
    conn, fast = _fast(ServerConfig(), codec, data_min_rate=100.0, now=0.0)
    assert fast.receive(SINK[0], BIG, 1.0) is not None
    assert fast.receive(b"".join(SINK[1:4]), BIG, 2.0) is not None
    assert fast.receive(b"x" * 998 + b"\r\n.\r\n", BIG, 3.0) == b"250 2.0.0 OK\r\n"
    assert fast.last_progress == 3.0
    state = conn.take_over(fast)
    got = fields(state)
    assert (got["last_progress"], got["data_started"]) == (3.0, None)


@pytest.mark.parametrize("codec", BACKENDS)
def test_content_without_a_rate_is_progress(codec: ModuleType) -> None:
    _, fast = _fast(ServerConfig(), codec, data_min_rate=None, now=0.0)
    for line in SINK[:4]:
        fast.receive(line, BIG, 1.0)
    assert fast.receive(b"x" * 5000 + CRLF, BIG, 9.0) == b""
    assert fast.last_progress == 9.0


@pytest.mark.parametrize("codec", BACKENDS)
def test_a_tls_hello_on_the_plaintext_port(codec: ModuleType) -> None:
    hello = TLS_HELLO + b"EHLO x.example\r\n"
    conn, fast = _fast(ServerConfig(), codec)
    assert fast.receive(hello, BIG, 1.0) is None
    state = conn.take_over(fast)
    got = fields(state)
    assert (got["unread"], got["received_any"], got["items"]) == (hello, False, [])
    assert conn.closed
    assert _drain(conn, None) == [[CLOSED]]
    assert conn.data_to_send() == b""
    check(ServerConfig(), codec, [hello, b"EHLO x.example\r\n"])
    check(ServerConfig(), codec, [b"", hello])


@pytest.mark.parametrize("codec", BACKENDS)
def test_a_tls_hello_on_a_tls_connection_is_input(codec: ModuleType) -> None:
    config = ServerConfig(tls_active=True)
    conn, fast = _fast(config, codec)
    assert fast.receive(TLS_HELLO + CRLF, BIG, 1.0) is None
    state = conn.take_over(fast)
    got = fields(state)
    assert (got["unread"], got["received_any"], len(got["items"])) == (b"", True, 1)
    check(config, codec, [TLS_HELLO + CRLF + b"EHLO x.example\r\n"])


@pytest.mark.parametrize("codec", BACKENDS)
def test_stopping_at_the_limit(codec: ModuleType) -> None:
    conn, fast = _fast(ServerConfig(), codec)
    fast.receive(b"EHLO x.example\r\n", BIG, 1.0)
    group = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
    assert fast.receive(group, 1, 2.0) is None
    state = conn.take_over(fast)
    got = fields(state)
    assert (got["hello"], got["mail"].address, got["recipients"]) == ("EHLO", "a@b.example", [])
    assert (got["in_data"], got["junk"], got["closed"]) == (False, 0, False)
    assert got["replies"] == b"250 2.1.0 OK\r\n"
    assert [item.verb for item in got["items"]] == ["RCPT"] and got["unread"] == b""
    _drain(conn, None)
    assert conn.data_to_send() == b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n"
    for limit in (1, 2, 3):
        check(ServerConfig(), codec, [b"EHLO x.example\r\n", group + b"DATA\r\n"], limit=limit)


@pytest.mark.parametrize("codec", BACKENDS)
def test_the_limit_counts_items(codec: ModuleType) -> None:
    _, fast = _fast(ServerConfig(), codec)
    assert fast.receive(b"EHLO x.example\r\n", 1, 1.0)  # one item, one allowed
    assert fast.receive(b"NOOP", 0, 1.0) == b""  # no item: nothing to stop at
    group = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
    assert fast.receive(group, 3, 2.0) is None  # NOOP, MAIL, RCPT; DATA is the fourth


@pytest.mark.parametrize("codec", BACKENDS)
def test_receive_after_it_stopped(codec: ModuleType) -> None:
    conn, fast = _fast(ServerConfig(), codec)
    assert fast.receive(b"VRFY x\r\n", BIG, 1.0) is None
    with pytest.raises(RuntimeError):
        fast.receive(b"NOOP\r\n", BIG, 2.0)
    conn.take_over(fast)
    with pytest.raises(RuntimeError):
        fast.receive(b"NOOP\r\n", BIG, 2.0)
    _drain(conn, None)
    assert not conn.closed and conn.data_to_send().startswith(b"252 ")


@pytest.mark.parametrize("codec", BACKENDS)
def test_it_stops_after_quit(codec: ModuleType) -> None:
    conn, fast = _fast(ServerConfig(), codec)
    assert fast.receive(b"EHLO x.example\r\n", BIG, 1.0)
    assert not fast.closed
    assert fast.receive(b"MAIL FROM:<a@b.example>\r\nQUIT\r\nNOOP\r\n", BIG, 2.0) is None
    assert fast.closed  # the I/O layer may end the session without take_over
    got = fields(conn.take_over(fast))
    assert got["closed"] is True and got["mail"] is not None
    assert got["replies"] == b"250 2.1.0 OK\r\n221 2.0.0 Bye\r\n"
    assert conn.closed
    assert _drain(conn, None) == [[CLOSED]]
    assert conn.data_to_send() == got["replies"]
    with pytest.raises(RuntimeError):
        fast.receive(b"NOOP\r\n", BIG, 3.0)


@pytest.mark.parametrize("codec", BACKENDS)
def test_receive_after_take_over(codec: ModuleType) -> None:
    conn, fast = _fast(ServerConfig(), codec)
    assert fast.receive(b"EHLO x.example\r\n", BIG, 1.0)
    conn.take_over(fast)
    with pytest.raises(RuntimeError):
        fast.receive(b"NOOP\r\n", BIG, 2.0)


def _dialect(conn: Any, response: Response, event: Any) -> Response:
    return response


UNSUPPORTED: dict[str, dict[str, Any]] = {
    "dialect": {"dialect": _dialect},
    "lmtp": {"lmtp": True},
    "require_starttls": {"require_starttls": True, "starttls": True},
    "auth_required": {"auth_required": True, "auth_mechanisms": ("PLAIN",)},
    "command_call_limits": {"command_call_limits": {None: 10}},
}


@pytest.mark.parametrize("codec", BACKENDS)
@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_no_fast_path_for(codec: ModuleType, name: str) -> None:
    config = ServerConfig(**UNSUPPORTED[name])
    assert _conn(config, codec).fast_path(data_min_rate=RATE, now=0.0) is None
    assert ServerConnection.fast_start(config, codec=codec, data_min_rate=RATE, now=0.0) is None


@pytest.mark.parametrize("codec", BACKENDS)
@pytest.mark.parametrize("data", [b"EHLO x.example\r\n", b"E", TLS_HELLO])
def test_no_fast_path_after_input(codec: ModuleType, data: bytes) -> None:
    conn = _conn(ServerConfig(), codec)
    _drain(conn, data)
    assert conn.fast_path(data_min_rate=RATE, now=0.0) is None


@pytest.mark.parametrize("codec", BACKENDS)
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_a_fast_path_for(codec: ModuleType, name: str) -> None:
    config = _config([name])
    assert _conn(config, codec).fast_path(data_min_rate=None, now=0.0) is not None
    assert ServerConnection.fast_start(config, codec=codec, data_min_rate=None, now=0.0)
    check(config, codec, SINK)


Case = tuple[dict[str, Any], list[bytes]]
CASES: dict[str, Case] = {
    # Each limit is the state machine's: the fast path stops before it.
    "junk": ({"max_junk_commands": 2}, [b"NOOP\r\n", b"RSET\r\n", b"NOOP\r\n", b"NOOP\r\n"]),
    "junk forgiven": (
        {"max_junk_commands": 2},
        [b"NOOP\r\nNOOP\r\n", *SINK[:6], b"RSET\r\n", b"NOOP\r\n", b"NOOP\r\n"],
    ),
    "recipients": (
        {"max_recipients": 2},
        [SINK[0], SINK[1], SINK[2] * 3, b"DATA\r\n", b".\r\n"],
    ),
    "helo pipelined": ({}, [b"HELO x\r\nMAIL FROM:<a@b.example>\r\n"]),
    "helo session pipelined": ({}, [b"HELO x\r\n", SINK[1] + SINK[2]]),
    "ehlo pipelined": ({}, [b"EHLO x.example\r\nNOOP\r\n"]),
    "data pipelined": ({}, [SINK[0], b"".join(SINK[1:5])]),
    "data lenient": ({"strict_pipelining": False}, [b"".join(SINK)]),
    "noop pipelined": ({}, [SINK[0], b"NOOP\r\nRSET\r\n"]),
    "mail before hello": ({}, [SINK[1], SINK[0], SINK[1]]),
    "nested mail": ({}, [SINK[0], SINK[1], SINK[1]]),
    "rcpt before mail": ({}, [SINK[0], SINK[2]]),
    "data without rcpt": ({}, [SINK[0], SINK[1], b"DATA\r\n", SINK[2], b"DATA\r\n"]),
    "params": ({}, [SINK[0], b"MAIL FROM:<a@b.example> SIZE=10\r\n", SINK[2]]),
    "utf8 rcpt": ({"smtputf8": False}, [SINK[0], SINK[1], "RCPT TO:<ü@d.example>\r\n".encode()]),
    "utf8 mail": ({}, [SINK[0], "MAIL FROM:<ü@b.example>\r\n".encode(), SINK[2]]),
    "bare lf": ({}, [*SINK[:4], b"a\nb\r\n.\r\n", SINK[0]]),
    "bare lf normalized": ({"bare_newline": "normalize"}, [*SINK[:4], b"a\nb\r\n.\r\n"]),
    "too big": ({"max_message_size": 50}, [*SINK[:4], b"x" * 60 + b"\r\n.\r\n", SINK[1]]),
    "overlong": ({}, [SINK[0], b"NOOP " + b"x" * 600 + b"\r\n", b"NOOP\r\n"]),
    "lhlo": ({}, [b"LHLO x\r\n", SINK[0]]),
    "http": ({}, [b"GET / HTTP/1.0\r\n"]),
    "quit": ({}, [*SINK[:3], b"QUIT\r\n"]),
    "bdat": ({}, [*SINK[:3], b"BDAT 5 LAST\r\nhello", b"NOOP\r\n"]),
    "starttls": ({"starttls": True}, [SINK[0], b"STARTTLS\r\n", b"EHLO x\r\n"]),
    "errors": (
        {"max_errors": 3, "soft_error_limit": 2},
        [SINK[0], b"x\r\n", b"y\r\n", SINK[1], b"z\r\n"],
    ),
    "no codes": ({"enhanced_status_codes": False}, SINK),
}


@pytest.mark.parametrize("codec", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("limit", [1, BIG])
def test_cases(codec: ModuleType, name: str, limit: int) -> None:
    options, reads = CASES[name]
    config = ServerConfig(**options)
    check(config, codec, reads, limit=limit)
    check(config, codec, [b"".join(reads)], limit=limit)
    for i in range(len(reads)):
        check(config, codec, reads, limit=limit, handover=i)


# -- discrepancies found (regression tests: each fails until the fast path matches) ------------


def _one_read(conn: ServerConnection, data: bytes) -> tuple[bytes, bool]:
    _drain(conn, data)
    return conn.data_to_send(), conn.closed


@pytest.mark.parametrize("codec", BACKENDS)
@pytest.mark.parametrize("before", ["unstarted", "refused", "shut down"])
def test_only_a_greeted_open_connection_runs_fast(codec: ModuleType, before: str) -> None:
    """fast_path() checks only that no input came: on a connection not greeted yet (the
    pregreet rule, checklist B3: 554 and close), refused (refuse_connection) or shut down,
    the state machine reads nothing more, and a fast path must not answer either (or
    fast_path() returns None)."""

    def make() -> ServerConnection:
        conn = ServerConnection(ServerConfig(), codec=codec)
        conn.answer_at_once(KINDS)
        if before == "refused":
            conn.refuse_connection(Response.of(421, "busy", "4.7.0"))
        elif before == "shut down":
            conn.start()
            conn.shutdown()
        return conn

    data = b"EHLO x.example\r\n"
    expected = _one_read(make(), data)
    conn = make()
    fast = conn.fast_path(data_min_rate=RATE, now=0.0)
    if fast is None:
        return
    out = fast.receive(data, BIG, 1.0)
    if out is None:
        conn.take_over(fast)
        got = _one_read(conn, b"")
    else:
        got = (conn.data_to_send() + out, conn.closed)
    assert got == expected


MUTATIONS: dict[str, tuple[dict[str, Any], dict[str, Any], list[bytes]]] = {
    "max_recipients": ({}, {"max_recipients": 1}, [SINK[0], SINK[1], SINK[2], SINK[2]]),
    "pipelining": ({}, {"pipelining": False}, [SINK[0]]),
    "strict_pipelining": (
        {"strict_pipelining": False},
        {"strict_pipelining": True},
        [SINK[0], SINK[1] + SINK[2] + b"DATA\r\nx\r\n.\r\n"],
    ),
    "max_junk_commands": ({}, {"max_junk_commands": 1}, [b"NOOP\r\n", b"NOOP\r\n"]),
    # Read by fast_start()'s greeting and replies, and by its reader.
    "hostname": ({}, {"hostname": "other.example"}, [SINK[0], b"EHLO x.example\r\n"]),
    "max_message_size": ({}, {"max_message_size": 50}, [*SINK[:4], b"x" * 60 + b"\r\n.\r\n"]),
}


@pytest.mark.parametrize("codec", BACKENDS)
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_config_changed_after_a_connection_used_it(codec: ModuleType, name: str) -> None:
    """The state machine reads its ServerConfig live (and _tables() makes its cached
    replies again when a field they depend on changes); fast_path()'s replies and limits,
    cached in _tables(...).fast, are kept from the first connection's config."""
    before, after, reads = MUTATIONS[name]
    config = ServerConfig(**before)
    assert _conn(config, codec).fast_path(data_min_rate=RATE, now=0.0) is not None
    # fast_start() keeps what it makes on the config, until a field changes.
    assert ServerConnection.fast_start(config, codec=codec, data_min_rate=RATE, now=0.0)
    for field_name, value in after.items():
        setattr(config, field_name, value)
    check(config, codec, reads)


@pytest.mark.parametrize("codec", BACKENDS)
def test_no_fast_start_once_the_config_leaves_it(codec: ModuleType) -> None:
    config = ServerConfig()
    assert ServerConnection.fast_start(config, codec=codec, data_min_rate=RATE, now=0.0)
    config.lmtp = True
    assert ServerConnection.fast_start(config, codec=codec, data_min_rate=RATE, now=0.0) is None
    config.lmtp = False
    assert ServerConnection.fast_start(config, codec=codec, data_min_rate=RATE, now=0.0)


@pytest.mark.parametrize("codec", BACKENDS)
def test_fresh_has_the_replies_and_limits_and_none_of_the_state(codec: ModuleType) -> None:
    """ServerFastPath.fresh(), what fast_start() gives each session from one prototype:
    a used fast path's copy answers a new session as a new one made with its arguments."""
    config = ServerConfig(max_message_size=50, max_recipients=1)
    started = ServerConnection.fast_start(config, codec=codec, data_min_rate=RATE, now=0.0)
    assert started is not None
    used = started[0]
    assert used.receive(SINK[0], BIG, 3.0) is not None
    assert used.receive(SINK[1] + SINK[2] + b"DATA\r\n", BIG, 3.0) is not None
    assert used.receive(b"abc", BIG, 3.0) == b""
    fresh = used.fresh(7.0)
    assert fresh.last_progress == 7.0 and not fresh.closed
    assert fresh.reader is not used.reader and fresh.reader.mode == "command"
    assert fresh.reader.max_message_size == 50 == used.reader.max_message_size
    assert fresh.reader.buffered == 0
    expected = run_fast(config, codec, [SINK[0], SINK[1], SINK[2] + SINK[2]], [8.0] * 3, BIG)
    got = [fresh.receive(data, BIG, 8.0) for data in (SINK[0], SINK[1], SINK[2] + SINK[2])]
    # The second RCPT is over max_recipients: the fast path stops before it, as before.
    assert got[:2] == expected.sent[1:3] and got[2] is None
    state = fresh.take_over()
    assert len(state[3]) == 1 and not state[4]  # its own recipient; not in the used one's DATA
    assert state[7] == b"250 2.1.5 OK\r\n"  # the first RCPT's reply, not yet returned


@pytest.mark.parametrize("codec", BACKENDS)
def test_fast_start_reads_with_the_reader_resume_adopts(codec: ModuleType) -> None:
    """fast_start() greets as start() does; resume() reads on with the fast path's reader
    (its buffered input included) and sends no second greeting."""
    config = ServerConfig()
    started = ServerConnection.fast_start(config, codec=codec, data_min_rate=None, now=0.0)
    assert started is not None
    fast, greeting = started
    assert greeting == _conn(config, codec).data_to_send()
    reads = [b"EHLO x.example\r\n", b"MAIL FROM:<a@b.example> SIZE=10\r\nRC", b"PT TO:<c@d>\r\n"]
    plain = _conn(config, codec)
    plain.data_to_send()
    expected = []
    for data in reads:
        _drain(plain, data)
        expected.append(plain.data_to_send())
    assert fast.receive(reads[0], BIG, 1.0) == expected[0]
    # SIZE stops the fast path; its reader holds the half-read RCPT.
    assert fast.receive(reads[1], BIG, 2.0) is None
    conn = ServerConnection.resume(fast, config, codec=codec)
    assert conn._reader is fast.reader
    conn.answer_at_once(KINDS)
    conn.take_over(fast)
    _drain(conn, None)
    assert conn.data_to_send() == expected[1]
    _drain(conn, reads[2])
    assert conn.data_to_send() == expected[2] == b"250 2.1.5 OK\r\n"
    assert _state(conn) == _state(plain)
