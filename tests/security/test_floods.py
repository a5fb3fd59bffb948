"""Checklist B8/B10: floods against a server in a subprocess, whose memory is read from
/proc while another client keeps doing full transactions.

Each flood is answered the way the checklist says, the server's RSS grows by less than a
stated bound (far below what storing the flood would take), and the probing client's
transactions all succeed while the flood goes on.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.security.support import (
    LOOPS,
    MemorySampler,
    Prober,
    ReplyCounter,
    codes,
    connect,
    push,
    read_replies,
    server_process,
)

MIB = 1 << 20
FLOOD = 100 * MIB
# A server that kept a 100 MiB flood would grow by at least 100 MiB; one that streams it
# holds a few socket reads and the Python objects of one batch of pipelined commands.
RSS_BOUND_KIB = 64 * 1024
PROBE_TIMEOUT = 10.0  # generous: the machine is shared; speed is not what is tested here


def greet(sock: socket.socket) -> None:
    assert read_until(sock, b"\r\n").startswith(b"220 ")
    sock.sendall(b"EHLO flood.example\r\n")
    assert read_until(sock, b"250 HELP\r\n").startswith(b"250-")


def read_until(sock: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    out = b""
    while not out.endswith(marker):
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r}; got {out[-200:]!r}")
        out += chunk
    return out


def assert_probes_ok(prober: Prober) -> None:
    assert prober.errors == [], prober.errors
    assert prober.durations, "no transaction of the other client completed during the flood"
    assert prober.worst < PROBE_TIMEOUT


@pytest.mark.parametrize("loop", LOOPS)
def test_endless_command_line_is_discarded_with_one_500(loop: str) -> None:
    """100 MiB without CRLF: one 500 while it streams, nothing kept, the session goes on."""
    with server_process("sink", loop=loop) as srv:
        base = srv.rss()
        with connect(srv.port) as sock:
            greet(sock)
            with MemorySampler(srv) as memory, Prober(srv.port) as prober:
                assert push(sock, b"A" * 65536, FLOOD, 60) == FLOOD
                sock.sendall(b"\r\nNOOP\r\n")
                replies = read_until(sock, b"250 2.0.0 OK\r\n")
        assert replies == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"
        assert memory.peak - base < RSS_BOUND_KIB, (base, memory.peak)
        assert_probes_ok(prober)
        assert srv.alive()


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("shape", ["lines", "one-line"])
def test_endless_data_is_consumed_not_stored(tmp_path: Path, shape: str, loop: str) -> None:
    """100 MiB of DATA with data_size_limit=1 MiB, to a handler that reads the content: the
    server keeps reading to the real end without storing past the limit, answers 552, and
    delivers nothing."""
    log = tmp_path / "accepted.log"
    with server_process("keep", log=log, data_size_limit=MIB, loop=loop) as srv:
        base = srv.rss()
        with connect(srv.port) as sock:
            greet(sock)
            sock.sendall(b"MAIL FROM:<big@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n")
            read_until(sock, b"354 End data with <CR><LF>.<CR><LF>\r\n")
            chunk = (b"B" * 1022 + b"\r\n") * 64 if shape == "lines" else b"B" * 65536
            with MemorySampler(srv) as memory, Prober(srv.port) as prober:
                assert push(sock, chunk, FLOOD, 60) == FLOOD
                sock.sendall(b"\r\n.\r\nNOOP\r\n")
                replies = read_until(sock, b"250 2.0.0 OK\r\n")
        assert replies == (
            b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"
        )
        assert memory.peak - base < RSS_BOUND_KIB, (base, memory.peak)
        assert_probes_ok(prober)
    accepted = log.read_text().splitlines() if log.exists() else []
    assert [line for line in accepted if line.startswith("big@")] == []


def test_recipient_flood_gets_452_after_the_limit(tmp_path: Path) -> None:
    """100,000 RCPTs pipelined (RFC 2920 allows it): 100 accepted, every other one 452
    4.5.3 (RFC 5321 §4.5.3.1.10), none lost, and the message goes to the first 100."""
    log = tmp_path / "accepted.log"
    n = 100_000
    with server_process("keep", log=log, max_recipients=100) as srv:
        base = srv.rss()
        with connect(srv.port) as sock:
            greet(sock)
            counter = ReplyCounter(sock).start()
            with MemorySampler(srv) as memory, Prober(srv.port) as prober:
                sock.sendall(b"MAIL FROM:<many@example.com>\r\n")
                batch = b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(1000))
                for _ in range(n // 1000):
                    sock.sendall(batch)
                seen = counter.wait_for(1 + n, timeout=60)
            assert seen[0] == 250
            assert seen[1:101] == [250] * 100
            assert seen[101:] == [452] * (n - 100), (len(seen), set(seen[101:]))
            sock.sendall(b"DATA\r\n")
            assert counter.wait_for(2 + n)[-1] == 354
            sock.sendall(b"Subject: many\r\n\r\nx\r\n.\r\nQUIT\r\n")
            final = counter.join()
        assert final[-2:] == [250, 221]
        assert memory.peak - base < RSS_BOUND_KIB, (base, memory.peak)
        assert_probes_ok(prober)
    mine = [line.split() for line in log.read_text().splitlines() if line.startswith("many@")]
    assert mine == [["many@example.com", "100", "20"]]


@pytest.mark.parametrize("loop", LOOPS)
def test_recipient_flood_from_a_client_that_does_not_read(loop: str) -> None:
    """The same flood, but the client reads nothing until it has written everything: the
    server stops reading when its replies back up (it must not buffer replies without
    bound), and once the client reads, every command has its reply (RFC 2920 §3.2: input
    is never lost)."""
    n = 100_000
    with server_process("sink", loop=loop) as srv:
        base = srv.rss()
        with connect(srv.port, rcvbuf=4096) as sock:
            greet(sock)
            batch = b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(1000))
            payload = b"MAIL FROM:<a@example.com>\r\n" + batch * (n // 1000)
            with MemorySampler(srv) as memory, Prober(srv.port) as prober:
                writer = threading.Thread(target=push, args=(sock, payload, len(payload), 30))
                writer.start()
                time.sleep(3)  # the server's replies pile up; it has to stop reading
                assert srv.alive()
                during = memory.peak
                counter = ReplyCounter(sock).start()
                seen = counter.wait_for(1 + n, timeout=60)
                writer.join(30)
        assert seen == [250] * 1001 + [452] * (n - 1000), (len(seen), set(seen))
        assert during - base < RSS_BOUND_KIB, (base, during)
        assert memory.peak - base < RSS_BOUND_KIB, (base, memory.peak)
        assert_probes_ok(prober)


def test_bad_command_flood_is_cut_off_after_max_errors() -> None:
    """An endless stream of junk: 500 for each line up to max_errors, then 421 and EOF."""
    with server_process("sink", max_errors=10) as srv, connect(srv.port) as sock:
        greet(sock)
        counter = ReplyCounter(sock, seconds=15).start()
        push(sock, b"XYZZY junk\r\n" * 5000, 200 * MIB, 10)  # stops when the server hangs up
        seen = counter.join(20)
        assert seen == [500] * 10 + [421], seen
        assert counter.data.endswith(b"421 4.7.0 mx.test Error: too many errors\r\n")
        assert srv.alive()


def test_five_thousand_pipelined_noops_under_strict_pipelining() -> None:
    """NOOP must end a pipelined group (RFC 2920 §3.1): 5,000 in one write get one 554."""
    with server_process("sink") as srv, connect(srv.port) as sock:
        greet(sock)
        sock.sendall(b"NOOP\r\n" * 5000)
        replies = read_replies(sock, 10)
        assert replies == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"


def test_five_thousand_pipelined_noops_from_a_client_that_does_not_read() -> None:
    """With strict_pipelining off, 5,000 NOOPs (and then a sustained NOOP stream) from a
    client that never reads: RSS stays bounded; when it reads, all replies are there."""
    # The junk-command limit would end this after ~100 NOOPs; what is tested here is the
    # write side, so it is lifted.
    with server_process("sink", strict_pipelining=False, max_junk_commands=10**9) as srv:
        base = srv.rss()
        with connect(srv.port, rcvbuf=4096) as sock:
            greet(sock)
            with MemorySampler(srv) as memory, Prober(srv.port) as prober:
                sock.sendall(b"NOOP\r\n" * 5000)
                time.sleep(1)
                sent = push(sock, b"NOOP\r\n" * 10_000, 1 * MIB, 5)
                time.sleep(1)
                assert srv.alive()
                counter = ReplyCounter(sock).start()
                seen = counter.wait_for(5000 + sent // 6, timeout=60)
        assert seen == [250] * (5000 + sent // 6), (len(seen), set(seen))
        assert memory.peak - base < RSS_BOUND_KIB, (base, memory.peak)
        assert_probes_ok(prober)


@pytest.mark.parametrize(
    "command", [b"RSET\r\n", b"HELP\r\n", b"MAIL FROM:<a@example.com> SIZE=999999999999\r\n"]
)
def test_junk_commands_are_limited(command: bytes) -> None:
    """Checklist B10 (Postfix smtpd_junk_command_limit): a client looping on commands that
    move no mail is cut off, however politely it asks."""
    with server_process("sink") as srv, connect(srv.port) as sock:
        greet(sock)
        sock.sendall(command * 500 + b"QUIT\r\n")
        seen = codes(read_replies(sock, 10))
    assert 421 in seen[:150], (len(seen), sorted(set(seen)))
