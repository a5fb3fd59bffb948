"""Client throughput against Postfix smtp-sink: ferrosmtp vs aiosmtplib vs smtplib.

    python benches/bench_client.py                  # defaults: 10000 messages, 5 rounds
    python benches/bench_client.py -n 20000 -r 7 --big-mib 100

Every measurement runs in a fresh subprocess (this script with --worker), against one
smtp-sink started for the whole run. Rounds interleave the senders in a shuffled order,
so a noisy machine hurts them alike; the table gives the median of the rounds (and the
spread). Messages are 1 KiB. Then each client sends one big message (--big-mib) and
reports the time and its process's peak RSS (VmHWM) next to the message size.

Each measurement includes starting the event loop and opening (and closing) its
connections: for a Pool of 20 that is some 50 ms, which at 3000 messages was a third of the
run and made its rate swing by 2x between rounds; 10000 messages by default keep the rates
about steady-state throughput.

The load average is printed before and after; tables taken on a busy machine (1-minute
load over 0.5) are marked NOT PUBLISHABLE and the exit status is 1 (``--allow-busy``: 0).

Senders:
  ferrosmtp 1 conn          Client, one connection, ``await sendmail()`` in a loop
  ferrosmtp 1 conn x20      Client, one connection, 20 tasks sharing it (pipelined
                            across messages: the next envelope rides with the content)
  ferrosmtp pool 20         Pool(size=20), 20 tasks
  aiosmtplib 1 conn         SMTP, one connection, ``await sendmail()`` in a loop
  aiosmtplib 20 clients     20 tasks, each with its own SMTP connection
  smtplib 1 conn            smtplib.SMTP, one connection, ``sendmail()`` in a loop
  smtplib 20 threads        20 threads, each with its own smtplib.SMTP connection

smtp-sink offers no CHUNKING, so ``pipeline_bdat=True`` (the first BDAT chunk in the same
write as MAIL and RCPT: one round trip per message) is measured in a second table, against
a server that offers it, ``ferrosmtp serve --sink -q`` on uvloop, with aiosmtplib and the
default ferrosmtp client against the same server:

  ferrosmtp 1 conn bdat     Client(pipeline_bdat=True), one connection, sendmail in a loop
  ferrosmtp pool 20 bdat    Pool(size=20, pipeline_bdat=True), 20 tasks
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from quiet import QuietCheck

ROOT = Path(__file__).resolve().parent.parent
SENDER = "bench@example.org"
RECIPIENT = "sink@example.org"
CONCURRENCY = 20


def small_message() -> bytes:
    """A 1 KiB message with CRLF line ends."""
    head = f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: benchmark\r\n\r\n".encode()
    line = b"x" * 62 + b"\r\n"
    body = line * ((1024 - len(head)) // len(line))
    return (head + body).ljust(1024 - 2, b"y") + b"\r\n"


def big_message(mib: int) -> bytes:
    head = f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: big\r\n\r\n".encode()
    line = b"z" * 76 + b"\r\n"
    return head + line * ((mib * 1024 * 1024 - len(head)) // len(line))


# --- Workers (run in a subprocess) ------------------------------------------------------


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


async def ferro_one(port: int, n: int, message: bytes) -> None:
    from ferrosmtp.client import Client

    async with Client("127.0.0.1", port, local_hostname="bench.test", start_tls=False) as c:
        for _ in range(n):
            await c.sendmail(SENDER, [RECIPIENT], message)


async def ferro_one_bdat(port: int, n: int, message: bytes) -> None:
    from ferrosmtp.client import Client

    async with Client(
        "127.0.0.1", port, local_hostname="bench.test", start_tls=False, pipeline_bdat=True
    ) as c:
        for _ in range(n):
            await c.sendmail(SENDER, [RECIPIENT], message)


async def ferro_pool_bdat(port: int, n: int, message: bytes) -> None:
    from ferrosmtp.client import Pool

    async with Pool(
        "127.0.0.1",
        port,
        size=CONCURRENCY,
        local_hostname="bench.test",
        start_tls=False,
        pipeline_bdat=True,
    ) as pool:

        async def task(k: int) -> None:
            for _ in range(k):
                await pool.sendmail(SENDER, [RECIPIENT], message)

        await asyncio.gather(*(task(k) for k in split(n, CONCURRENCY)))


async def ferro_shared(port: int, n: int, message: bytes) -> None:
    from ferrosmtp.client import Client

    async with Client("127.0.0.1", port, local_hostname="bench.test", start_tls=False) as c:

        async def task(k: int) -> None:
            for _ in range(k):
                await c.sendmail(SENDER, [RECIPIENT], message)

        await asyncio.gather(*(task(k) for k in split(n, CONCURRENCY)))


async def ferro_pool(port: int, n: int, message: bytes) -> None:
    from ferrosmtp.client import Pool

    async with Pool(
        "127.0.0.1", port, size=CONCURRENCY, local_hostname="bench.test", start_tls=False
    ) as pool:

        async def task(k: int) -> None:
            for _ in range(k):
                await pool.sendmail(SENDER, [RECIPIENT], message)

        await asyncio.gather(*(task(k) for k in split(n, CONCURRENCY)))


async def aio_one(port: int, n: int, message: bytes) -> None:
    import aiosmtplib

    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, local_hostname="bench.test", start_tls=False
    ) as c:
        for _ in range(n):
            await c.sendmail(SENDER, [RECIPIENT], message)


async def aio_many(port: int, n: int, message: bytes) -> None:
    import aiosmtplib

    async def task(k: int) -> None:
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, local_hostname="bench.test", start_tls=False
        ) as c:
            for _ in range(k):
                await c.sendmail(SENDER, [RECIPIENT], message)

    await asyncio.gather(*(task(k) for k in split(n, CONCURRENCY)))


def std_one(port: int, n: int, message: bytes) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test") as s:
        for _ in range(n):
            s.sendmail(SENDER, [RECIPIENT], message)


def std_threads(port: int, n: int, message: bytes) -> None:
    import smtplib

    def task(k: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test") as s:
            for _ in range(k):
                s.sendmail(SENDER, [RECIPIENT], message)

    threads = [threading.Thread(target=task, args=(k,)) for k in split(n, CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


SENDERS: dict[str, Callable[[int, int, bytes], Any]] = {
    "ferrosmtp 1 conn": ferro_one,
    "ferrosmtp 1 conn x20": ferro_shared,
    "ferrosmtp pool 20": ferro_pool,
    "aiosmtplib 1 conn": aio_one,
    "aiosmtplib 20 clients": aio_many,
    "smtplib 1 conn": std_one,
    "smtplib 20 threads": std_threads,
}


class _Replies:
    """Reads SMTP reply lines from a blocking socket (for the raw floor)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buffer = b""

    def until(self, code: bytes) -> None:
        """Read until a final reply line starting with ``code`` (e.g. b"354")."""
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if line[:3] == code and line[3:4] != b"-":
                return


