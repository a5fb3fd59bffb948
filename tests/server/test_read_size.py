"""The server reads at most ``READ_SIZE`` bytes a time (server/reads.py): asyncio's socket
transports are told so when the connection is made, any other transport is switched to
``SmallReads`` on its first bigger read. A big message arrives over many reads, split
anywhere, and whole, on either loop, in plain text and over STARTTLS."""

from __future__ import annotations

import asyncio
import smtplib
from typing import Any

import pytest

from ferrosmtp import handlers
from ferrosmtp.server.reads import READ_SIZE, SmallReads, limit_reads, small_reads
from tests.security.support import LOOPS

from .support import HOST, Certs, Raw, running

# Lines that start with a dot (stuffed on the wire), long lines, and a size that is not a
# multiple of the read size, so that reads end inside lines and inside CRLFs.
LINES = [b"." * (n % 7) + b"x" * (n % 997) for n in range(3000)]
BODY = b"".join(line + b"\r\n" for line in LINES)
WIRE = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in LINES)


class Keeper:
    """A DATA hook: the server leaves the fast path and the state machine delivers."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.contents.append(envelope.original_content)
        return "250 2.0.0 kept"


def _send(raw: Raw, greet: bool = True) -> bytes:
    if greet:
        raw.greet()
    raw.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    assert raw.replies(3)[2].startswith(b"354 ")
    raw.send(WIRE + b".\r\n")
    return raw.reply(timeout=20)


def _reads_small(smtp: Any, loop: str) -> None:
    """How this connection reads now that a message bigger than a read came."""
    transport = smtp.transport
    if loop == "asyncio":
        assert transport.max_size == READ_SIZE  # told when it was made, never switched
        assert transport.get_protocol() is smtp
    else:
        reader = transport.get_protocol()
        assert isinstance(reader, SmallReads) and reader.protocol is smtp


@pytest.mark.parametrize("loop", LOOPS)
def test_a_message_in_many_reads_arrives_whole(loop: str) -> None:
    assert len(WIRE) > 40 * READ_SIZE
    keeper = Keeper()
    with running(keeper, loop=loop) as c, Raw(c.port) as raw:
        assert _send(raw) == b"250 2.0.0 kept\r\n"
        (smtp,) = list(c.server._connections)
        _reads_small(smtp, loop)
        # And the next, through the same reads.
        assert _send(raw, greet=False) == b"250 2.0.0 kept\r\n"
        raw.send(b"QUIT\r\n")
        assert raw.reply() == b"221 2.0.0 Bye\r\n"
    assert keeper.contents == [BODY, BODY]


@pytest.mark.parametrize("loop", LOOPS)
def test_the_fast_path_takes_a_message_in_many_reads(loop: str) -> None:
    with running(handlers.Sink(), loop=loop) as c, Raw(c.port) as raw:
        assert _send(raw) == b"250 2.0.0 OK\r\n"
        (smtp,) = list(c.server._connections)
        assert smtp._fast is not None  # the codec took it, read after read
        _reads_small(smtp, loop)
        raw.send(b"QUIT\r\n")
        assert raw.reply() == b"221 2.0.0 Bye\r\n"
        assert raw.read_to_eof() == b""  # and the connection closed, through SmallReads


@pytest.mark.parametrize("loop", LOOPS)
def test_a_big_message_over_starttls_arrives_whole(loop: str) -> None:
    certs, keeper = Certs(), Keeper()
    with running(keeper, loop=loop, tls_context=certs.server_context()) as c:
        with smtplib.SMTP(HOST, c.port, timeout=20) as client:
            client.starttls(context=certs.client_context())
            for _ in range(2):
                client.sendmail("a@b.example", ["c@d.example"], BODY)
            (smtp,) = list(c.server._connections)
            reader = smtp.transport.get_protocol()  # TLS reads of 256 KiB: switched
            assert isinstance(reader, SmallReads) and reader.protocol is smtp
    assert keeper.contents == [BODY, BODY]


def test_a_small_message_leaves_the_reads_alone() -> None:
    with running(handlers.Sink(), loop=LOOPS[-1]) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
        raw.replies(3)
        raw.send(b"x" * (READ_SIZE // 2) + b"\r\n.\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"
        (smtp,) = list(c.server._connections)
        assert smtp.transport.get_protocol() is smtp


class Switchable(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol


def test_small_reads_switches_once_and_forwards_everything() -> None:
    got: list[Any] = []

    class Plain(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            got.append(data)

        def eof_received(self) -> bool:
            got.append("eof")
            return True

        def connection_lost(self, exc: Exception | None) -> None:
            got.append(exc)

        def pause_writing(self) -> None:
            got.append("pause")

        def resume_writing(self) -> None:
            got.append("resume")

    transport, plain = Switchable(), Plain()
    small_reads(transport, plain)
    reader = transport.protocol
    small_reads(transport, plain)
    assert transport.protocol is reader  # once
    buffer = reader.get_buffer(-1)
    assert len(buffer) == READ_SIZE
    buffer[:3] = b"abc"
    reader.buffer_updated(3)
    buffer[:3] = b"xyz"  # the next read reuses the buffer: the bytes given were a copy
    assert reader.eof_received() is True
    reader.pause_writing()
    reader.resume_writing()
    error = ConnectionResetError()
    reader.connection_lost(error)
    assert got == [b"abc", "eof", "pause", "resume", error]


@pytest.mark.parametrize("transport", [object(), asyncio.Transport()])
def test_a_transport_without_asyncio_read_size_is_left_alone(transport: Any) -> None:
    limit_reads(transport)  # uvloop's and TLS transports have no max_size
    assert not hasattr(transport, "max_size")
