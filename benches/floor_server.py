#!/usr/bin/env python3
"""A responder that parses nothing: the floor of any Python SMTP server on a loop.

It greets, answers ``250`` to every line, ``354`` to ``DATA`` and ``250`` at the end of
the data, ``221`` to ``QUIT``, and nothing else: no command parsing, no state machine, no
limits, no storage. ``benches/load_server.py`` runs it beside ``ferrosmtp serve --sink``
on the same event loop, so "how far ferrosmtp is from the floor" is measured in one run.

    python benches/floor_server.py --port 2525 [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

GREETING = b"220 floor ESMTP\r\n"
OK = b"250 ok\r\n"
GO_AHEAD = b"354 go ahead\r\n"
BYE = b"221 bye\r\n"
END_OF_DATA = b"\r\n.\r\n"


# One read buffer for the whole process: each read is copied out of it at once
# (buffer_updated), before the loop can read for another connection. A buffer per
# connection cost a 64 KiB memset per connection (~68k of ~435k instructions a message
# under callgrind, one connection per message), which no real server needs to pay.
READ_VIEW = memoryview(bytearray(65536))


class Floor(asyncio.BufferedProtocol):
    """Reads into the process's one buffer: a plain Protocol on asyncio's loop gets a new
    256 KiB bytes object from every recv (mmap'ed and unmapped by glibc until its dynamic
    threshold rises), which made this floor slower than ferrosmtp on that loop."""

    def __init__(self) -> None:
        self.buffer = b""
        self.in_data = False

    def get_buffer(self, sizehint: int) -> memoryview:
        return READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(READ_VIEW[:nbytes]))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport: asyncio.WriteTransport = transport  # type: ignore[assignment]
        self.transport.write(GREETING)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        out = []
        start = 0
        while True:
            if self.in_data:
                # ``start`` points at the CRLF that may begin the end-of-data marker.
                end = buffer.find(END_OF_DATA, start)
                if end < 0:
                    # Keep only what may be the start of a marker split across reads.
                    start = max(start, len(buffer) - len(END_OF_DATA) + 1)
                    break
                start = end + len(END_OF_DATA)
                self.in_data = False
                out.append(OK)
                continue
            end = buffer.find(b"\r\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 2
            if line[:4] in (b"DATA", b"data"):
                self.in_data = True
                start = end  # an empty message ends with this very CRLF: ".\r\n"
                out.append(GO_AHEAD)
            elif line[:4] in (b"QUIT", b"quit"):
                out.append(BYE)
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:
                out.append(OK)
        self.buffer = buffer[start:]
        if out:
            self.transport.write(b"".join(out))


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Floor, host, port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
