"""Issue 10's property, the one that would have caught ``SIZE=²``: Hypothesis drives the
whole server (the asyncio ``SMTP`` protocol, its hooks and ServerConnection, over a fake
transport) with arbitrary command lines, ESMTP parameters (Unicode included), DATA and
BDAT sequences, AUTH exchanges and chunkings, with and without a handler's hooks, on both
codec backends. Whatever it sends:

- no ``421 ... internal server error`` and no logged traceback;
- every reply is a well-formed RFC 5321 reply with a code from 200 to 599;
- sent one step at a time, each command gets exactly one reply (two when the second is
  the 421 that ends the session), until the server closes;
- the same bytes in arbitrary chunks (pipelined, split anywhere) get the same replies.

Bounded: a few dozen examples a variant, a fake transport, no sockets, no sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferrosmtp import _core, _pure
from ferrosmtp.server import MISSING, AuthResult, Server

PEER = ("192.0.2.7", 40000)
INTERNAL = b"internal server error"

# -- what a client may send --------------------------------------------------------------

unicode_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12
)
ascii_word = st.text(alphabet="abcxyzABC0123456789.-+=<>@:;/_²", min_size=0, max_size=10)
unicode_digits = st.text(  # "²", "١٢": str.isdigit() takes them, int() may refuse them
    st.one_of(
        st.sampled_from("²³¹⁰①⑨½"),  # isdigit() or numeric, but not for int()
        st.sampled_from("²³¹⁰①⑨½"),
        st.sampled_from("١٢३৯𝟗0123456789"),  # decimal digits: int() reads them
        st.characters(categories=("Nd", "No"), exclude_characters="0123456789"),
    ),
    min_size=1,
    max_size=4,
)
param_value = st.one_of(
    st.sampled_from(
        [
            "1000",
            "0",
            "²",
            "١٢",
            "99999999999999999999999",
            "8BITMIME",
            "7BIT",
            "BINARYMIME",
            "FULL",
            "HDRS",
            "NEVER",
            "SUCCESS,FAILURE",
            "DELAY,DELAY",
            "rfc822;a+40b",
            "utf-8;x",
            "<>",
            "abc+2",
            "",
        ]
    ),
    ascii_word,
    unicode_text,
    unicode_digits,
    unicode_digits,
    unicode_digits,
)
param = st.builds(
    lambda key, value, bare: key if bare else f"{key}={value}",
    st.sampled_from(
        [
            "SIZE",
            "SIZE",
            "SIZE",
            "BODY",
            "SMTPUTF8",
            "SMTPUTF8",
            "RET",
            "ENVID",
            "AUTH",
            "NOTIFY",
            "ORCPT",
            "FOO",
            "size",
            "Body",
            "X-Ü",
        ]
    ),
    param_value,
    st.booleans(),
)
good_address = st.sampled_from(["a@b.example", "c@d.example", "x@y.example", "y@z.example"])
address = st.one_of(
    good_address,
    good_address,
    st.sampled_from(
        [
            "a@b.example",
            "x@y.example",
            "y@z.example",
            "",
            "postmaster",
            "δοκιμή@παράδειγμα.δοκιμή",
            '"a b"@c.example',
            "@a,@b:c@d.example",
        ]
    ),
    st.builds(lambda a, b: f"{a}@{b}", ascii_word, ascii_word),
    unicode_text,
)
mail = st.builds(
    lambda verb, addr, params, bracket: (
        f"{verb}:{'<' if bracket else ''}{addr}"
        f"{'>' if bracket else ''}{''.join(' ' + p for p in params)}"
    ),
    st.sampled_from(["MAIL FROM", "MAIL FROM", "RCPT TO", "RCPT TO", "mail from", "RCPT TO: "]),
    address,
    st.lists(param, max_size=4),
    st.sampled_from([True, True, True, False]),
)
# Well-formed MAIL and RCPT with one interesting parameter: what reaches the checks of
# each parameter's value (SIZE=² was fault 1).
clean_mail = st.builds(
    lambda verb, addr, utf8, key, value: (
        f"{verb}:<{addr}>{' SMTPUTF8' if utf8 and verb.startswith('MAIL') else ''} {key}={value}"
    ),
    st.sampled_from(["MAIL FROM", "RCPT TO"]),
    good_address,
    st.booleans(),
    st.sampled_from(["SIZE", "SIZE", "BODY", "RET", "ENVID", "AUTH", "NOTIFY", "ORCPT"]),
    st.one_of(unicode_digits, param_value),
)
simple = st.sampled_from(
    [
        "EHLO c.example",
        "HELO c.example",
        "LHLO c.example",
        "EHLO",
        "EHLO [192.0.2.1]",
        "RSET",
        "NOOP",
        "NOOP x",
        "VRFY a",
        "EXPN a",
        "HELP",
        "HELP MAIL",
        "QUIT",
        "STARTTLS",
        "AUTH PLAIN",
        "AUTH PLAIN AGEAYg==",
        "AUTH PLAIN =",
        "AUTH LOGIN",
        "AUTH LOGIN YQ==",
        "AUTH CRAM-MD5",
        "AUTH PLAIN !!",
        "*",
        "YQ==",
        "",
        "GET / HTTP/1.1",
        "DATA x",
        "RSET x",
        "BDAT",
        "BDAT x",
        "BDAT -1",
        "BDAT 3 LASTX",
    ]
)
# One command line: bare CRs and LFs may be in it, a CRLF (which would end it) may not.
any_line = st.one_of(unicode_text, st.binary(max_size=30).map(lambda b: b.decode("latin-1"))).map(
    lambda text: text.replace("\r\n", "")
)
line = st.one_of(
    simple, mail, any_line, st.builds(lambda n: "NOOP " + "x" * n, st.integers(500, 700))
)
body = st.lists(
    st.one_of(unicode_text, st.sampled_from([".", "..", ". x", "From x", "\x1b[2J"])), max_size=4
).map(lambda lines: "".join(f"{x}\r\n" for x in lines).encode("utf-8"))


@st.composite
def step(draw: Any) -> tuple[str, bytes, bytes]:
    """One thing a client does: ("line", command) or ("data", body) or ("bdat", ...)."""
    kind = draw(st.sampled_from(["mail"] * 4 + ["line"] * 4 + ["rset", "data", "bdat"]))
    if kind == "rset":  # a new transaction: MAIL's parameters are checked again
        return "line", b"RSET", b""
    if kind == "mail":
        return "line", draw(st.one_of(mail, clean_mail)).encode("utf-8"), b""
    if kind == "line":
        return "line", draw(line).encode("utf-8", "surrogateescape"), b""
    if kind == "data":
        return "data", b"DATA\r\n", draw(body)
    chunk = draw(st.binary(max_size=40))
    size = draw(st.sampled_from([len(chunk), len(chunk), 0, len(chunk) + 1]))
    last = draw(st.booleans())
    return (
        "bdat",
        f"BDAT {size}{' LAST' if last else ''}\r\n".encode(),
        chunk[:size].ljust(size, b"x"),
    )


# -- a handler whose answers depend only on what it is asked (so replays agree) ---------


class Hooks:
    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, name: str, responses: list[str]
    ) -> list[str]:
        session.host_name = name
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> Any:
        if "x" in address:
            return "550 5.1.0 no such sender"
        if "y" in address:
            return MISSING
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> Any:
        if "x" in address:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK" if "y" not in address else MISSING

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content or b""
        return "554 5.6.0 odd" if len(content) % 3 == 1 else "250 2.0.0 OK"

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        return "250 OK" if not arg else "250-multi\r\n250 line"

    async def handle_VRFY(self, server: Any, session: Any, envelope: Any, arg: str) -> Any:
        return MISSING


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    return AuthResult(success=data.login == b"a" and data.password == b"b", handled=False)


# -- a fake transport --------------------------------------------------------------------


class Transport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.out = bytearray()
        self.closed = False
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return PEER if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Session:
    """One server protocol on a fake transport, on a loop of its own."""

    def __init__(self, backend: ModuleType, hooked: bool, strict: bool) -> None:
        self.loop = asyncio.new_event_loop()
        handler = Hooks() if hooked else object()
        self.server = Server(
            handler,
            hostname="mx.test",
            loop=self.loop,
            codec=backend,
            authenticator=authenticator,
            auth_require_tls=False,
            auth_failure_delay=0,
            strict_pipelining=strict,
            soft_error_limit=3,
            error_sleep=0.0001,
            data_size_limit=60,
            max_recipients=3,
            recipient_overshoot_limit=2,
            max_auth_failures_per_ip=None,
            data_min_rate=None,
        )
        self.transport = Transport(self.loop)
        self.smtp = self.server.factory()
        self.transport.protocol = self.smtp
        self.smtp.connection_made(self.transport)
        self.settle()

    def settle(self) -> None:
        """Run the loop until the connection has nothing left to do (bounded)."""

        async def idle() -> None:
            for _ in range(2000):
                await asyncio.sleep(0)
                busy = self.smtp._task is not None and self.smtp._input_waiter is None
                if not busy and not self.loop._ready:  # type: ignore[attr-defined]
                    return
                await asyncio.sleep(0.0001)
            raise AssertionError("the connection never settled")

        self.loop.run_until_complete(idle())

    def send(self, data: bytes) -> bytes:
        before = len(self.transport.out)
        if not self.transport.closed:
            self.smtp.data_received(data)
            self.settle()
        return bytes(self.transport.out[before:])

    def close(self) -> None:
        if not self.transport.closed:
            self.transport.close()
        self.settle_quietly()
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def settle_quietly(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0))


def replies(backend: ModuleType, data: bytes) -> list[Any]:
    reader = backend.ReplyReader()
    got = reader.feed(data)
    assert reader.buffered == 0, f"a partial reply: {data[-80:]!r}"
    for reply in got:
        assert 200 <= reply.code <= 599
    return list(got)


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="ferrosmtp")
    yield caplog


def check_logs(caplog: pytest.LogCaptureFixture) -> None:
    bad = [
        r for r in caplog.records if r.exc_info is not None or "internal error" in r.getMessage()
    ]
    assert bad == [], [r.getMessage() for r in bad]


VARIANTS = pytest.mark.parametrize(
    ("backend", "hooked"),
    [(_core, False), (_core, True), (_pure, False), (_pure, True)],
    ids=["rust", "rust-hooks", "pure", "pure-hooks"],
)


@VARIANTS
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    hello=st.sampled_from(["EHLO c.example", "EHLO c.example", "HELO c.example", "NOOP"]),
    steps=st.lists(step(), min_size=1, max_size=14),
    strict=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
)
def test_the_whole_server_answers_every_command_once_and_never_fails(
    backend: ModuleType,
    hooked: bool,
    hello: str,
    steps: list[tuple[str, bytes, bytes]],
    strict: bool,
    cuts: list[int],
    no_tracebacks: pytest.LogCaptureFixture,
) -> None:
    no_tracebacks.clear()
    steps = [("line", hello.encode(), b""), *steps]
    session = Session(backend, hooked, strict)
    sent = bytearray()
    waits: set[int] = set()  # after STARTTLS a client must wait for the reply (RFC 3207)
    try:
        greeting = replies(backend, bytes(session.transport.out))
        assert [r.code for r in greeting] == [220]
        for kind, first, rest in steps:
            if session.transport.closed:
                break
            if kind == "line":
                data = first + b"\r\n"
            elif kind == "bdat":
                data = first + rest
            else:
                data = first
            sent += data
            if data[:8].upper() == b"STARTTLS":
                waits.add(len(sent))
            out = session.send(data)
            assert INTERNAL not in out, out
            got = replies(backend, out)
            if session.transport.closed:
                assert len(got) <= 2, got  # a refusal, then the 421 that ends the session
            else:
                assert len(got) == 1, (data, got)
            if kind == "data" and got and got[-1].code == 354 and not session.transport.closed:
                data = rest + b".\r\n"
                sent += data
                out = session.send(data)
                assert INTERNAL not in out
                got = replies(backend, out)
                assert len(got) == (1 if not session.transport.closed else len(got)) and got
        whole = bytes(session.transport.out)
    finally:
        session.close()
    check_logs(no_tracebacks)
    if strict:
        return  # pipelined replays would (rightly) be refused at the sync points
    # The same bytes, pipelined and cut anywhere: the same replies.
    replay = Session(backend, hooked, strict=False)
    try:
        start = 0
        for cut in sorted({c for c in cuts if c < len(sent)} | waits):
            replay.send(bytes(sent[start:cut]))
            start = cut
        replay.send(bytes(sent[start:]))
        assert bytes(replay.transport.out) == whole
    finally:
        replay.close()
    check_logs(no_tracebacks)


@VARIANTS
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    verb=st.sampled_from(["MAIL FROM", "RCPT TO"]),
    addr=st.one_of(good_address, address),
    params=st.lists(st.one_of(param, unicode_digits.map(lambda d: f"SIZE={d}")), max_size=3),
    utf8=st.booleans(),
)
def test_any_esmtp_parameters_get_one_reply_and_never_fail(
    backend: ModuleType,
    hooked: bool,
    verb: str,
    addr: str,
    params: list[str],
    utf8: bool,
    no_tracebacks: pytest.LogCaptureFixture,
) -> None:
    """The same, aimed at MAIL's and RCPT's parameters, one transaction at a time."""
    no_tracebacks.clear()
    session = Session(backend, hooked, strict=True)
    try:
        session.send(b"EHLO c.example\r\n")
        if verb == "RCPT TO":
            session.send(b"MAIL FROM:<a@b.example>" + (b" SMTPUTF8" if utf8 else b"") + b"\r\n")
        elif utf8:
            params = ["SMTPUTF8", *params]
        line = f"{verb}:<{addr}>{''.join(' ' + p for p in params)}\r\n"
        out = session.send(line.encode("utf-8", "surrogateescape"))
        assert INTERNAL not in out, (line, out)
        got = replies(backend, out)
        assert len(got) == 1 or (session.transport.closed and len(got) <= 2), (line, got)
    finally:
        session.close()
    check_logs(no_tracebacks)
