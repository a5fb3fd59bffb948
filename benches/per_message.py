#!/usr/bin/env python3
"""Per-message cost over an in-memory transport: CPU time, or instructions under callgrind.

Wall-clock rates on a shared machine move with everybody else's load; the work one
message costs does not. This script runs a client or a server against a scripted peer
through a fake transport (no sockets, no kernel: what is left is the Python and Rust work
of the library, plus a small constant for the peer), and reports

* ``cpu``: process CPU time per message (``time.process_time``), median of ``--rounds``;
* ``--callgrind``: instructions per message, counted by ``valgrind --tool=callgrind`` on
  two runs of different lengths (the difference divided by the difference in messages,
  so start-up and imports cancel out). Repeatable to a fraction of a percent whatever
  else the machine does.

    python benches/per_message.py                       # every workload, CPU us/msg
    python benches/per_message.py --only client-pool20 --only client-aiosmtplib20
    python benches/per_message.py --callgrind --only server-reuse --only floor-reuse

Workloads (1 KiB messages, one recipient):

  client-seq            one Client, ``await sendmail()`` in a loop (MAIL RCPT DATA | content)
  client-seq-bdat       the same with ``pipeline_bdat=True`` (MAIL RCPT BDAT LAST: one write)
  client-pool20         Pool(size=20), 20 tasks
  client-aiosmtplib     aiosmtplib.SMTP, ``await sendmail()`` in a loop
  client-aiosmtplib20   20 aiosmtplib.SMTP connections, a task each
  client-raw            no library: the same exchanges with precomputed bytes (the floor)
  server-reuse          ferrosmtp's Server (Sink handler) fed like smtp-source -d: HELO once,
                        then MAIL, RCPT, DATA and the content, each after the previous reply
  server-per-conn       the same, one connection (greeting, HELO, one message, QUIT) each
  compat-reuse          ferrosmtp.compat.aiosmtpd's SMTP (aiosmtpd's Sink), same feed
  compat-per-conn       the same, one connection per message
  floor-reuse           benches/floor_server.py's parse-nothing responder, same feed
  floor-per-conn        the same, one connection per message

The peer a client talks to answers like smtp-sink (PIPELINING, SIZE, 8BITMIME, DSN,
ENHANCEDSTATUSCODES) and also offers CHUNKING. Replies reach the protocol on the next
turn of the loop, one batch per write, as a socket read would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

SENDER = "bench@example.org"
RECIPIENT = "sink@example.org"
CONCURRENCY = 20


def small_message() -> bytes:
    head = f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: benchmark\r\n\r\n".encode()
    line = b"x" * 62 + b"\r\n"
    body = line * ((1024 - len(head)) // len(line))
    return (head + body).ljust(1024 - 2, b"y") + b"\r\n"


# --- The fake transport ----------------------------------------------------------------


class FakeTransport(asyncio.Transport):
    """Writes go to ``peer.feed``; what it answers reaches the protocol on the next
    loop turn, in one ``data_received`` per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: Any, peer: Any) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._peer = peer
        self._out: list[bytes] = []
        self._closing = False
        self._reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        answer = self._peer.feed(bytes(data))
        if answer:
            if not self._out:
                self._loop.call_soon(self._deliver)
            self._out.append(answer)
        if self._peer.closed and not self._closing:
            self.close()

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def _deliver(self) -> None:
        data = b"".join(self._out)
        self._out.clear()
        if not data:
            return
        protocol = self._protocol
        if isinstance(protocol, asyncio.BufferedProtocol):  # as asyncio's transports do
            buffer = protocol.get_buffer(len(data))
            buffer[: len(data)] = data
            protocol.buffer_updated(len(data))
        else:
            protocol.data_received(data)

    def push(self, data: bytes) -> None:
        """The peer speaks first (a greeting, a client's command)."""
        if not self._out:
            self._loop.call_soon(self._deliver)
        self._out.append(data)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self._lost)

    def abort(self) -> None:
        self.close()

    def _lost(self) -> None:
        if self._out:
            self._deliver()
        self._protocol.connection_lost(None)
        self._peer.connection_lost()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 25)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True

    def is_reading(self) -> bool:
        return self._reading

    def can_write_eof(self) -> bool:
        return False