def raw_floor(port: int, n: int, message: bytes) -> None:
    """Not a client library: blocking sendall of the message, dot-stuffed by the Rust
    codec (inside the timing). It shows how fast the sink itself takes the bytes."""
    import socket

    from ferrosmtp import codec

    with socket.create_connection(("127.0.0.1", port)) as sock:
        replies = _Replies(sock)
        replies.until(b"220")
        sock.sendall(b"EHLO bench.test\r\n")
        replies.until(b"250")
        for _ in range(n):
            sock.sendall(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode())
            replies.until(b"354")
            sock.sendall(codec.dot_stuff(message))
            replies.until(b"250")
        sock.sendall(b"QUIT\r\n")


SENDERS["raw sendall (floor)"] = raw_floor
# Measured against a server that offers CHUNKING, beside these references:
CHUNKING_SENDERS: dict[str, Callable[[int, int, bytes], Any]] = {
    "ferrosmtp 1 conn bdat": ferro_one_bdat,
    "ferrosmtp pool 20 bdat": ferro_pool_bdat,
}
CHUNKING_REFERENCES = [
    "ferrosmtp 1 conn",
    "ferrosmtp pool 20",
    "aiosmtplib 1 conn",
    "aiosmtplib 20 clients",
]
SENDERS.update(CHUNKING_SENDERS)
BIG_SENDERS = ["ferrosmtp 1 conn", "aiosmtplib 1 conn", "smtplib 1 conn", "raw sendall (floor)"]


# --- A fast discarding server, for the big message ----------------------------------------


