"""Hypothesis drives ClientConnection with arbitrary client operations and arbitrary server
byte streams, chunked anywhere. Both codec backends.

The operations: EHLO/HELO/LHLO, MAIL and RCPT with parameters, DATA and message content,
BDAT, RSET, NOOP, QUIT, VRFY, EXPN, HELP, STARTTLS and ``tls_started()``, AUTH and SASL
responses, pipelined groups, and a lost connection; with arguments good, bad and hostile.
The server: well-formed replies of every code (multi-line, with enhanced codes, EHLO
capabilities with odd values), 421 at any time, unsolicited replies, malformed and huge
lines, mixed codes, and bytes after a 220 to STARTTLS.

What must hold, whatever happens:

- Only the documented exceptions come out: ``LocalProtocolError`` (and its subclasses
  ``ExtensionNotSupported`` and ``MessageTooLarge``) when the caller asks for something
  the session does not allow now, ``ValueError`` for a bad argument, both leaving the
  connection exactly as it was and producing no byte; ``RemoteProtocolError`` when the
  server breaks the protocol, after which the connection is closed with nothing
  outstanding.
- Every byte the connection emits is a well-formed command line (ends in CRLF, no CR, LF,
  NUL or other control character inside, the verb it was asked for), message content
  (no bare CR or LF, CRLF.CRLF only at its very end, unstuffing to the normalized input)
  or a BDAT chunk (its header counts exactly the octets that follow).
- Replies are matched to the commands this test sent, in the order it sent them (tracked
  here independently of the connection), with one reply per accepted recipient after an
  LMTP message; a well-formed reply stream gives exactly the expected events.
- The outstanding-command FIFO is exactly what was sent and not yet answered (server bytes
  never grow it), and the reply reader's buffer stays bounded.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import Phase as Stage
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ferrosmtp import _core, _pure
from ferrosmtp.protocol.client import (
    Answer,
    ClientConnection,
    Command,
    LocalProtocolError,
    Phase,
    RemoteProtocolError,
    ServerClosing,
)

MAX_REPLY_LINE = 2048  # ClientConnection's default

# --- What the client is asked to do --------------------------------------------------------

ADDRESSES = [
    "a@example.org",
    "<b@example.org>",
    "",
    "<>",
    "postmaster",
    "<Postmaster>",
    '"john doe"@example.org',
    '"a>b"@example.org',
    "a@[192.0.2.1]",
    "a@[IPv6:2001:db8::1]",
    "<@relay.example:c@example.org>",
    "δοκιμή@παράδειγμα.δοκιμή",
    "a@example.org\r\nRCPT TO:<x@evil.test>",
    "a@example.org> NOTIFY=NEVER",
    "a@example.org\x00",
    "a b@example.org",
    "Bob <b@example.org>",
    "a@example.org\n",
]
address = st.one_of(st.sampled_from(ADDRESSES), st.text(max_size=12))
GOOD_ADDRESSES = ["", "a@example.org", "<b@example.org>", "c@example.org", '"d e"@example.org']
PARAM_KEYS = ["SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "NOTIFY", "ORCPT", "AUTH", "X-FOO"]
PARAM_VALUES = [None, "10", "5000", "²", "8BITMIME", "BINARYMIME", "HDRS", "rfc822;a+40b"]
params = st.one_of(
    st.none(),
    st.dictionaries(
        st.one_of(st.sampled_from(PARAM_KEYS), st.sampled_from(["bad key", "", "K=V", "é"])),
        st.one_of(
            st.sampled_from(PARAM_VALUES),
            st.sampled_from(["x\r\n", "a b", "=", "", "δ", "x\x00"]),
            st.text(max_size=6),
        ),
        max_size=3,
    ),
)
HELLO_NAMES = ["client.test", "[127.0.0.1]", "[IPv6:::1]", "bad name", "x\r\nMAIL", "δ.test", ""]
hello_name = st.one_of(st.sampled_from(HELLO_NAMES), st.text(max_size=8))
query_argument = st.one_of(
    st.sampled_from(["postmaster", "staff list", "пример", "x\r\nRSET", " x", ""]),
    st.text(max_size=8),
)
BODY_TOKENS = [b"\r\n.\r\n", b"\n.\n", b"\r.\r", b".", b"..", b"\r", b"\n", b"\r\n", b".\r\n"]
body = st.lists(st.one_of(st.sampled_from(BODY_TOKENS), st.binary(max_size=12)), max_size=6).map(
    b"".join
)
mechanism = st.sampled_from(["PLAIN", "LOGIN", "cram-md5", "XOAUTH2", "bad mech"])
sasl_text = st.one_of(
    st.none(), st.sampled_from(["", "=", "*", "dXNlcg==", "not base64!", "abc", "x\r\n"])
)

# A pipelined group: (verb, address, params, smtputf8) for each command.
group_item = st.tuples(
    st.sampled_from(["MAIL", "RCPT", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "EHLO", "VRFY"]),
    address,
    params,
    st.booleans(),
)

# --- What the server sends -------------------------------------------------------------------

reply_code = st.builds(
    lambda a, b, c: a * 100 + b * 10 + c,
    st.integers(2, 5),
    st.integers(0, 5),
    st.integers(0, 9),
)
reply_text = st.one_of(
    st.sampled_from(["", "ok", "2.0.0 ok", "5.7.1 no", "4.2.0 later", "\tx", "é"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=16),
)
capability = st.one_of(
    st.sampled_from(
        [
            "PIPELINING",
            "PIPELINING",
            "SIZE 1000",
            "SIZE 0",
            "SIZE",
            "8BITMIME",
            "SMTPUTF8",
            "DSN",
            "CHUNKING",
            "STARTTLS",
            "AUTH PLAIN LOGIN",
            "AUTH=LOGIN",
            "ENHANCEDSTATUSCODES",
            "BINARYMIME",
        ]
    ),
    # Numbers that are not plain ASCII digits: str.isdigit() takes some of them.
    st.sampled_from(["²", "١٢٣", "-1", "1e3", "+5", " 7", "99999999999999999999999"]).map(
        "SIZE {}".format
    ),
    st.tuples(
        st.sampled_from(["SIZE", "AUTH", "X-EXT", "PIPELINING"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=8),
    ).map(" ".join),
)
# How to answer one outstanding command: the kind of reply (0-13: its usual success code,
# 14-15: the other positive code (251, 334...), 16: 421, 17-19: ``code``), text, lines.
# Mostly successes, so that sessions get deep into transactions before something breaks.
answer_plan = st.lists(
    st.tuples(
        st.integers(0, 19),
        reply_code,
        reply_text,
        st.integers(1, 3),
        st.lists(capability, max_size=6),
    ),
    min_size=1,
    max_size=10,
)
# The capabilities of a greeted session: each extension the client uses, on or off.
OPTIONAL_EXTENSIONS = [
    "PIPELINING",
    "SIZE 1000",
    "8BITMIME",
    "SMTPUTF8",
    "DSN",
    "CHUNKING",
    "STARTTLS",
    "AUTH PLAIN LOGIN CRAM-MD5",
    "BINARYMIME",
]
session_capabilities = st.tuples(
    st.lists(st.booleans(), min_size=len(OPTIONAL_EXTENSIONS), max_size=len(OPTIONAL_EXTENSIONS)),
    st.lists(capability, max_size=2),
).map(lambda t: [e for e, on in zip(OPTIONAL_EXTENSIONS, t[0], strict=True) if on] + t[1])
cuts = st.lists(st.integers(0, 400), max_size=4)
GARBAGE_TOKENS = [
    b"250 ok\r\n",
    b"421 4.3.2 shutting down\r\n",
    b"250-a\r\n251 b\r\n",
    b"354 go ahead\r\n",
    b"220 Ready\r\n",
    b"334 \r\n",
    b"250-mx.test\r\n250 AUTH LOGIN\r\n",
    b"250-",
    b"250",
    b"2",
    b"\r\n",
    b"\r",
    b"\n",
    b"\x00",
    b"600 six\r\n",
    b"25O ok\r\n",
    b"250 ok\n",
]
# Over the reader's limits: a line over 2048 octets (and one with no end), a reply over
# 64 KiB, a reply over 256 lines. Built by name, so that Hypothesis's reprs stay short.
HUGE_TOKENS = {
    "long line": b"250 " + b"x" * 3000 + b"\r\n",
    "endless line": b"y" * 5000,
    "long reply": (b"250-" + b"z" * 2000 + b"\r\n") * 40,
    "many lines": b"250-a\r\n" * 300,
}


def huge_token(name: str) -> bytes:
    return HUGE_TOKENS[name]


garbage = st.lists(
    st.one_of(
        st.sampled_from(GARBAGE_TOKENS),
        st.sampled_from(sorted(HUGE_TOKENS)).map(huge_token),
        st.binary(max_size=8),
    ),
    min_size=1,
    max_size=6,
).map(b"".join)

# --- Checks on what the client emits --------------------------------------------------------

COMMAND_LINE = re.compile(rb"[^\x00-\x1f\x7f]*\r\n")
SASL_LINE = re.compile(rb"(?:[A-Za-z0-9+/]*={0,2}|\*)\r\n")
BDAT_HEADER = re.compile(rb"BDAT (\d+)( LAST)?\r\n")
BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
USUAL_SUCCESS = {
    "CONNECT": 220,
    "EHLO": 250,
    "HELO": 250,
    "LHLO": 250,
    "MAIL": 250,
    "RCPT": 250,
    "DATA": 354,
    ".": 250,
    "BDAT": 250,
    "RSET": 250,
    "NOOP": 250,
    "QUIT": 221,
    "STARTTLS": 220,
    "AUTH": 235,
    "AUTH-RESPONSE": 235,
    "VRFY": 252,
    "EXPN": 250,
    "HELP": 214,
}
OTHER_POSITIVE = {"RCPT": 251, "AUTH": 334, "AUTH-RESPONSE": 334, "VRFY": 250, "HELP": 211}


def normalized(data: bytes) -> bytes:
    """Bare CR and LF as CRLF, and a final CRLF if the content does not end in one."""
    out = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return out if not out or out.endswith(b"\r\n") else out + b"\r\n"


def unstuffed(wire: bytes) -> bytes:
    """DATA content (without its final ``.\\r\\n``) with the leading dots undoubled."""
    lines = wire.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@dataclass
class ModelTransaction:
    accepted: list[str] = field(default_factory=list)


@dataclass
class Expected:
    """A command this test sent and has not seen the reply to."""

    verb: str
    argument: str = ""
    transaction: ModelTransaction | None = None
    per_recipient: bool = False  # LMTP end of content: one reply per accepted recipient


def alive(machine: ClientMachine) -> bool:
    """The session can still send or receive something (``advance`` connects again when
    it cannot; the other rules also check that a finished session refuses everything)."""
    return not machine.conn.closed or machine.conn.outstanding > 0


class ClientMachine(RuleBasedStateMachine):
    codec: ModuleType = _core

    def __init__(self) -> None:
        super().__init__()
        self.conn = ClientConnection(codec=self.codec)
        self.expected: list[Expected] = [Expected("CONNECT")]
        self.transaction: ModelTransaction | None = None  # the one the last MAIL opened
        self.body_in = b""  # message content given to send_data since the 354
        self.body_out = b""  # and what the connection produced for it
        self.bdat_in = b""
        self.bdat_out = b""
        self.capabilities: list[str] = []

    @initialize(
        lmtp=st.booleans(),
        max_line=st.sampled_from([512, MAX_REPLY_LINE]),
        greeted=st.integers(0, 3),
        capabilities=session_capabilities,
    )
    def start(self, lmtp: bool, max_line: int, greeted: int, capabilities: list[str]) -> None:
        """A new session; most start greeted and identified, to spend the steps deeper."""
        self.conn = ClientConnection(codec=self.codec, lmtp=lmtp, max_reply_line=max_line)
        self.capabilities = capabilities  # the server's, when the client connects again
        if greeted:
            self.greet(capabilities)

    @precondition(lambda self: self.conn.closed)
    @rule(capabilities=session_capabilities)
    def reconnect(self, capabilities: list[str]) -> None:
        """After the server broke the session (or QUIT), a new connection to another one."""
        self.conn = ClientConnection(codec=self.codec, lmtp=self.conn.lmtp)
        self.expected = [Expected("CONNECT")]
        self.transaction = None
        self.greet(capabilities)

    def greet(self, capabilities: list[str]) -> None:
        """The greeting, EHLO (LHLO) and its reply, through the same checks as any."""
        assert not self.feed(b"220 mx.test ESMTP\r\n", [])[1]
        name = "client.test"
        self.expect_command(
            self.attempt(lambda: self.conn.ehlo(name)), "LHLO" if self.conn.lmtp else "EHLO", name
        )
        lines = ["mx.test", *capabilities]
        reply = "".join(
            f"250{'-' if i < len(lines) - 1 else ' '}{t}\r\n" for i, t in enumerate(lines)
        )
        events, broken = self.feed(reply.encode(), [])
        assert not broken and [e.reply.code for e in events] == [250]

    # --- Helpers ----------------------------------------------------------------------

    def snapshot(self) -> tuple[Any, ...]:
        conn = self.conn
        return (
            conn.phase,
            conn.outstanding,
            conn.extensions,
            conn.tls,
            conn.authenticated,
            conn.needs_reset,
            conn.accepted_recipients,
            conn.pipelining,
            conn.max_size,
        )

    def attempt(self, operation: Any) -> bytes | None:
        """Run a client operation; a refusal must be documented, emit nothing and change
        nothing."""
        before = self.snapshot()
        try:
            out: bytes = operation()
        except (LocalProtocolError, ValueError):
            assert self.snapshot() == before
            return None
        return out

    def sent_commands(self, out: bytes, commands: list[Expected]) -> None:
        """``out`` is exactly one well-formed line per command, in order."""
        pos = 0
        for command in commands:
            pattern = SASL_LINE if command.verb == "AUTH-RESPONSE" else COMMAND_LINE
            match = pattern.match(out, pos)
            assert match is not None, f"not a command line: {out[pos : pos + 80]!r}"
            line = match.group(0)
            if command.verb != "AUTH-RESPONSE":
                assert line == command.verb.encode() + b"\r\n" or line.startswith(
                    command.verb.encode() + b" "
                ), (line, command.verb)
            pos = match.end()
        assert pos == len(out), f"bytes after the commands: {out[pos:]!r}"
        self.expected.extend(commands)

    def expect_command(self, out: bytes | None, verb: str, argument: str = "") -> None:
        if out is not None:
            transaction = None
            if verb == "MAIL":
                self.open_transaction()
            elif verb in ("RSET", "EHLO", "HELO", "LHLO"):
                self.transaction = None
            if verb == "RCPT":
                transaction = self.transaction
            self.sent_commands(out, [Expected(verb, argument, transaction)])

    def open_transaction(self) -> None:
        self.transaction = ModelTransaction()
        self.bdat_in = self.bdat_out = b""  # BDAT content is counted per transaction

    def feed(self, stream: bytes, cut_points: list[int]) -> tuple[list[Any], bool]:
        """Feed ``stream`` in pieces; returns the events and whether the server was found
        to break the protocol. Checks each event against the commands sent."""
        points = sorted({min(c, len(stream)) for c in cut_points} | {0, len(stream)})
        events: list[Any] = []
        for start, end in itertools.pairwise(points):
            try:
                got = self.conn.receive_data(stream[start:end])
            except RemoteProtocolError:
                assert self.conn.closed and self.conn.outstanding == 0
                self.expected.clear()
                return events, True
            for event in got:
                self.match(event)
            # Server bytes only ever answer what was sent: the FIFO never grows.
            assert self.conn.outstanding == len(self.expected)
            events.extend(got)
        return events, False

    def match(self, event: Any) -> None:
        """The event answers the oldest command this test sent and has no reply for."""
        if isinstance(event, ServerClosing):
            assert not self.expected and event.reply.code == 421
            assert self.conn.closed
            return
        assert isinstance(event, Answer)
        assert self.expected, f"a reply matched to nothing: {event}"
        head = self.expected.pop(0)
        if head.per_recipient:
            recipients = head.transaction.accepted if head.transaction else []
            expanded = [Expected(head.verb, r) for r in recipients or [""]]
            head = expanded[0]
            self.expected[:0] = expanded[1:]
        assert (event.command, event.argument) == (head.verb, head.argument)
        code = event.reply.code
        if head.verb == "DATA" and code == 354:  # the content starts now
            self.body_in = self.body_out = b""
        if head.verb == "RCPT" and 200 <= code < 300 and head.transaction is not None:
            head.transaction.accepted.append(head.argument)
        if code == 421 or head.verb == "QUIT":
            self.expected.clear()

    def well_formed_replies(self, plan: list[Any]) -> tuple[bytes, list[tuple[str, str, int]]]:
        """Replies to the oldest outstanding commands, and the events they must give."""
        stream = b""
        events: list[tuple[str, str, int]] = []
        queue = [(e.verb, e.argument, e.transaction, e.per_recipient) for e in self.expected]
        accepted: dict[int, list[str]] = {}
        for kind, random_code, text, lines, capabilities in plan:
            if not queue:
                break
            verb, argument, txn, per_recipient = queue.pop(0)
            if per_recipient:
                names = accepted.get(id(txn), list(txn.accepted) if txn else []) or [""]
                queue[:0] = [(verb, name, None, False) for name in names[1:]]
                argument = names[0]
            if verb == "AUTH" and kind <= 13:
                code = 334 if kind % 2 else 235  # a challenge, or done at once
            elif kind <= 13:
                code = USUAL_SUCCESS[verb]
            elif kind <= 15:
                code = OTHER_POSITIVE.get(verb, USUAL_SUCCESS[verb])
            elif kind == 16:
                code = 421
            else:
                code = random_code
            if verb in ("EHLO", "LHLO") and code == 250:
                texts = ["mx.test", *capabilities]
            else:
                texts = [text] * lines
            stream += b"".join(
                b"%d%s%s\r\n" % (code, b"-" if i < len(texts) - 1 else b" ", t.encode())
                for i, t in enumerate(texts)
            )
            events.append((verb, argument, code))
            if verb == "RCPT" and 200 <= code < 300 and txn is not None:
                accepted.setdefault(id(txn), list(txn.accepted)).append(argument)
            if code == 421 or verb == "QUIT" or (verb == "STARTTLS" and code == 220):
                break
        return stream, events

    # --- The server ---------------------------------------------------------------------

    @rule(
        plan=answer_plan,
        cut_points=cuts,
        injected=st.one_of(st.none(), st.none(), st.none(), garbage),
    )
    def server_answers(
        self, plan: list[Any], cut_points: list[int], injected: bytes | None
    ) -> None:
        """Well-formed replies to what is outstanding, perhaps followed by junk."""
        stream, expected = self.well_formed_replies(plan)
        if not stream:
            return
        injected = injected or None
        # Exact events can only be expected if no partial reply is waiting to be completed.
        clean = not self.conn._reader.buffered and not self.conn._reader.in_reply
        tls_reply = bool(expected) and expected[-1][0] == "STARTTLS" and expected[-1][2] == 220
        events, broken = self.feed(stream + (injected or b""), cut_points)
        if injected is None and clean:
            assert not broken
            assert [(e.command, e.argument, e.reply.code) for e in events] == expected
            assert self.conn.phase is not Phase.TLS_HANDSHAKE or tls_reply
        elif tls_reply and clean:
            assert broken  # anything after the 220 to STARTTLS is an attack (B6)

    @rule()
    def server_sends_nothing(self) -> None:
        """An empty read is no news: nothing happens, in any phase."""
        before = self.snapshot()
        assert self.conn.receive_data(b"") == []
        assert self.snapshot() == before

    @rule(data=garbage, cut_points=cuts)
    def server_sends_anything(self, data: bytes, cut_points: list[int]) -> None:
        """Junk, unsolicited replies, 421, huge lines: whenever they come."""
        self.feed(data, cut_points)

    # --- The client ---------------------------------------------------------------------

    @rule(verb=st.sampled_from(["EHLO", "HELO", "LHLO", "ehlo"]), name=hello_name)
    def hello(self, verb: str, name: str) -> None:
        conn = self.conn
        if verb == "EHLO":
            out = self.attempt(lambda: conn.send(Command.hello("EHLO", name, codec=self.codec)))
        else:
            operation = {"HELO": conn.helo, "LHLO": conn.lhlo, "ehlo": conn.ehlo}[verb]
            out = self.attempt(lambda: operation(name))
        sent = {"ehlo": "LHLO" if conn.lmtp else "EHLO"}.get(verb, verb)
        self.expect_command(out, sent, name)

    @rule(sender=address, mail_params=params, by_command=st.booleans(), utf8=st.booleans())
    def mail(self, sender: str, mail_params: Any, by_command: bool, utf8: bool) -> None:
        conn = self.conn
        if by_command:
            try:
                command = Command.mail(sender, mail_params, smtputf8=utf8, codec=self.codec)
            except ValueError:
                return
            self.expect_command(self.attempt(lambda: conn.send(command)), "MAIL", command.argument)
            return
        out = self.attempt(lambda: conn.mail(sender, mail_params))
        if out is not None:
            argument = Command.mail(sender, mail_params, smtputf8=True, codec=self.codec).argument
            self.expect_command(out, "MAIL", argument)

    @rule(recipient=address, rcpt_params=params)
    def rcpt(self, recipient: str, rcpt_params: Any) -> None:
        out = self.attempt(lambda: self.conn.rcpt(recipient, rcpt_params))
        if out is not None:
            argument = Command.rcpt(recipient, rcpt_params, smtputf8=True, codec=self.codec)
            self.expect_command(out, "RCPT", argument.argument)

    @rule(items=st.lists(group_item, min_size=1, max_size=6))
    def pipelined_group(self, items: list[Any]) -> None:
        """Several commands in one write: all accepted, or none and no byte."""
        commands: list[Command] = []
        try:
            for verb, addr, group_params, utf8 in items:
                if verb == "MAIL":
                    commands.append(
                        Command.mail(addr, group_params, smtputf8=utf8, codec=self.codec)
                    )
                elif verb == "RCPT":
                    commands.append(
                        Command.rcpt(addr, group_params, smtputf8=utf8, codec=self.codec)
                    )
                elif verb == "EHLO":
                    commands.append(Command.hello("EHLO", "client.test", codec=self.codec))
                elif verb == "VRFY":
                    commands.append(Command.query("VRFY", addr or "x", smtputf8=utf8))
                else:
                    commands.append(Command.simple(verb))
        except ValueError:
            return
        out = self.attempt(lambda: self.conn.send_all(commands))
        if out is None:
            return
        expected = []
        for command in commands:
            if command.verb == "MAIL":
                self.open_transaction()
            elif command.verb in ("RSET", "EHLO"):
                self.transaction = None
            txn = self.transaction if command.verb == "RCPT" else None
            expected.append(Expected(command.verb, command.argument, txn))
        self.sent_commands(out, expected)

    @rule(verb=st.sampled_from(["DATA", "RSET", "NOOP", "QUIT", "STARTTLS"]))
    def simple(self, verb: str) -> None:
        conn = self.conn
        operation = {
            "DATA": conn.data,
            "RSET": conn.rset,
            "NOOP": conn.noop,
            "QUIT": conn.quit,
            "STARTTLS": conn.starttls,
        }[verb]
        self.expect_command(self.attempt(operation), verb)

    @rule(verb=st.sampled_from(["VRFY", "EXPN", "HELP"]), argument=query_argument)
    def query(self, verb: str, argument: str) -> None:
        conn = self.conn
        operations: dict[str, Callable[[str], bytes]] = {
            "VRFY": conn.vrfy,
            "EXPN": conn.expn,
            "HELP": conn.help,
        }
        out = self.attempt(lambda: operations[verb](argument))
        self.expect_command(out, verb, argument)

    @rule(name=mechanism, initial=sasl_text)
    def auth(self, name: str, initial: str | None) -> None:
        out = self.attempt(lambda: self.conn.auth(name, initial))
        self.expect_command(out, "AUTH", name.upper())

    @rule(response=sasl_text)
    def auth_response(self, response: str | None) -> None:
        out = self.attempt(lambda: self.conn.auth_response(response or ""))
        self.expect_command(out, "AUTH-RESPONSE")

    @rule()
    def tls_started(self) -> None:
        handshaking = self.conn.phase is Phase.TLS_HANDSHAKE

        def start_tls() -> bytes:
            self.conn.tls_started()
            return b""  # nothing to send: the next command is a new EHLO

        self.attempt(start_tls)
        if handshaking:
            assert self.conn.tls and self.conn.extensions is None
            assert self.conn.phase is Phase.UNIDENTIFIED

    @rule(data=body)
    def send_data(self, data: bytes) -> None:
        out = self.attempt(lambda: self.conn.send_data(data))
        if out is None:
            return
        self.body_in += data
        self.body_out += out
        stream = self.body_out
        # A CR at the end of a piece is held back: what is out is already final.
        assert BARE_CR_OR_LF.search(stream) is None, stream
        assert b"\r\n.\r\n" not in stream and not stream.startswith(b".\r\n")

    @rule()
    def end_data(self) -> None:
        txn = self.transaction
        out = self.attempt(self.conn.end_data)
        if out is None:
            return
        wire = self.body_out + out
        self.body_in, data = b"", self.body_in
        self.body_out = b""
        assert BARE_CR_OR_LF.search(wire) is None, wire
        assert wire.endswith(b".\r\n")
        assert wire == b".\r\n" or wire.endswith(b"\r\n.\r\n")
        assert b"\r\n.\r\n" not in wire[:-3] and (wire == b".\r\n" or not wire.startswith(b".\r\n"))
        assert unstuffed(wire[:-3]) == normalized(data)
        self.expected.append(Expected(".", "", txn, self.conn.lmtp))
        self.transaction = None

    @rule(data=body, last=st.booleans())
    def bdat(self, data: bytes, last: bool) -> None:
        txn = self.transaction
        out = self.attempt(lambda: self.conn.send_bdat(data, last=last))
        if out is None:
            return
        self.bdat_in += data
        if out:
            header = BDAT_HEADER.match(out)
            assert header is not None, out[:40]
            chunk = out[header.end() :]
            assert int(header.group(1)) == len(chunk)
            assert bool(header.group(2)) == last
            self.bdat_out += chunk
            self.expected.append(
                Expected("BDAT", "LAST" if last else "", txn, last and self.conn.lmtp)
            )
        else:
            assert not last and data in (b"", b"\r")  # nothing, or a CR held for the next
        assert BARE_CR_OR_LF.search(self.bdat_out) is None
        if last:
            assert self.bdat_out == normalized(self.bdat_in)
            self.bdat_in = self.bdat_out = b""
            self.transaction = None

    @rule()
    def connection_lost(self) -> None:
        self.conn.connection_lost()
        self.expected.clear()
        assert self.conn.closed and self.conn.outstanding == 0

    @rule(
        sender=st.sampled_from(GOOD_ADDRESSES),
        recipients=st.lists(st.sampled_from(GOOD_ADDRESSES[2:]), min_size=1, max_size=3),
        pieces=st.lists(body, min_size=1, max_size=3),
        chunked=st.booleans(),
        secure=st.booleans(),
    )
    def advance(
        self, sender: str, recipients: list[str], pieces: list[bytes], chunked: bool, secure: bool
    ) -> None:
        """The next step a real client would take in this phase, so that sessions reach
        message content, BDAT, AUTH and TLS often; the checks are those of each step."""
        if not alive(self):
            self.reconnect(self.capabilities)
        conn = self.conn
        phase = conn.phase
        if conn.outstanding and not conn.pipelining and phase is not Phase.BODY:
            return  # waiting for a reply
        if phase is Phase.UNIDENTIFIED:
            self.hello("ehlo", "client.test")
        elif phase is Phase.TLS_HANDSHAKE:
            self.tls_started()
        elif phase is Phase.AUTH_CHALLENGE:
            self.auth_response("dXNlcg==")
        elif phase is Phase.READY and secure and conn.supports("STARTTLS") and not conn.tls:
            self.simple("STARTTLS")
        elif phase is Phase.READY and secure and conn.supports("AUTH") and not conn.authenticated:
            self.auth("PLAIN", None if chunked else "AHVAcA==")
        elif phase is Phase.READY:
            items = [("MAIL", sender, None, False)]
            if conn.pipelining:
                items += [("RCPT", r, None, False) for r in recipients]
                items += [] if chunked else [("DATA", "", None, False)]
            self.pipelined_group(items)
        elif phase is Phase.MAIL and chunked and conn.accepted_recipients:
            for piece in pieces[:-1]:
                self.bdat(piece, False)
            if not secure:  # else the LAST chunk goes in a later step
                self.bdat(pieces[-1], True)
        elif phase is Phase.MAIL:
            rcpts = [("RCPT", r, None, False) for r in recipients]
            data = [("DATA", "", None, False)]
            if conn.pipelining:
                self.pipelined_group(rcpts + data)
            else:  # one command at a time
                self.pipelined_group(data if conn.accepted_recipients else rcpts[:1])
        elif phase is Phase.CHUNKING:
            self.bdat(pieces[-1], True)
        elif phase is Phase.BODY:
            for piece in pieces:
                self.send_data(piece)
            self.end_data()

    @rule(
        sender=st.sampled_from(GOOD_ADDRESSES),
        recipients=st.lists(st.sampled_from(GOOD_ADDRESSES[2:]), min_size=1, max_size=3),
        pieces=st.lists(body, min_size=1, max_size=3),
        chunked=st.booleans(),
        secure=st.booleans(),
        plan=answer_plan,
        cut_points=cuts,
    )
    def round_trip(
        self,
        sender: str,
        recipients: list[str],
        pieces: list[bytes],
        chunked: bool,
        secure: bool,
        plan: list[Any],
        cut_points: list[int],
    ) -> None:
        """``advance``, then the server answers: one step of a session that goes well."""
        self.advance(sender, recipients, pieces, chunked, secure)
        self.server_answers(plan, cut_points, None)

    # --- Invariants -----------------------------------------------------------------------

    @invariant()
    def fifo_is_what_was_sent(self) -> None:
        assert self.conn.outstanding == len(self.expected)
        assert self.conn.outstanding <= 200  # rules send at most a few commands each

    @invariant()
    def reader_is_bounded(self) -> None:
        assert self.conn._reader.buffered <= MAX_REPLY_LINE

    @invariant()
    def closed_means_nothing_more_to_send(self) -> None:
        if self.conn.closed:
            assert not self.conn.can_send("NOOP") and not self.conn.can_send("MAIL")


class RustClientMachine(ClientMachine):
    codec = _core


class PureClientMachine(ClientMachine):
    codec = _pure


SETTINGS = settings(
    # FERROSMTP_STATEFUL_EXAMPLES=5000 for a longer hunt than the default run.
    max_examples=int(os.environ.get("FERROSMTP_STATEFUL_EXAMPLES", "300")),
    stateful_step_count=50,
    deadline=None,
    # Everything but "explain", which takes minutes on a failing machine of this size.
    phases=[Stage.explicit, Stage.reuse, Stage.generate, Stage.target, Stage.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
RustClientMachine.TestCase.settings = SETTINGS
PureClientMachine.TestCase.settings = SETTINGS
TestClientConnectionRust = RustClientMachine.TestCase
TestClientConnectionPure = PureClientMachine.TestCase