# --- The peer of a client: a sink ---------------------------------------------------------

EHLO = (
    b"250-sink.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-ENHANCEDSTATUSCODES\r\n"
    b"250-8BITMIME\r\n250-DSN\r\n250 CHUNKING\r\n"
)
OK = b"250 2.0.0 Ok\r\n"
QUEUED = b"250 2.0.0 Ok: queued as 1234\r\n"
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
BYE = b"221 2.0.0 Bye\r\n"


class SinkPeer:
    """A server that takes everything, as smtp-sink does (and BDAT)."""

    greeting = b"220 sink.test ESMTP\r\n"

    def __init__(self) -> None:
        self.buffer = b""
        self.in_data = False
        self.chunk = 0  # BDAT octets still to skip
        self.last = False
        self.closed = False

    def feed(self, data: bytes) -> bytes:
        buffer = self.buffer + data
        out = []
        start = 0
        n = len(buffer)
        while start < n:
            if self.chunk:
                take = min(self.chunk, n - start)
                self.chunk -= take
                start += take
                if not self.chunk:
                    out.append(QUEUED if self.last else OK)
                continue
            if self.in_data:
                end = buffer.find(b"\r\n.\r\n", start)
                if end < 0:
                    start = max(start, n - 4)
                    break
                start = end + 5
                self.in_data = False
                out.append(QUEUED)
                continue
            end = buffer.find(b"\r\n", start)
            if end < 0:
                break
            verb = buffer[start : start + 4].upper()
            line = buffer[start:end]
            start = end + 2
            if verb == b"DATA":
                self.in_data = True
                start = end  # the CRLF before the end marker of an empty message
                out.append(GO_AHEAD)
            elif verb == b"BDAT":
                words = line.split()
                self.chunk = int(words[1])
                self.last = len(words) > 2
                if not self.chunk:
                    out.append(QUEUED)
            elif verb in (b"EHLO", b"LHLO"):
                out.append(EHLO)
            elif verb == b"QUIT":
                out.append(BYE)
                self.closed = True
                break
            else:
                out.append(OK)
        self.buffer = buffer[start:]
        return b"".join(out)

    def connection_lost(self) -> None:
        pass


def patch_loop(loop: asyncio.AbstractEventLoop, peer_factory: Callable[[], Any]) -> None:
    """``loop.create_connection`` connects to a new peer through a FakeTransport."""

    async def create_connection(protocol_factory: Any, *args: Any, **kwargs: Any) -> Any:
        protocol = protocol_factory()
        peer = peer_factory()
        transport = FakeTransport(loop, protocol, peer)
        protocol.connection_made(transport)
        transport.push(peer.greeting)
        return transport, protocol

    loop.create_connection = create_connection  # type: ignore[method-assign]


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


async def client_seq(n: int, message: bytes, **options: Any) -> None:
    from ferrosmtp.client import Client

    async with Client("127.0.0.1", 25, local_hostname="bench.test", **options) as c:
        for _ in range(n):
            await c.sendmail(SENDER, [RECIPIENT], message)


async def client_seq_bdat(n: int, message: bytes) -> None:
    await client_seq(n, message, pipeline_bdat=True)


async def client_pool(n: int, message: bytes) -> None:
    from ferrosmtp.client import Pool

    async with Pool("127.0.0.1", 25, size=CONCURRENCY, local_hostname="bench.test") as pool:

        async def task(k: int) -> None:
            for _ in range(k):
                await pool.sendmail(SENDER, [RECIPIENT], message)

        await asyncio.gather(*(task(k) for k in split(n, CONCURRENCY)))


class _RawClient(asyncio.Protocol):
    """Not a client library: replies read by the codec and counted, nothing checked."""

    def __init__(self) -> None:
        from ferrosmtp import codec

        self.reader = codec.ReplyReader()
        self.waiting: list[tuple[int, asyncio.Future[None]]] = []
        self.count = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def expect(self, n: int) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((n, future))
        return future

    def data_received(self, data: bytes) -> None:
        self.count += len(self.reader.feed(data))
        while self.waiting and self.count >= self.waiting[0][0]:
            n, future = self.waiting.pop(0)
            self.count -= n
            future.set_result(None)


