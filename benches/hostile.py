#!/usr/bin/env python3
"""Hostile-load report: floods, slow readers, connection storms and a crash, each against a
fresh ferrosmtp server in its own process on 127.0.0.1, with a second client doing full
transactions the whole time. Prints one Markdown table.

Columns: the scenario; what was sent; the outcome (reply codes the attacker saw, with
counts); the server's peak RSS and its growth over the idle baseline (VmRSS sampled every
50 ms, plus VmHWM); the other client's transaction latency during the flood (median /
max, and how many it completed); and messages lost, i.e. messages that got a 250 and are
not in the server's store (must be 0).

Usage::

    python benches/hostile.py              # every scenario, a minute or two
    python benches/hostile.py --only rcpt,idle

Everything is bounded: each flood has a byte and a time budget, every socket a timeout,
and every server process is stopped in ``finally``. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import signal
import smtplib
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.security.support import (  # noqa: E402
    MemorySampler,
    Prober,
    ReplyCounter,
    ServerProcess,
    cli_server,
    codes,
    connect,
    push,
    read_replies,
    read_until,
    server_process,
)
from tests.server.support import HOST  # noqa: E402

MIB = 1 << 20
SESSIONS = 1000
MESSAGES_PER_SESSION = 2
GROUP = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<r@example.net>\r\nRSET\r\n"
BDAT_GROUP = b"MAIL FROM:<f@example.com>\r\nRCPT TO:<r@example.net>\r\nBDAT 1 LAST\r\nx"
NO_JUNK_LIMIT = 10**9  # to isolate the write side from the junk-command limit
LONG_REPLY = "250 2.1.5 " + "recipient accepted by local policy, " * 12


@dataclasses.dataclass
class Row:
    scenario: str
    sent: str
    outcome: str
    peak_mib: float = float("nan")
    growth_mib: float = float("nan")
    latency: str = "-"
    lost: int = 0
    ok: bool = True


def summarize(seen: list[int]) -> str:
    """``250x100, 452x99900``, in first-seen order."""
    counts = Counter(seen)
    return ", ".join(f"{code}x{counts[code]}" for code in dict.fromkeys(seen)) or "(none)"


def latency(prober: Prober) -> str:
    if not prober.durations:
        return f"none completed ({len(prober.errors)} errors)"
    text = (
        f"{statistics.median(prober.durations):.2f} / {max(prober.durations):.2f} s "
        f"(n={len(prober.durations)})"
    )
    if prober.errors:
        text += f", {len(prober.errors)} errors"
    return text


def logged(log: Path) -> list[str]:
    """Senders of the messages the server stored (the keep/hooked handlers log them)."""
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def lost(prober: Prober, log: Path) -> int:
    stored = set(logged(log))
    return sum(1 for sender in prober.acked if sender not in stored)


def greet(sock: socket.socket) -> None:
    sock.recv(1000)
    sock.sendall(b"EHLO hostile.example\r\n")
    deadline = time.monotonic() + 10
    data = b""
    while not data.endswith(b"250 HELP\r\n") and time.monotonic() < deadline:
        data += sock.recv(10000)


def measured(
    name: str,
    sent: str,
    attack: Callable[[ServerProcess], str],
    *,
    handler: str = "keep",
    rcpt_reply: str | None = None,
    **options: Any,
) -> Row:
    """Run ``attack`` against a fresh server while a prober does transactions."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "accepted.log"
        with server_process(handler, log=log, rcpt_reply=rcpt_reply, **options) as srv:
            base = srv.rss()
            with MemorySampler(srv) as memory, Prober(srv.port, interval=0.2) as prober:
                outcome = attack(srv)
            alive = srv.alive()
            time.sleep(0.2)
        counts_losses = handler in ("keep", "hooked")
        return Row(
            name,
            sent,
            outcome if alive else outcome + " **SERVER DIED**",
            memory.peak / 1024,
            (memory.peak - base) / 1024,
            latency(prober),
            lost(prober, log) if counts_losses else 0,
            ok=alive and not prober.errors,
        )


