"""How much the server reads at a time: at most ``READ_SIZE`` bytes a read.

Event loops read up to 256 KiB a time (asyncio's ``sock.recv(256 KiB)``, uvloop's buffer
of 256,000 bytes), a new bytes object each read. With message content that big the server
waited, with CPU to spare. smtp-source sending 1 MiB messages over 4 sessions to ``serve
--sink`` (benches/load_server.py with benches/read_size_server.py, medians of 9): asyncio's
loop 749 msgs/s with 256 KiB reads, 1,145 with 32 KiB; uvloop 825 and 1,107. 16, 64 and
128 KiB were each slower than 32. Likely reasons (not measured apart): a small read is
scanned by the core while it is still in the cache the kernel copied it into, and the
client's data leaves its socket buffer sooner.

- asyncio's socket transports read ``max_size`` bytes a recv(): ``limit_reads`` sets it
  when the connection is made, which costs nothing a read.
- Others (uvloop's, TLS) cannot be told. A connection whose read comes bigger than
  ``READ_SIZE`` is switched to ``SmallReads``, which reads into a buffer of that size; a
  session of small messages never is, and pays nothing for it (a ``BufferedProtocol`` for
  every session costs two Python calls a read: 10% fewer one-connection sessions a second
  on uvloop in an experiment).
"""

from __future__ import annotations

import asyncio

__all__ = ["READ_SIZE", "SmallReads", "limit_reads", "small_reads"]

READ_SIZE = 32 << 10

# One buffer per process: each read is copied out of it before the next read begins.
_VIEW = memoryview(bytearray(READ_SIZE))


def limit_reads(transport: asyncio.BaseTransport) -> None:
    """Make an asyncio socket transport read at most ``READ_SIZE`` bytes a recv().

    Only where the transport has asyncio's ``max_size`` (its selector and proactor socket
    transports); the others are switched by ``small_reads`` if they ever read more."""
    if isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = READ_SIZE  # type: ignore[attr-defined]


def small_reads(transport: asyncio.BaseTransport, protocol: asyncio.Protocol) -> None:
    """Read for ``protocol`` through ``SmallReads`` from now on (once per connection)."""
    if not isinstance(transport.get_protocol(), SmallReads):
        transport.set_protocol(SmallReads(protocol))


class SmallReads(asyncio.BufferedProtocol):
    """Reads of ``READ_SIZE`` bytes for a plain protocol, each given to its data_received."""

    __slots__ = ("protocol",)
    protocol: asyncio.Protocol  # the protocol the reads are for

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol = protocol

    def get_buffer(self, sizehint: int) -> memoryview:
        """asyncio: where the next read goes (the process's buffer; ``sizehint`` is moot)."""
        return _VIEW

    def buffer_updated(self, nbytes: int) -> None:
        """asyncio: ``nbytes`` were read; a copy goes to the protocol."""
        self.protocol.data_received(_VIEW[:nbytes].tobytes())

    def eof_received(self) -> bool | None:
        """asyncio: the client closed its side; the protocol's answer."""
        return self.protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection is gone; passed on."""
        self.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        """asyncio: the client reads too slowly; passed on."""
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        """asyncio: the client caught up; passed on."""
        self.protocol.resume_writing()
