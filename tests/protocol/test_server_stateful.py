"""Hypothesis drives ServerConnection with arbitrary bytes, chunkings and application
answers: whatever comes in, only well-formed SMTP replies come out, no exception escapes,
and the connection's bounds hold. Both codec backends."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ferrosmtp import _core, _pure
from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import Response
from ferrosmtp.protocol.server import ServerConfig, ServerConnection

TOKENS = [
    b"EHLO c.example\r\n",
    b"HELO c.example\r\n",
    b"LHLO c.example\r\n",
    b"MAIL FROM:<a@b.example>",
    b"MAIL FROM:<>",
    b" SIZE=10",
    b" SIZE=99999999999",
    b" BODY=8BITMIME",
    b" SMTPUTF8",
    b" RET=HDRS",
    b"RCPT TO:<c@d.example>",
    b" NOTIFY=NEVER",
    b" ORCPT=rfc822;x+40y",
    b"RCPT TO:<\xce\xb4@x>",
    b"DATA\r\n",
    b"BDAT 3",
    b"BDAT 0",
    b" LAST",
    b"AUTH PLAIN",
    b"AUTH LOGIN\r\n",
    b" AGFAYg==",
    b"STARTTLS\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"VRFY x\r\n",
    b"EXPN x\r\n",
    b"HELP\r\n",
    b"GET / HTTP/1.1\r\n",
    b"\r\n",
    b"\r",
    b"\n",
    b".",
    b"\r\n.\r\n",
    b"..",
    b"\x00",
    b" ",
    b"x" * 40,
    b"*\r\n",
    b"=\r\n",
    b"\xff",
    b"XFOO\r\n",
]
wire = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.binary(max_size=8)), min_size=1, max_size=12
).map(b"".join)
REPLY_LINE = re.compile(rb"[2-5][0-5][0-9]([ -][^\r\n]*)?\r\n")


class ServerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.conn: ServerConnection | None = None
        self.output = b""
        self.codec: ModuleType = _core

    @initialize(
        codec=st.sampled_from([_core, _pure]),
        lmtp=st.booleans(),
        policy=st.sampled_from(["reject", "normalize"]),
        strict=st.booleans(),
        auth=st.booleans(),
        tls=st.booleans(),
        max_size=st.sampled_from([None, 5, 100, 32 << 20]),
    )
    def start(
        self,
        codec: ModuleType,
        lmtp: bool,
        policy: str,
        strict: bool,
        auth: bool,
        tls: bool,
        max_size: Any,
    ) -> None:
        self.codec = codec
        config = ServerConfig(
            hostname="mx.test",
            lmtp=lmtp,
            bare_newline=policy,
            strict_pipelining=strict,
            auth_mechanisms=("LOGIN", "PLAIN") if auth else (),
            auth_require_tls=False,
            starttls=tls,
            max_message_size=max_size,
            max_command_line=64,
            max_auth_line=64,
            max_recipients=3,
            max_errors=8,
        )
        self.conn = ServerConnection(config, codec=codec)
        self.conn.start()
        self.drain()

    def drain(self) -> None:
        assert self.conn is not None
        self.output += self.conn.data_to_send()

    def answer_pending(self, choice: int) -> None:
        """Answer every waiting event, the way some application might."""
        conn = self.conn
        assert conn is not None
        for _ in range(1000):  # bounded: each answer consumes an item
            event = conn.next_event()
            if event is ev.NEED_DATA or event is ev.CLOSED:
                break
            if not event.needs_answer:
                continue
            if isinstance(event, (ev.Auth, ev.AuthLine)):
                [conn.auth_succeeded, conn.auth_failed, lambda: conn.auth_challenge("Zm9v")][
                    choice % 3
                ]()
            elif isinstance(event, ev.MessageEnd) and conn.config.lmtp:
                conn.respond_lmtp([Response.of(250, "ok")] * len(conn.recipients))
            elif isinstance(event, ev.StartTLS):
                conn.respond_default()
                if choice % 2 and conn.tls_pending:
                    conn.tls_established()
            elif choice % 4 == 3:
                conn.respond(550, "refused by policy", "5.7.1")
            else:
                conn.respond_default()
            choice //= 2
        else:
            raise AssertionError("next_event() never ran out of events")
        self.drain()

    @rule(data=wire, choice=st.integers(0, 255))
    def receive(self, data: bytes, choice: int) -> None:
        assert self.conn is not None
        self.conn.receive_data(data)
        self.answer_pending(choice)

    @rule(data=wire, cut=st.integers(0, 100), choice=st.integers(0, 255))
    def receive_split(self, data: bytes, cut: int, choice: int) -> None:
        assert self.conn is not None
        cut = cut % (len(data) + 1)
        self.conn.receive_data(data[:cut])
        self.answer_pending(choice)
        self.conn.receive_data(data[cut:])
        self.answer_pending(choice >> 1)

    @precondition(lambda self: self.conn is not None and self.conn.tls_pending)
    @rule()
    def handshake_done(self) -> None:
        assert self.conn is not None
        self.conn.tls_established()
        self.answer_pending(0)

    @rule()
    def idle_timeout(self) -> None:
        assert self.conn is not None
        if self.conn.awaiting is None:
            self.conn.timeout()
            self.drain()

    @invariant()
    def only_replies_come_out(self) -> None:
        out = self.output
        pos = 0
        while pos < len(out):
            m = REPLY_LINE.match(out, pos)
            assert m is not None, f"not a reply line at {pos}: {out[pos : pos + 80]!r}"
            pos = m.end()
        # and our own strict reply reader takes it all
        self.codec.ReplyReader(max_lines=10_000, max_reply=10_000_000).feed(out)

    @invariant()
    def bounded(self) -> None:
        if self.conn is not None:
            assert self.conn._reader.buffered <= (1 << 20) + 4096
            assert self.conn.errors <= self.conn.config.max_errors


ServerMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestServerConnection = ServerMachine.TestCase
