"""Checklist B10, slow readers: a client pipelines legal command groups and never reads
its replies. The server must stop reading once its replies back up, whatever path the
commands take: the synchronous one (no hook) or the awaited-hook one (handle_MAIL,
handle_RCPT... as almost every real handler has).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from ferrosmtp import handlers
from tests.security.support import LOOPS, MemorySampler, connect, push, server_process
from tests.server.support import running

MIB = 1 << 20
# MAIL, RCPT, RSET: a legal pipelined group (none of them is a sync point, RFC 2920 §3.1),
# so strict pipelining does not stop it; RSET keeps the envelope from growing.
GROUP = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<r@example.net>\r\nRSET\r\n"
# A policy text of the kind real handlers put in replies (one line, under 512 octets).
LONG_REPLY = "250 2.1.5 " + "recipient accepted by local policy, " * 12
RSS_BOUND_KIB = 32 * 1024
WRITE_BUFFER_BOUND = 4 * MIB  # asyncio's high-water mark is 64 KiB; one read's replies less


class LongReplies:
    """Awaited MAIL and RCPT hooks with a longer reply text."""

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        return LONG_REPLY.replace("2.1.5", "2.1.0")

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        return LONG_REPLY


def greet(sock: socket.socket) -> None:
    sock.recv(1000)
    sock.sendall(b"EHLO slow-reader.example\r\n")
    time.sleep(0.2)
    sock.recv(10000)


def flood_rss_growth(handler: str, seconds: float, loop: str) -> tuple[int, int]:
    """Push GROUP without reading for up to ``seconds`` (stopping early once the growth
    passes the bound); returns (growth in KiB, bytes the server's kernel accepted)."""
    # RSET is a junk command: the junk limit would close the connection after ~100 groups
    # and hide what is tested here (the write side), so it is lifted.
    with server_process(handler, rcpt_reply=LONG_REPLY, max_junk_commands=10**9, loop=loop) as srv:
        base = srv.rss()
        with connect(srv.port, rcvbuf=4096) as sock:
            greet(sock)
            sent = 0
            with MemorySampler(srv) as memory:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline and memory.peak - base < RSS_BOUND_KIB:
                    sent += push(sock, GROUP * 1000, 1 << 40, 0.5)
            assert srv.alive()
        return memory.peak - base, sent


@pytest.mark.parametrize("loop", LOOPS)
def test_sink_stops_reading_when_replies_back_up(loop: str) -> None:
    growth, _ = flood_rss_growth("sink", 4, loop)
    assert growth < RSS_BOUND_KIB, growth


@pytest.mark.parametrize("loop", LOOPS)
def test_hooked_handler_stops_reading_when_replies_back_up(loop: str) -> None:
    """SECURITY-findings F1: the hook path used to turn reading back on after every hook
    while the write buffer was over its high-water mark (+4.5 MiB/s, without bound)."""
    growth, _ = flood_rss_growth("hooked", 6, loop)
    assert growth < RSS_BOUND_KIB, growth


def max_write_buffer(handler: Any, seconds: float) -> tuple[int, bool]:
    """In-process: the largest write buffer of the flooded connection, and whether the
    transport was still reading at that moment."""
    with running(handler, max_junk_commands=10**9) as controller:
        assert controller.server is not None
        server = controller.server
        worst = [0, False]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for smtp in list(server._connections):
                    transport = smtp.transport
                    if transport is not None:
                        size = transport.get_write_buffer_size()  # type: ignore[attr-defined]
                        if size > worst[0]:
                            worst[:] = [size, transport.is_reading()]  # type: ignore[attr-defined]
                stop.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            with connect(controller.port, rcvbuf=4096) as sock:
                greet(sock)
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline and worst[0] < WRITE_BUFFER_BOUND:
                    push(sock, GROUP * 1000, 1 << 40, 0.5)
        finally:
            stop.set()
            sampler.join(5)
        return int(worst[0]), bool(worst[1])


def test_sink_write_buffer_stays_near_the_high_water_mark() -> None:
    size, _ = max_write_buffer(handlers.Sink(), 3)
    assert size < WRITE_BUFFER_BOUND, size


def test_hooked_write_buffer_stays_near_the_high_water_mark() -> None:
    """The same, measured at the transport: its write buffer stays near the high-water
    mark (it reached 6.6 MiB in 1.7 s before the fix)."""
    size, reading = max_write_buffer(LongReplies(), 5)
    assert size < WRITE_BUFFER_BOUND, (size, reading)
