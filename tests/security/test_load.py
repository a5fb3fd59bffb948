"""Checklist B9/B10 under load, on loopback, bounded in count and time: 1,000 concurrent
sessions, 1,000 idle connections, connection limits, and a slowloris that trickles.

The server runs in a subprocess (its own core and GIL); the clients are minimal asyncio
clients so that 1,000 of them fit in this process.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.security.support import LOOPS, RawFrom, read_until, server_process, transaction
from tests.server.support import HOST, Certs, Raw

SESSIONS = 1000


def raise_fd_limit(needed: int) -> None:
    """1,000 client sockets here (and 1,000 on the server side, in its own process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One complete reply (multi-line included)."""
    out = b""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError(f"EOF after {out!r}")
        out += line
        if line[3:4] != b"-":
            return out


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # The listen backlog is finite: a refused or dropped SYN is retried, like a real MTA.
    for attempt in range(20):
        try:
            return await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.05 * (attempt + 1))
    return await asyncio.open_connection(HOST, port)


class Barrier:
    """asyncio.Barrier is 3.11+; the project supports 3.10."""

    def __init__(self, parties: int) -> None:
        self.left = parties
        self.event = asyncio.Event()

    async def wait(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()
        await asyncio.wait_for(self.event.wait(), timeout=60)


async def session(port: int, number: int, messages: int, ready: Barrier) -> list[bytes]:
    """Greet, wait until every session is connected, then send ``messages`` messages
    (each a pipelined MAIL/RCPT/DATA group) and QUIT. Returns the reply codes."""
    reader, writer = await connect(port)
    try:
        seen = [(await read_reply(reader))[:3]]
        writer.write(b"EHLO load%d.example\r\n" % number)
        seen.append((await read_reply(reader))[:3])
        await ready.wait()  # 1,000 sessions open at the same time from here on
        for m in range(messages):
            writer.write(
                b"MAIL FROM:<s%d@example.com>\r\nRCPT TO:<r%d@example.net>\r\nDATA\r\n"
                % (number, m)
            )
            for _ in range(3):
                seen.append((await read_reply(reader))[:3])
            writer.write(b"Subject: load %d/%d\r\n\r\nbody\r\n.\r\n" % (number, m))
            seen.append((await read_reply(reader))[:3])
        writer.write(b"QUIT\r\n")
        seen.append((await read_reply(reader))[:3])
        return seen
    finally:
        writer.close()


@pytest.mark.slow
@pytest.mark.parametrize("loop", LOOPS)
def test_a_thousand_concurrent_sessions_all_succeed(loop: str) -> None:
    raise_fd_limit(SESSIONS + 200)
    messages = 2
    with server_process("sink", loop=loop, max_connections=SESSIONS + 100) as srv:

        async def main() -> list[list[bytes] | BaseException]:
            ready = Barrier(SESSIONS)
            tasks = [session(srv.port, n, messages, ready) for n in range(SESSIONS)]
            return await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), timeout=90
            )

        results = asyncio.run(main())
        assert srv.alive()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], failures[:5]
    expected = [b"220", b"250"] + [b"250", b"250", b"354", b"250"] * messages + [b"221"]
    assert all(r == expected for r in results), [r for r in results if r != expected][:3]


@pytest.mark.slow
@pytest.mark.parametrize("loop", LOOPS)
def test_a_thousand_idle_connections_do_not_block_a_new_client(loop: str) -> None:
    """1,000 connections that say nothing: a new client still gets a full transaction
    done quickly, and the idle ones are closed with 421 at the idle timeout (2 s)."""
    raise_fd_limit(SESSIONS + 200)
    with server_process("sink", loop=loop, timeout=2, max_connections=SESSIONS + 100) as srv:
        idle: list[socket.socket] = []
        try:
            for _ in range(SESSIONS):
                sock = socket.create_connection((HOST, srv.port), timeout=10)
                idle.append(sock)
            opened = time.monotonic()
            took = transaction(srv.port, timeout=5)
            assert took < 5  # liveness with a generous margin, not a speed claim
            # Every idle one: the banner, then 421 4.4.2 and EOF, all by the deadline.
            deadline = opened + 2 + 15
            closed = 0
            for sock in idle:
                data, eof = read_until(sock, deadline)
                closed += eof
                assert data.endswith(b"421 4.4.2 mx.test Error: timeout exceeded\r\n"), data
            assert closed == SESSIONS
            assert srv.alive()
            transaction(srv.port, timeout=5)  # and the server is fine afterwards
        finally:
            for sock in idle:
                sock.close()


def test_connection_limits_answer_421_at_once() -> None:
    """Over max_connections: 421 right away, not a stalled connect; a slot freed is
    usable again. The same per address."""
    raise_fd_limit(400)
    for limit_option, text in [
        ("max_connections", b"421 4.7.0 mx.test Error: too many connections\r\n"),
        (
            "max_connections_per_ip",
            b"421 4.7.0 mx.test Error: too many connections from your address\r\n",
        ),
    ]:
        limit: dict[str, Any] = {limit_option: 50}
        with server_process("sink", **limit) as srv:
            held = [Raw(srv.port) for _ in range(50)]
            try:
                for raw in held:
                    assert raw.reply().startswith(b"220 ")
                for _ in range(5):
                    with Raw(srv.port) as extra:
                        started = time.monotonic()
                        assert extra.read_to_eof(timeout=5) == text
                        assert time.monotonic() - started < 5
                held.pop().close()
                time.sleep(0.3)
                assert transaction(srv.port, timeout=5) < 5
            finally:
                for raw in held:
                    raw.close()


def test_a_command_trickled_slower_than_the_timeout_is_cut_off() -> None:
    """Checklist B9 (b), the per-record deadline: one byte every 0.2 s never lets the
    line complete within the 1 s idle timeout, so the client gets 421 while trickling."""
    with server_process("sink", timeout=1) as srv, Raw(srv.port) as raw:
        raw.reply()
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        try:
            for byte in b"EHLO trickle.example.with.a.long.name\r\n":  # 7.8 s to finish
                raw.send(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass  # cut off while trickling
        assert raw.reply().startswith(b"421 4.4.2 mx.test Error: timeout exceeded")
        assert time.monotonic() - started < 7


def test_a_slow_but_steady_client_keeps_its_connection() -> None:
    """Whole commands, each well within the timeout, for three timeouts in a row."""
    with server_process("sink", timeout=1) as srv, Raw(srv.port) as raw:
        raw.reply()
        for _ in range(6):
            raw.send(b"NOOP\r\n")
            assert raw.reply() == b"250 2.0.0 OK\r\n"
            time.sleep(0.5)


def test_data_trickled_slower_than_the_timeout_is_cut_off() -> None:
    with server_process("sink", timeout=1) as srv, Raw(srv.port) as raw:
        raw.reply()
        raw.send(b"EHLO trickle.example\r\n")
        raw.reply()
        raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        assert [r[:3] for r in raw.replies(3)] == [b"250", b"250", b"354"]
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for byte in b"Subject: one slow line\r\n":  # 4.8 s for one line
                raw.send(bytes([byte]))
                time.sleep(0.2)
            raw.send(b".\r\n")
        except OSError:
            pass  # cut off while trickling: the 421 is already in our receive buffer
        assert raw.reply().startswith(b"421 4.4.2")


@pytest.mark.parametrize("loop", LOOPS)
def test_silent_connections_on_an_implicit_tls_port_are_bounded(tmp_path: Path, loop: str) -> None:
    """max_connections must bound what unauthenticated TCP connections cost, also before
    the TLS handshake: 600 connections that never send a ClientHello, limit 50."""
    raise_fd_limit(1000)
    pem = tmp_path / "server.pem"
    Certs().cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    tls = {"tls_cert": str(pem), "tls_key": str(pem), "tls_mode": "ssl_context"}
    with server_process(
        "sink", extra=tls, loop=loop, max_connections=50, tls_handshake_timeout=30
    ) as srv:
        base = srv.rss()
        silent: list[socket.socket] = []
        try:
            for _ in range(600):
                silent.append(socket.create_connection((HOST, srv.port), timeout=10))
            held = 10_000
            deadline = time.monotonic() + 10
            while held >= 50 + 100 and time.monotonic() < deadline:
                time.sleep(0.25)  # refusals close asynchronously (uvloop after its write)
                held = len(os.listdir(f"/proc/{srv.pid}/fd"))
            growth = srv.rss() - base
        finally:
            for sock in silent:
                sock.close()
    assert held < 50 + 100, held  # the limit plus the listener and the interpreter's own
    assert growth < 64 * 1024, growth


def test_the_per_address_limit_only_touches_that_address() -> None:
    """Loopback has a whole /8: 127.0.0.2 is another client as far as the server knows."""
    with server_process("sink", max_connections_per_ip=2) as srv:
        first = [Raw(srv.port), Raw(srv.port)]
        try:
            for raw in first:
                assert raw.reply().startswith(b"220 ")
            with Raw(srv.port) as third:
                assert third.read_to_eof().startswith(b"421 4.7.0")
            with RawFrom(srv.port, "127.0.0.2") as other:
                assert other.reply().startswith(b"220 ")
        finally:
            for raw in first:
                raw.close()
