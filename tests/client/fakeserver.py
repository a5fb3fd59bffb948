"""A small, scriptable SMTP/LMTP server for client tests, in the test's own event loop.

It records every chunk it reads (so a test can prove that MAIL, RCPT and DATA arrived in
one read: pipelining), answers like a plain server by default, and can be told to
misbehave: refuse recipients, inject bytes after its STARTTLS reply, answer 421, send a
reply nobody asked for, stay silent, die mid-transaction, give LMTP per-recipient replies,
or accept BDAT. ``server_proc.py`` runs it in a process of its own, to be killed.

Loopback only; every connection is closed when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field


@dataclass
class Received:
    """One message as the fake server saw it (content unstuffed, CRLF kept)."""

    mail_from: str
    mail_params: str
    rcpt_to: list[str]
    rcpt_params: list[str]
    content: bytes
    via: str  # "DATA" or "BDAT"


@dataclass
class Behaviour:
    """How the fake server answers; tests change fields before or during a run."""

    greeting: bytes = b"220 fake.test ESMTP ready\r\n"
    capabilities: list[str] = field(
        default_factory=lambda: ["PIPELINING", "SIZE 10485760", "8BITMIME", "SMTPUTF8"]
    )
    lmtp: bool = False
    reject_rcpt: dict[str, bytes] = field(default_factory=dict)  # address -> reply line
    reject_mail: bytes | None = None
    data_reply: bytes = b"354 End data with <CR><LF>.<CR><LF>\r\n"
    final_reply: bytes = b"250 2.0.0 Ok: queued\r\n"
    lmtp_replies: dict[str, bytes] = field(default_factory=dict)  # per-recipient after data
    starttls_reply: bytes = b"220 2.0.0 Ready to start TLS\r\n"  # extra bytes = injection
    tls_context: ssl.SSLContext | None = None
    silent_after: str | None = None  # stop answering once this verb is seen
    close_after: str | None = None  # drop the connection once this verb is seen
    close_after_once: str | None = None  # the same, for the next occurrence only
    final_delay: float = 0.0  # seconds before the reply to the end of the content
    stop_reading_after: str | None = None  # answer this verb, then never read again
    reply_421_after: str | None = None  # answer this verb with 421 and close
    ehlo_reply: bytes | None = None  # replaces the generated EHLO reply
    helo_ok: bool = True
    auth: Callable[[bytes], bytes] | None = None  # AUTH line or SASL response line -> reply
    data_without_recipients: bool = False  # answer DATA with 354 even if nobody was accepted
    # verb (or "CONNECT", the greeting) -> bytes sent a moment after its reply
    extra_after: dict[str, bytes] = field(default_factory=dict)
    capabilities_after_tls: list[str] | None = None  # the EHLO capabilities once TLS is on
    # Die (``FakeServer.die``: abort the connection, or kill the process) on reading this
    # verb, before answering it; "content": on the first bytes of message content; "end":
    # after the end of the content, before the final reply.
    die_at: str | None = None
    on_message: Callable[[Received], None] | None = None  # called before the final reply


class FakeSession(asyncio.Protocol):
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.behaviour = server.behaviour
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.mode = "command"  # "command" | "data" | "bdat" | "auth" | "tls" | "wait" | "silent"
        self.bdat_left = 0
        self.bdat_last = False
        self.content = bytearray()
        self.mail_from = ""
        self.mail_params = ""
        self.rcpts: list[str] = []
        self.rcpt_params: list[str] = []
        self.accepted: list[str] = []
        self.tls = server.implicit_tls is not None

    # asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.sessions.append(self)
        transport.write(self.behaviour.greeting)
        extra = self.behaviour.extra_after.get("CONNECT")
        if extra:  # a moment after the greeting, before any command
            asyncio.get_running_loop().call_later(0.02, self.write, extra)

    def data_received(self, data: bytes) -> None:
        self.server.reads.append(data)
        if self.mode == "silent":
            return
        self.buffer += data
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # helpers

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _process(self) -> None:
        while self.buffer and self.mode not in ("silent", "tls", "wait") and self.transport:
            if self.mode in ("data", "bdat") and self.behaviour.die_at == "content":
                self.server.die(self)
                return
            if self.mode == "data":
                end = self.buffer.find(b"\r\n.\r\n")
                start_dot = self.buffer.startswith(b".\r\n") and not self.content
                if start_dot:
                    self.buffer = self.buffer[3:]
                    self._end_message(b"", "DATA")
                    continue
                if end < 0:
                    return
                raw = self.buffer[: end + 2]
                self.buffer = self.buffer[end + 5 :]
                lines = raw.split(b"\r\n")
                unstuffed = b"\r\n".join(ln[1:] if ln.startswith(b".") else ln for ln in lines)
                self._end_message(unstuffed, "DATA")
                continue
            if self.mode == "bdat":
                take = self.buffer[: self.bdat_left]
                self.buffer = self.buffer[len(take) :]
                self.content += take
                self.bdat_left -= len(take)
                if self.bdat_left:
                    return
                self.mode = "command"
                if self.bdat_last:
                    self._end_message(bytes(self.content), "BDAT")
                else:
                    self.write(b"250 2.0.0 chunk ok\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            line = self.buffer[:end]
            self.buffer = self.buffer[end + 2 :]
            if self.mode == "auth":
                self.server.commands.append(line)
                self._auth(line)
            else:
                self._command(line)

    def _end_message(self, content: bytes, via: str) -> None:
        self.mode = "command"  # or "wait" below, until a delayed reply is sent
        received = Received(
            self.mail_from, self.mail_params, list(self.rcpts), list(self.rcpt_params), content, via
        )
        if self.behaviour.die_at == "end":
            self.server.die(self)
            return
        self.server.messages.append(received)
        if self.behaviour.on_message is not None:
            self.behaviour.on_message(received)
        if self.behaviour.lmtp:
            for rcpt in self.accepted:
                self.write(self.behaviour.lmtp_replies.get(rcpt, b"250 2.0.0 delivered\r\n"))
        elif self.behaviour.final_delay:
            # Replies stay in order: nothing more is processed until this one is sent.
            self.mode = "wait"
            loop = asyncio.get_running_loop()
            loop.call_later(self.behaviour.final_delay, self._delayed_final)
        else:
            self.write(self.behaviour.final_reply)
        self._reset()

    def _delayed_final(self) -> None:
        self.write(self.behaviour.final_reply)
        self.mode = "command"
        self._process()

    def _reset(self) -> None:
        self.content = bytearray()
        self.mail_from = ""
        self.mail_params = ""
        self.rcpts = []
        self.rcpt_params = []
        self.accepted = []

    def _command(self, line: bytes) -> None:
        b = self.behaviour
        self.server.commands.append(line)
        verb = line.split(b" ", 1)[0].upper().decode("ascii", "replace")
        if b.die_at == verb:
            self.server.die(self)
            return
        if b.close_after == verb:
            self.close()
            return
        if b.close_after_once == verb:
            b.close_after_once = None
            self.close()
            return
        if b.reply_421_after == verb:
            self.write(b"421 4.3.2 Service shutting down\r\n")
            self.close()
            return
        if b.silent_after == verb:
            self.mode = "silent"
            return
        arg = line[len(verb) + 1 :].decode("utf-8", "replace")
        self._reply_to(verb, arg, line)
        if b.stop_reading_after == verb and self.transport is not None:
            self.transport.pause_reading()  # the client's writes now fill the buffers
            self.mode = "silent"
        extra = b.extra_after.get(verb)
        if extra:  # a moment later, so it arrives while the client is idle
            asyncio.get_running_loop().call_later(0.02, self.write, extra)

    def _reply_to(self, verb: str, arg: str, line: bytes) -> None:
        b = self.behaviour
        if verb in ("EHLO", "LHLO"):
            if b.ehlo_reply is not None:
                self.write(b.ehlo_reply)
                return
            if (verb == "LHLO") != b.lmtp:
                self.write(b"500 5.5.1 command unrecognized\r\n")
                return
            capabilities = b.capabilities
            if self.tls and b.capabilities_after_tls is not None:
                capabilities = b.capabilities_after_tls
            lines = ["fake.test greets you", *capabilities]
            out = "".join(
                f"250{'-' if i < len(lines) - 1 else ' '}{text}\r\n" for i, text in enumerate(lines)
            )
            self.write(out.encode())
        elif verb == "HELO":
            self.write(b"250 fake.test\r\n" if b.helo_ok else b"502 no HELO\r\n")
        elif verb == "STARTTLS":
            self.write(b.starttls_reply)
            if b.tls_context is not None and b.starttls_reply.startswith(b"220"):
                assert self.transport is not None
                self.transport.pause_reading()  # the next bytes are the TLS ClientHello
                self.mode = "tls"
                asyncio.get_running_loop().create_task(self._start_tls())
        elif verb == "AUTH":
            self._auth(line)
        elif verb == "MAIL":
            if b.reject_mail is not None:
                self.write(b.reject_mail)
                return
            address, _, params = arg[5:].partition(" ")
            self.mail_from = address.strip("<>")
            self.mail_params = params
            self.write(b"250 2.1.0 Ok\r\n")
        elif verb == "RCPT":
            address, _, params = arg[3:].partition(" ")
            address = address.strip("<>")
            self.rcpts.append(address)
            self.rcpt_params.append(params)
            if address in b.reject_rcpt:
                self.write(b.reject_rcpt[address])
            elif not self.mail_from and not self.server.allow_rcpt_without_mail:
                self.write(b"503 5.5.1 Error: need MAIL command\r\n")
            else:
                self.accepted.append(address)
                self.write(b"250 2.1.5 Ok\r\n")
        elif verb == "DATA":
            if not self.accepted and not b.data_without_recipients:
                self.write(b"554 5.5.1 Error: no valid recipients\r\n")
                return
            self.write(b.data_reply)
            if b.data_reply.startswith(b"354"):
                self.mode = "data"
        elif verb == "BDAT":
            parts = arg.split()
            self.bdat_left = int(parts[0])
            self.bdat_last = len(parts) > 1 and parts[1].upper() == "LAST"
            self.mode = "bdat"
        elif verb == "RSET":
            self._reset()
            self.write(b"250 2.0.0 Ok\r\n")
        elif verb == "NOOP":
            self.write(b"250 2.0.0 Ok\r\n")
        elif verb in ("VRFY", "EXPN"):
            self.write(f"252 2.0.0 {arg}\r\n".encode())
        elif verb == "HELP":
            self.write(b"214 2.0.0 help yourself\r\n")
        elif verb == "QUIT":
            self.write(b"221 2.0.0 Bye\r\n")
            self.close()
        else:
            self.write(b"502 5.5.2 Error: command not recognized\r\n")

    def _auth(self, line: bytes) -> None:
        auth = self.behaviour.auth
        reply = auth(line) if auth else b"504 5.5.4 mechanism not supported\r\n"
        self.mode = "auth" if reply.startswith(b"334") else "command"
        self.write(reply)

    async def _start_tls(self) -> None:
        assert self.transport is not None and self.behaviour.tls_context is not None
        loop = asyncio.get_running_loop()
        self.server.tls_started += 1
        try:
            transport = await loop.start_tls(
                self.transport, self, self.behaviour.tls_context, server_side=True
            )
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            return  # the client gave up (as it should, in the injection tests)
        if transport is None:
            return
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.mode = "command"
        self.tls = True
        self.server.tls_completed += 1
        self._process()  # what arrived over TLS before start_tls() returned


class FakeServer:
    """Listens on 127.0.0.1:<ephemeral>; ``async with FakeServer() as server``."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        unix_path: str | None = None,
        port: int = 0,
        die: Callable[[FakeSession], None] | None = None,
    ) -> None:
        self.behaviour = behaviour or Behaviour()
        self.implicit_tls = implicit_tls  # TLS from the first byte (RFC 8314)
        self.unix_path = unix_path  # listen on this Unix socket instead of TCP
        self.reads: list[bytes] = []
        self.commands: list[bytes] = []
        self.messages: list[Received] = []
        self.sessions: list[FakeSession] = []
        self.tls_started = 0  # handshakes the server began
        self.tls_completed = 0  # handshakes that succeeded
        self.allow_rcpt_without_mail = False
        self.port = port  # 0: an ephemeral port, known once listening
        self.deaths = 0  # times ``die`` ran
        self._die = die
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeServer:
        loop = asyncio.get_running_loop()
        if self.unix_path is not None:
            self._server = await loop.create_unix_server(
                lambda: FakeSession(self), self.unix_path, ssl=self.implicit_tls
            )
            return self
        self._server = await loop.create_server(
            lambda: FakeSession(self), "127.0.0.1", self.port, ssl=self.implicit_tls
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in self.sessions:
            session.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def die(self, session: FakeSession) -> None:
        """``Behaviour.die_at`` was reached: by default the connection is aborted (the
        client sees a reset, as from a crashed server); ``die`` may kill the process."""
        self.deaths += 1
        if self._die is not None:
            self._die(session)
        elif session.transport is not None:
            session.transport.abort()
        session.mode = "silent"

    def read_containing(self, *needles: bytes) -> bytes | None:
        """The first single read that contains every needle, if any."""
        for chunk in self.reads:
            if all(n in chunk for n in needles):
                return chunk
        return None


@contextlib.asynccontextmanager
async def fake_server(**behaviour: object) -> AsyncIterator[FakeServer]:
    async with FakeServer(Behaviour(**behaviour)) as server:  # type: ignore[arg-type]
        yield server


def verbs(server: FakeServer) -> list[bytes]:
    """The verbs of the commands ``server`` read, upper-cased (``MAIL``, not ``MAIL FROM``)."""
    return [line.split(b" ", 1)[0].split(b":", 1)[0].upper() for line in server.commands]