async def client_raw(n: int, message: bytes) -> None:
    """The floor of any asyncio client: the same exchanges (envelope, then content, one
    connection), precomputed bytes, one future per round trip."""
    from ferrosmtp import codec

    loop = asyncio.get_running_loop()
    _, raw = await loop.create_connection(_RawClient, "127.0.0.1", 25)
    await raw.expect(1)
    raw.transport.write(b"EHLO bench.test\r\n")
    await raw.expect(1)
    envelope = f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode()
    for _ in range(n):
        waiter = raw.expect(3)
        raw.transport.write(envelope)
        await waiter
        waiter = raw.expect(1)
        raw.transport.write(codec.dot_stuff(message))
        await waiter


async def client_aio(n: int, message: bytes) -> None:
    import aiosmtplib

    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=25, local_hostname="bench.test", start_tls=False
    ) as c:
        for _ in range(n):
            await c.sendmail(SENDER, [RECIPIENT], message)


async def client_aio20(n: int, message: bytes) -> None:
    import aiosmtplib

    async def task(k: int) -> None:
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=25, local_hostname="bench.test", start_tls=False
        ) as c:
            for _ in range(k):
                await c.sendmail(SENDER, [RECIPIENT], message)

    await asyncio.gather(*(task(k) for k in split(n, CONCURRENCY)))


# --- The peer of a server: smtp-source ----------------------------------------------------


REFUSALS: list[bytes] = []  # replies a SourcePeer did not expect: the run is void


class SourcePeer:
    """A client as smtp-source drives one: HELO, then for each message MAIL, RCPT, DATA
    and the content, each sent when the previous reply is complete; QUIT at the end."""

    def __init__(self, messages: int, message: bytes, done: Callable[[], None]) -> None:
        self.steps: list[bytes] = [b"HELO bench.test\r\n"]
        envelope = [
            f"MAIL FROM:<{SENDER}>\r\n".encode(),
            f"RCPT TO:<{RECIPIENT}>\r\n".encode(),
            b"DATA\r\n",
            message + b".\r\n",
        ]
        self.remaining = messages
        self.envelope = envelope
        self.index = 0  # the step to send after the next reply
        self.buffer = b""
        self.closed = False
        self.transport: FakeTransport | None = None
        self.done = done
        self.sent_quit = False

    def _next(self) -> bytes | None:
        if self.index < len(self.steps):
            step = self.steps[self.index]
            self.index += 1
            return step
        if self.remaining:
            self.remaining -= 1
            self.steps = self.envelope
            self.index = 1
            return self.envelope[0]
        if not self.sent_quit:
            self.sent_quit = True
            return b"QUIT\r\n"
        return None

    def feed(self, data: bytes) -> bytes:
        buffer = self.buffer + data
        out = []
        start = 0
        while True:
            end = buffer.find(b"\r\n", start)
            if end < 0:
                break
            final = buffer[start + 3 : start + 4] != b"-"
            if buffer[start : start + 1] not in (b"2", b"3"):
                REFUSALS.append(buffer[start:end])
            start = end + 2
            if final:
                step = self._next()
                if step is not None:
                    out.append(step)
        self.buffer = buffer[start:]
        return b"".join(out)

    def connection_lost(self) -> None:
        self.done()


def server_protocol_factory(kind: str) -> Callable[[], Any]:
    if kind == "floor":
        from floor_server import Floor

        return Floor
    if kind == "compat":
        from aiosmtpd.handlers import Sink

        from ferrosmtp.compat.aiosmtpd import SMTP

        handler = Sink()
        return lambda: SMTP(handler, hostname="bench.test")
    from ferrosmtp import handlers
    from ferrosmtp.server import Server

    server = Server(
        handlers.Sink(),
        hostname="bench.test",
        connection_limit_exempt=["127.0.0.0/8", "::1/128"],
    )
    server._loop = asyncio.get_running_loop()
    return server.factory


def connect_source(
    loop: asyncio.AbstractEventLoop, protocol: Any, peer: SourcePeer
) -> FakeTransport:
    transport = FakeTransport(loop, protocol, peer)
    peer.transport = transport
    protocol.connection_made(transport)
    return transport