class _Discard(asyncio.BufferedProtocol):
    """Just enough SMTP to take messages and drop them, reading 1 MiB at a time: the big
    message then measures the clients, not the sink (smtp-sink reads in small pieces)."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray(1 << 20)
        self.line = b""
        self.tail = b""
        self.in_data = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(b"220 discard.test ESMTP\r\n")

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self.buffer[:nbytes])
        while data:
            if self.in_data:
                window = self.tail + data
                end = window.find(b"\r\n.\r\n")
                if end < 0:
                    self.tail = window[-4:]
                    return
                self.in_data = False
                self.tail = b""
                data = window[end + 5 :]
                self.transport.write(b"250 2.0.0 discarded\r\n")
                continue
            self.line += data
            data = b""
            while not self.in_data and b"\r\n" in self.line:
                line, self.line = self.line.split(b"\r\n", 1)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    self.transport.write(b"250-discard.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    self.in_data = True
                    self.transport.write(b"354 go ahead\r\n")
                elif verb == b"QUIT":
                    self.transport.write(b"221 bye\r\n")
                    self.transport.close()
                else:
                    self.transport.write(b"250 ok\r\n")
            if self.in_data:
                data, self.line = self.line, b""

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def serve_discard(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Discard, "127.0.0.1", port)
        print("ready", flush=True)
        await server.serve_forever()

    asyncio.run(main())


def peak_rss() -> int:
    """VmHWM of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def current_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def worker(name: str, port: int, n: int, big_mib: int) -> dict[str, float]:
    # Import the client libraries before measuring, so the baseline RSS includes them.
    import aiosmtplib  # noqa: F401

    import ferrosmtp.client  # noqa: F401

    function = SENDERS[name]
    message = big_message(big_mib) if big_mib else small_message()
    baseline = current_rss()
    cpu_start = os.times()
    start = time.perf_counter()
    if asyncio.iscoroutinefunction(function):
        asyncio.run(function(port, n, message))
    else:
        function(port, n, message)
    elapsed = time.perf_counter() - start
    cpu_end = os.times()
    cpu = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)
    return {
        "seconds": elapsed,
        "rate": n / elapsed,
        "cpu": cpu / n * 1e6,  # client process CPU, microseconds per message
        "peak": peak_rss(),
        "baseline": baseline,
        "size": len(message),
    }


# --- Driver ----------------------------------------------------------------------------------


