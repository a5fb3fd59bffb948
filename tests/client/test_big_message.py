"""A 100 MiB message goes out with bounded memory, by DATA and by BDAT.

The server is a minimal discarding one in the same process (so it must not keep what it
reads: tracemalloc sees its allocations too). It counts the octets it would store and
checks the end of the data, nothing more; content integrity is covered elsewhere with
smaller messages.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest

from ferrosmtp.client import Client

from .conftest import run

SIZE = 100 * 1024 * 1024


class Discard(asyncio.Protocol):
    """SMTP enough for one client: EHLO, MAIL, RCPT, DATA or BDAT, QUIT."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.mode = "command"
        self.line = b""
        self.tail = b""  # the last bytes of DATA content, to find CRLF.CRLF across reads
        self.bdat_left = 0
        self.bdat_last = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 discard.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        while data:
            if self.mode == "data":
                window = self.tail + data
                end = window.find(b"\r\n.\r\n")
                if end < 0:
                    self.stats["octets"] += len(data)
                    self.tail = window[-4:]
                    return
                self.stats["octets"] += end + 2 - len(self.tail)
                data = window[end + 5 :]
                self.tail = b""
                self.mode = "command"
                self.stats["messages"] += 1
                self.transport.write(b"250 2.0.0 discarded\r\n")
                continue
            if self.mode == "bdat":
                take = min(self.bdat_left, len(data))
                self.stats["octets"] += take
                self.bdat_left -= take
                data = data[take:]
                if self.bdat_left == 0:
                    self.mode = "command"
                    if self.bdat_last:
                        self.stats["messages"] += 1
                    self.transport.write(b"250 2.0.0 chunk\r\n")
                continue
            self.line += data
            data = b""
            while self.mode == "command" and b"\r\n" in self.line:
                line, self.line = self.line.split(b"\r\n", 1)
                self._command(line)
            if self.mode != "command":
                data, self.line = self.line, b""

    def _command(self, line: bytes) -> None:
        assert self.transport is not None
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            self.transport.write(
                b"250-discard.test\r\n250-PIPELINING\r\n250-SIZE 209715200\r\n"
                b"250-8BITMIME\r\n250 CHUNKING\r\n"
            )
        elif verb == b"MAIL":
            self.stats["declared"] = int(line.split(b"SIZE=")[1].split(b" ")[0])
            self.transport.write(b"250 ok\r\n")
        elif verb == b"DATA":
            self.stats["via"] = "DATA"
            self.mode = "data"
            self.transport.write(b"354 go\r\n")
        elif verb == b"BDAT":
            self.stats["via"] = "BDAT"
            parts = line.split()
            self.bdat_left = int(parts[1])
            self.bdat_last = len(parts) > 2
            self.mode = "bdat"
        elif verb == b"QUIT":
            self.transport.write(b"221 bye\r\n")
            self.transport.close()
        else:
            self.transport.write(b"250 ok\r\n")


def body_of(size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    return b"Subject: big\r\n\r\n" + line * ((size - 16) // len(line))


@pytest.mark.parametrize("use_bdat", [False, True], ids=["DATA", "BDAT"])
def test_100_mib_message_with_bounded_memory(use_bdat: bool) -> None:
    stats: dict[str, object] = {"octets": 0, "messages": 0, "declared": 0, "via": ""}
    via = "BDAT" if use_bdat else "DATA"

    async def main() -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Discard(stats), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tracemalloc.start()
        try:
            body = body_of(SIZE)
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            async with Client("127.0.0.1", port, timeout=30, local_hostname="client.test") as c:
                await c.sendmail("a@example.org", ["b@example.org"], body, use_bdat=use_bdat)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            server.close()
        assert before >= len(body)  # the message itself is counted in the peak
        return peak - before

    overhead = run(main(), timeout=120)
    body_size = len(body_of(SIZE))
    assert stats == {"octets": body_size, "messages": 1, "declared": body_size, "via": via}
    # The peak is the message plus bounded buffers: far below 2x the message.
    assert overhead < 16 * 1024 * 1024, overhead