# -- floods --------------------------------------------------------------------------------


def long_line(srv: ServerProcess) -> str:
    with connect(srv.port) as sock:
        greet(sock)
        push(sock, b"A" * 65536, 100 * MIB, 60)
        sock.sendall(b"\r\nNOOP\r\n")
        return summarize(codes(read_replies(sock, 3)))


def endless_data(srv: ServerProcess) -> str:
    with connect(srv.port) as sock:
        greet(sock)
        reader = ReplyCounter(sock, 90).start()
        sock.sendall(b"MAIL FROM:<big@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n")
        reader.wait_for(3, 10)
        push(sock, (b"B" * 1022 + b"\r\n") * 64, 100 * MIB, 60)
        sock.sendall(b"\r\n.\r\nQUIT\r\n")
        reader.join(30)
        return summarize(codes(reader.data))


def rcpt_flood(srv: ServerProcess) -> str:
    n = 100_000
    with connect(srv.port) as sock:
        greet(sock)
        reader = ReplyCounter(sock, 90).start()
        sock.sendall(b"MAIL FROM:<many@example.com>\r\n")
        batch = b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(1000))
        for _ in range(n // 1000):
            sock.sendall(batch)
        reader.wait_for(n + 1, 60)
        sock.sendall(b"DATA\r\n")
        reader.wait_for(n + 2, 10)
        sock.sendall(b"Subject: many\r\n\r\nx\r\n.\r\nQUIT\r\n")
        reader.join(30)
        return summarize(codes(reader.data))


def rcpt_flood_no_read(srv: ServerProcess) -> str:
    n = 100_000
    with connect(srv.port, rcvbuf=4096) as sock:
        greet(sock)
        batch = b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(1000))
        payload = b"MAIL FROM:<a@example.com>\r\n" + batch * (n // 1000)
        writer = threading.Thread(target=push, args=(sock, payload, len(payload), 30))
        writer.start()
        time.sleep(3)  # the client reads nothing for 3 s
        reader = ReplyCounter(sock, 60).start()
        seen = reader.wait_for(n + 1, 60)
        writer.join(30)
        return summarize(seen)


def junk_flood(srv: ServerProcess) -> str:
    with connect(srv.port) as sock:
        greet(sock)
        reader = ReplyCounter(sock, 15).start()
        sent = push(sock, b"XYZZY junk\r\n" * 5000, 200 * MIB, 10)
        reader.join(20)
        return summarize(codes(reader.data)) + f", EOF ({sent} bytes written)"


def noops_strict(srv: ServerProcess) -> str:
    with connect(srv.port) as sock:
        greet(sock)
        sock.sendall(b"NOOP\r\n" * 5000)
        return summarize(codes(read_replies(sock, 5)))


def noops_no_read(srv: ServerProcess) -> str:
    with connect(srv.port, rcvbuf=4096) as sock:
        greet(sock)
        sock.sendall(b"NOOP\r\n" * 5000)
        sent = push(sock, b"NOOP\r\n" * 10_000, 1 * MIB, 5)
        time.sleep(1)
        reader = ReplyCounter(sock, 60).start()
        return summarize(reader.wait_for(5000 + sent // 6, 60))


def bdat_flood(srv: ServerProcess) -> str:
    """Legal pipelined groups that each deliver a message (MAIL, RCPT, BDAT 1 LAST: no
    sync point, no junk command), as fast as the server answers, for 8 s."""
    with connect(srv.port) as sock:
        greet(sock)
        reader = ReplyCounter(sock, 30).start()
        sent = push(sock, BDAT_GROUP * 1000, 1 << 40, 8)
        offset = sent % len(BDAT_GROUP)
        sock.sendall(BDAT_GROUP[offset:] if offset else b"")  # end on a whole group
        sock.sendall(b"QUIT\r\n")
        reader.join(30)
        return summarize(codes(reader.data))


def group_flood_no_read(srv: ServerProcess) -> str:
    with connect(srv.port, rcvbuf=4096) as sock:
        greet(sock)
        sent = push(sock, GROUP * 1000, 1 << 40, 8)
        return f"(never read) {sent / MIB:.1f} MiB taken in 8 s"


# -- connection storms ---------------------------------------------------------------------


class Gate:
    """Holds every session after its EHLO until all are connected (or 60 s went by)."""

    def __init__(self, parties: int) -> None:
        self.left = parties
        self.open = asyncio.Event()

    async def arrive(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.open.set()
        try:
            await asyncio.wait_for(self.open.wait(), 60)
        except asyncio.TimeoutError:
            self.open.set()


async def _session(port: int, number: int, gate: Gate) -> list[int]:
    """Reply codes of one session: 220, 250, then (250, 250, 354, 250) per message, 221."""
    for attempt in range(20):
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            break
        except OSError:  # a full listen backlog: retry like an MTA would
            await asyncio.sleep(0.05 * (attempt + 1))
    else:
        reader, writer = await asyncio.open_connection(HOST, port)
    seen: list[int] = []

    async def reply() -> None:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("EOF")
            if line[3:4] != b"-":
                seen.append(int(line[:3]))
                return

    try:
        await reply()
        writer.write(b"EHLO load%d.example\r\n" % number)
        await reply()
        await gate.arrive()
        for m in range(MESSAGES_PER_SESSION):
            writer.write(
                b"MAIL FROM:<s%d-%d@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n"
                % (number, m)
            )
            for _ in range(3):
                await reply()
            writer.write(b"Subject: load\r\n\r\nbody\r\n.\r\n")
            await reply()
        writer.write(b"QUIT\r\n")
        await reply()
    finally:
        writer.close()
    return seen


def concurrent_sessions(port: int) -> tuple[str, int]:
    """(the outcome, how many messages got their 250)."""

    async def run_all() -> list[list[int] | BaseException]:
        gate = Gate(SESSIONS)
        tasks = [_session(port, n, gate) for n in range(SESSIONS)]
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)

    results = asyncio.run(run_all())
    sessions = [r for r in results if isinstance(r, list)]
    errors = len(results) - len(sessions)
    acked = sum(
        1
        for r in sessions
        for m in range(MESSAGES_PER_SESSION)
        if r[2 + 4 * m + 3 : 2 + 4 * m + 4] == [250]
    )
    outcome = summarize([c for r in sessions for c in r])
    return outcome + (f", {errors} sessions failed" if errors else ""), acked


def sessions_row() -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "accepted.log"
        with server_process("keep", log=log, max_connections=SESSIONS + 100) as srv:
            base = srv.rss()
            with MemorySampler(srv) as memory, Prober(srv.port, interval=0.2) as prober:
                outcome, acked = concurrent_sessions(srv.port)
            alive = srv.alive()
            time.sleep(0.3)
        stored = sum(1 for sender in logged(log) if sender.startswith("s"))
        return Row(
            "1,000 concurrent sessions",
            "1,000 connections open at once, 2 messages each (asyncio clients)",
            outcome + f"; {stored} stored",
            memory.peak / 1024,
            (memory.peak - base) / 1024,
            latency(prober),
            lost(prober, log) + max(acked - stored, 0),
            ok=alive and stored == SESSIONS * MESSAGES_PER_SESSION,
        )


def idle_connections(srv: ServerProcess) -> str:
    idle: list[socket.socket] = []
    try:
        for _ in range(SESSIONS):
            idle.append(socket.create_connection((HOST, srv.port), timeout=10))
        deadline = time.monotonic() + 20
        seen: list[int] = []
        eof = 0
        for sock in idle:
            data, closed = read_until(sock, deadline)
            eof += closed
            seen += codes(data)
        return summarize(seen) + f"; {eof}/{SESSIONS} closed by the server"
    finally:
        for sock in idle:
            sock.close()


def trickle(srv: ServerProcess) -> str:
    with connect(srv.port) as sock:
        sock.recv(1000)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        try:
            for byte in b"EHLO trickle.example.with.a.long.name\r\n":
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        data = read_replies(sock, 5)
        return summarize(codes(data)) + f" after {time.monotonic() - started:.1f} s"


def data_trickle(srv: ServerProcess) -> str:
    with connect(srv.port) as sock:
        greet(sock)
        sock.sendall(b"MAIL FROM:<t@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n")
        time.sleep(0.2)
        sock.recv(1000)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        try:
            for byte in b"Subject: trickled one byte per 0.2 s\r\n\r\n.\r\n":
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        took = time.monotonic() - started
        seen = codes(read_replies(sock, 0.5))
        verdict = "message accepted, never cut off" if seen == [250] else "cut off"
        return f"{summarize(seen)} after {took:.1f} s of trickling ({verdict})"


def tls_handshake_flood() -> Row:
    """Silent TCP connections to an implicit-TLS port (F13), then one real TLS client."""
    from tests.server.support import Certs

    n = 2000
    certs = Certs()
    with tempfile.TemporaryDirectory() as tmp:
        pem = Path(tmp) / "server.pem"
        certs.cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
        tls = {"tls_cert": str(pem), "tls_key": str(pem), "tls_mode": "ssl_context"}
        with server_process("sink", extra=tls, max_connections=100) as srv:
            base = srv.rss()
            silent: list[socket.socket] = []
            with MemorySampler(srv) as memory:
                try:
                    for _ in range(n):
                        silent.append(socket.create_connection((HOST, srv.port), timeout=10))
                    time.sleep(1)
                    held = len(os.listdir(f"/proc/{srv.pid}/fd"))
                    started = time.monotonic()
                    try:
                        with smtplib.SMTP_SSL(
                            HOST, srv.port, timeout=10, context=certs.client_context()
                        ) as client:
                            client.sendmail("a@example.com", ["b@example.net"], b"x\r\n")
                        other = f"1 TLS transaction: {time.monotonic() - started:.2f} s"
                    except Exception as error:
                        other = f"TLS client failed: {type(error).__name__}"
                finally:
                    for sock in silent:
                        sock.close()
            alive = srv.alive()
    return Row(
        "silent connections, implicit TLS (F13)",
        f"{n} TCP connections that never send a ClientHello, max_connections=100",
        f"none refused; {held} descriptors held by the server",
        memory.peak / 1024,
        (memory.peak - base) / 1024,
        other,
        ok=alive,
    )


# -- a crash -------------------------------------------------------------------------------


def sigkill_durability() -> Row:
    n = 200
    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp) / "md"
        with cli_server("--maildir", str(box)) as srv:
            clients = [smtplib.SMTP(HOST, srv.port, timeout=10) for _ in range(4)]
            acked = 0
            try:
                for i in range(n):
                    body = b"Subject: durable %d\r\n\r\nbody\r\n" % i
                    clients[i % 4].sendmail("a@example.com", ["b@example.net"], body)
                    acked += 1
                os.kill(srv.pid, signal.SIGKILL)  # right after the last 250
                srv.popen.wait(5)
            finally:
                for client in clients:
                    client.close()
        stored = len(list((box / "new").iterdir()))
    return Row(
        "SIGKILL after the last 250",
        f"{n} messages on 4 connections to `ferrosmtp serve --maildir`, then kill -9",
        f"250x{acked}; {stored} files in new/",
        lost=acked - stored,
        ok=acked == stored,
    )


# -- driver --------------------------------------------------------------------------------


def scenarios() -> dict[str, Callable[[], Row]]:
    return {
        "line": lambda: measured(
            "100 MiB command line", "100 MiB of `A` without CRLF, then CRLF NOOP", long_line
        ),
        "data": lambda: measured(
            "endless DATA",
            "100 MiB of DATA, data_size_limit=1 MiB, handler keeps content",
            endless_data,
            data_size_limit=MIB,
        ),
        "rcpt": lambda: measured(
            "RCPT flood",
            "MAIL + 100,000 RCPT pipelined (client reads), max_recipients=100",
            rcpt_flood,
            max_recipients=100,
        ),
        "rcpt-noread": lambda: measured(
            "RCPT flood, client does not read",
            "MAIL + 100,000 RCPT (2.3 MiB), nothing read for 3 s (Sink)",
            rcpt_flood_no_read,
            handler="sink",
        ),
        "junk": lambda: measured(
            "bad-command flood",
            "endless `XYZZY junk` lines (10 s budget), max_errors=10",
            junk_flood,
            max_errors=10,
        ),
        "noop": lambda: measured(
            "5,000 NOOPs, strict pipelining", "5,000 NOOP in one write", noops_strict
        ),
        "noop-noread": lambda: measured(
            "NOOPs, client does not read",
            "5,000 + 1 MiB of NOOP, strict_pipelining=False (Sink)",
            noops_no_read,
            handler="sink",
            strict_pipelining=False,
        ),
        "noop-noread-nojunk": lambda: measured(
            "NOOPs, client does not read, no junk limit",
            "the same with max_junk_commands lifted",
            noops_no_read,
            handler="sink",
            strict_pipelining=False,
            max_junk_commands=NO_JUNK_LIMIT,
        ),
        "group-default": lambda: measured(
            "MAIL/RCPT/RSET flood, no read, defaults",
            "legal pipelined groups for 8 s, never read (Sink)",
            group_flood_no_read,
            handler="sink",
        ),
        "group-sink": lambda: measured(
            "MAIL/RCPT/RSET flood, no read, Sink, no junk limit",
            "the same with max_junk_commands lifted",
            group_flood_no_read,
            handler="sink",
            max_junk_commands=NO_JUNK_LIMIT,
        ),
        "group-hooked": lambda: measured(
            "MAIL/RCPT/RSET flood, no read, awaited hooks, no junk limit (F1)",
            "the same; async MAIL/RCPT hooks, 442-octet RCPT reply",
            group_flood_no_read,
            handler="hooked",
            rcpt_reply=LONG_REPLY,
            max_junk_commands=NO_JUNK_LIMIT,
        ),
        "bdat-sink": lambda: measured(
            "message flood, Sink (F3)",
            "MAIL+RCPT+`BDAT 1 LAST` groups for 8 s, replies read",
            bdat_flood,
            handler="sink",
        ),
        "bdat-hooked": lambda: measured(
            "message flood, awaited hooks (F3)",
            "the same; async MAIL/RCPT/DATA hooks",
            bdat_flood,
            handler="hooked",
        ),
        "sessions": sessions_row,
        "idle": lambda: measured(
            "1,000 idle connections",
            "1,000 connections that never speak, timeout=2 s",
            idle_connections,
            timeout=2,
            max_connections=SESSIONS + 100,
        ),
        "trickle": lambda: measured(
            "slowloris, command", "EHLO one byte per 0.2 s, timeout=1 s", trickle, timeout=1
        ),
        "data-trickle": lambda: measured(
            "slowloris, DATA (F4)",
            "a DATA line one byte per 0.2 s, timeout=1 s",
            data_trickle,
            timeout=1,
        ),
        "tls-silent": tls_handshake_flood,
        "sigkill": sigkill_durability,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated scenario keys: " + ", ".join(scenarios()))
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    chosen = scenarios()
    if args.only:
        keys = [k.strip() for k in args.only.split(",")]
        chosen = {k: v for k, v in chosen.items() if k in keys}
    rows: list[Row] = []
    for key, run in chosen.items():
        started = time.monotonic()
        try:
            row = run()
        except Exception as error:  # report and go on: one broken scenario is a result too
            row = Row(key, "-", f"**ERROR** {type(error).__name__}: {error}", ok=False)
        print(f"{key}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        rows.append(row)
    print(
        "| scenario | sent | outcome (reply codes) | peak RSS MiB | RSS growth MiB "
        "| other client, median / max | lost |"
    )
    print("|---|---|---|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r.scenario} | {r.sent} | {r.outcome} | {r.peak_mib:.1f} | {r.growth_mib:.1f} "
            f"| {r.latency} | {r.lost} |"
        )
    return 1 if any(r.lost or not r.ok for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