def measure(name: str, port: int, n: int, big_mib: int = 0) -> dict[str, float]:
    argv = [sys.executable, __file__, "--worker", name, "--port", str(port), "-n", str(n)]
    argv += ["--big-mib", str(big_mib)]  # always: the worker must not take the default
    path = os.pathsep.join(p for p in (str(ROOT / "python"), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def start_sink() -> Any:
    sys.path.insert(0, str(ROOT))
    from tests.peers import SmtpSink

    return SmtpSink(max_connections=512, backlog=512, command_timeout=300).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=10000, help="messages per measurement")
    parser.add_argument("-r", "--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument(
        "--big-mib", type=int, default=100, help="size of the big message (0: skip)"
    )
    parser.add_argument("--big-runs", type=int, default=3, help="runs of the big message")
    parser.add_argument("--only", action="append", help="run only these senders (repeatable)")
    parser.add_argument(
        "--allow-busy", action="store_true", help="exit 0 even when the machine was busy"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--serve-discard", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_discard:
        serve_discard(args.serve_discard)
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, args.port, args.n, args.big_mib)))
        return 0

    names = args.only or [n for n in SENDERS if n not in CHUNKING_SENDERS]
    chunked = [n for n in CHUNKING_SENDERS if n in names] if args.only else list(CHUNKING_SENDERS)
    names = [n for n in names if n not in CHUNKING_SENDERS]
    quiet = QuietCheck()
    print(quiet.before(), file=sys.stderr)
    sink = start_sink()
    try:
        rates = run_rounds(names, sink.port, args)
        chunking_rates: dict[str, list[dict[str, float]]] = {}
        if chunked:
            with chunking_server() as port:
                chunking_rates = run_rounds(chunked + CHUNKING_REFERENCES, port, args)
        big: dict[str, dict[str, dict[str, float]]] = {}
        if args.big_mib:
            with discard_server() as discard_port:
                for target, port in (("smtp-sink", sink.port), ("fast discard", discard_port)):
                    big[target] = {}
                    runs: dict[str, list[dict[str, float]]] = {n: [] for n in BIG_SENDERS}
                    for _ in range(args.big_runs):
                        for name in random.sample(BIG_SENDERS, len(BIG_SENDERS)):
                            runs[name].append(measure(name, port, 1, args.big_mib))
                    for name, results in runs.items():  # median time, highest peak
                        by_time = sorted(results, key=lambda r: r["seconds"])
                        chosen = dict(by_time[len(by_time) // 2])
                        chosen["peak"] = max(r["peak"] - r["baseline"] for r in results)
                        chosen["baseline"] = 0
                        big[target][name] = chosen
    finally:
        sink.stop()
    print(quiet.after(), file=sys.stderr)
    if rates:
        print_tables(rates, big, args)
    if chunking_rates:
        print(
            "\n### The same to a server with CHUNKING (ferrosmtp serve --sink -q, uvloop): "
            "pipeline_bdat, one round trip per message"
        )
        print_rates(chunking_rates, args)
    print(f"\nMachine: {quiet.verdict()}")
    if quiet.busy and not args.allow_busy:
        print("\n!!! THE MACHINE WAS BUSY: these tables are not publishable.", file=sys.stderr)
        return 1
    return 0


def run_rounds(
    names: list[str], port: int, args: argparse.Namespace
) -> dict[str, list[dict[str, float]]]:
    rates: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        for name in random.sample(names, len(names)):
            rates[name].append(measure(name, port, args.n))
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    return rates


@contextlib.contextmanager
def chunking_server() -> Iterator[int]:
    """``ferrosmtp serve --sink -q`` on uvloop: a server that offers CHUNKING."""
    sys.path.insert(0, str(ROOT))
    from tests.peers import free_port, wait_listening

    port = free_port()
    argv = [sys.executable, "-m", "ferrosmtp", "serve", "--sink", "-q", "--loop", "uvloop"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--max-connections", "1000"]
    path = os.pathsep.join(p for p in (str(ROOT / "python"), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=path))
    try:
        wait_listening("127.0.0.1", port, proc.pid)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def discard_server() -> Iterator[int]:
    sys.path.insert(0, str(ROOT))
    from tests.peers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-discard", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def print_tables(rates: dict[str, list[dict[str, float]]], big: Any, args: Any) -> None:
    print(
        f"\n### Throughput to smtp-sink: 1 KiB messages, {args.n} per run, "
        f"median of {args.rounds} interleaved rounds"
    )
    print_rates(rates, args)
    print_big(big, args)


def print_rates(rates: dict[str, list[dict[str, float]]], args: Any) -> None:
    median = {n: statistics.median(r["rate"] for r in runs) for n, runs in rates.items()}
    cpu = {n: statistics.median(r["cpu"] for r in runs) for n, runs in rates.items()}

    def ratio(name: str, base: str) -> str:
        if not base or base not in median:
            return ""
        return f"{median[name] / median[base]:.2f}x"

    bases = {
        "ferrosmtp 1 conn": ("aiosmtplib 1 conn", "smtplib 1 conn"),
        "ferrosmtp 1 conn x20": ("aiosmtplib 1 conn", "smtplib 1 conn"),
        "ferrosmtp pool 20": ("aiosmtplib 20 clients", "smtplib 20 threads"),
        "ferrosmtp 1 conn bdat": ("aiosmtplib 1 conn", "smtplib 1 conn"),
        "ferrosmtp pool 20 bdat": ("aiosmtplib 20 clients", "smtplib 20 threads"),
    }
    print()
    print(row("sender", "msgs/s", "min-max", "client CPU us/msg", "vs aiosmtplib", "vs smtplib"))
    print(row("---", "---:", "---:", "---:", "---:", "---:"))
    for name, runs in rates.items():
        values = [r["rate"] for r in runs]
        aio_base, std_base = bases.get(name, ("", ""))
        print(
            row(
                name,
                f"{median[name]:,.0f}",
                f"{min(values):,.0f}-{max(values):,.0f}",
                f"{cpu[name]:,.0f}",
                ratio(name, aio_base),
                ratio(name, std_base),
            )
        )


def print_big(big: Any, args: Any) -> None:
    for target, results in big.items():
        print(
            f"\n### One {args.big_mib} MiB message to {target}: median time of "
            f"{args.big_runs} runs, highest peak RSS above the process's baseline\n"
        )
        header = (
            "sender",
            "seconds",
            "MiB/s",
            "peak RSS over baseline",
            "peak / message size",
            "speed vs aiosmtplib",
        )
        print(row(*header))
        print(row("---", *["---:"] * (len(header) - 1)))
        aio = results.get("aiosmtplib 1 conn")
        for name, r in results.items():
            mib = r["size"] / (1 << 20)
            over = r["peak"] - r["baseline"]  # includes the message itself
            speed = f"{aio['seconds'] / r['seconds']:.2f}x" if aio else "-"
            print(
                row(
                    name,
                    f"{r['seconds']:.2f}",
                    f"{mib / r['seconds']:,.0f}",
                    f"{over / (1 << 20):,.0f} MiB",
                    f"{over / r['size']:.2f}",
                    speed,
                )
            )


if __name__ == "__main__":
    sys.exit(main())