async def server_run(kind: str, n: int, message: bytes, per_conn: bool) -> None:
    loop = asyncio.get_running_loop()
    factory = server_protocol_factory(kind)
    finished = loop.create_future()
    if not per_conn:

        def done() -> None:
            if not finished.done():
                finished.set_result(None)

        connect_source(loop, factory(), SourcePeer(n, message, done))
        await finished
        return
    left = [n]

    def next_connection() -> None:
        if left[0] == 0:
            if not finished.done():
                finished.set_result(None)
            return
        left[0] -= 1
        connect_source(loop, factory(), SourcePeer(1, message, next_connection))

    next_connection()
    await finished


WORKLOADS: dict[str, Callable[[int, bytes], Coroutine[Any, Any, None]]] = {
    "client-seq": client_seq,
    "client-seq-bdat": client_seq_bdat,
    "client-pool20": client_pool,
    "client-aiosmtplib": client_aio,
    "client-raw": client_raw,
    "client-aiosmtplib20": client_aio20,
    "server-reuse": lambda n, m: server_run("ferrosmtp", n, m, False),
    "server-per-conn": lambda n, m: server_run("ferrosmtp", n, m, True),
    "compat-reuse": lambda n, m: server_run("compat", n, m, False),
    "compat-per-conn": lambda n, m: server_run("compat", n, m, True),
    "floor-reuse": lambda n, m: server_run("floor", n, m, False),
    "floor-per-conn": lambda n, m: server_run("floor", n, m, True),
}


def run_workload(name: str, n: int, loop_name: str) -> float:
    """Run ``name`` for ``n`` messages in this process; return the CPU seconds used."""
    if loop_name == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    patch_loop(loop, SinkPeer)
    message = small_message()
    # Imports and first-use caches before the clock starts.
    import aiosmtplib  # noqa: F401

    import ferrosmtp.client
    import ferrosmtp.server

    if name.startswith("compat-"):
        import aiosmtpd.handlers  # noqa: F401

        import ferrosmtp.compat.aiosmtpd  # noqa: F401

    try:
        start = time.process_time()
        loop.run_until_complete(WORKLOADS[name](n, message))
        used = time.process_time() - start
    finally:
        loop.close()
    if REFUSALS:
        raise RuntimeError(f"the server refused: {REFUSALS[:3]}")
    return used


# --- The driver ------------------------------------------------------------------------------


def worker_command(name: str, n: int, loop_name: str) -> list[str]:
    return [sys.executable, __file__, "--worker", name, "-n", str(n), "--loop", loop_name]


def cpu_per_message(name: str, n: int, loop_name: str) -> float:
    out = subprocess.run(
        worker_command(name, n, loop_name), capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1]) / n * 1e6


def instructions(name: str, n: int, loop_name: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "callgrind.out")
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
        argv += worker_command(name, n, loop_name)
        env = dict(os.environ, PYTHONHASHSEED="0")
        out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{name} under callgrind failed:\n{out.stderr[-3000:]}")
        match = re.search(r"^(?:summary|totals): (\d+)", Path(out_file).read_text(), re.M)
        if match is None:
            raise RuntimeError("no totals in the callgrind output")
        return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="messages per run (CPU mode)")
    parser.add_argument("-r", "--rounds", type=int, default=5, help="runs per workload (CPU)")
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS))
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="count instructions with valgrind (runs of --short and --long messages)",
    )
    parser.add_argument("--short", type=int, default=200)
    parser.add_argument("--long", type=int, default=1200)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(run_workload(args.worker, args.n, args.loop))
        return 0
    names = args.only or list(WORKLOADS)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    if args.callgrind:
        print("| workload | instructions/msg |\n| --- | ---: |")
        for name in names:
            short = instructions(name, args.short, args.loop)
            long = instructions(name, args.long, args.loop)
            per = (long - short) / (args.long - args.short)
            print(f"| {name} | {per:,.0f} |", flush=True)
    else:
        print(f"| workload | CPU us/msg (median of {args.rounds}) | min-max |")
        print("| --- | ---: | ---: |")
        for name in names:
            runs = [cpu_per_message(name, args.n, args.loop) for _ in range(args.rounds)]
            print(
                f"| {name} | {statistics.median(runs):.1f} | {min(runs):.1f}-{max(runs):.1f} |",
                flush=True,
            )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
