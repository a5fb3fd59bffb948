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
from typing import Any

import pytest

from ferrosmtp.handlers import Sink
from ferrosmtp.server import AuthResult
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
from tests.server.support import Raw, running

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


def test_a_large_fan_out_gets_its_452s_and_goes_on(tmp_path: Path) -> None:
    """RCPTs over max_recipients pipelined (RFC 2920 allows it): 100 accepted, the others
    452 4.5.3 (RFC 5321 §4.5.3.1.10), none counted as an error within the overshoot
    allowance (Postfix's smtpd_recipient_overshoot_limit, 1,000), and the message goes to
    the first 100."""
    log = tmp_path / "accepted.log"
    n = 1100
    with server_process("keep", log=log, max_recipients=100) as srv, connect(srv.port) as sock:
        greet(sock)
        counter = ReplyCounter(sock).start()
        sock.sendall(b"MAIL FROM:<many@example.com>\r\n")
        sock.sendall(b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(n)))
        seen = counter.wait_for(1 + n, timeout=60)
        assert seen == [250] * 101 + [452] * (n - 100), (len(seen), set(seen[101:]))
        sock.sendall(b"DATA\r\n")
        assert counter.wait_for(2 + n)[-1] == 354
        sock.sendall(b"Subject: many\r\n\r\nx\r\n.\r\nQUIT\r\n")
        final = counter.join()
    assert final[-2:] == [250, 221]
    mine = [line.split() for line in log.read_text().splitlines() if line.startswith("many@")]
    assert mine == [["many@example.com", "100", "20"]]


def test_recipient_flood_is_cut_off_past_the_overshoot_allowance() -> None:
    """Issue 10, fault 7: 100,000 RCPTs over the limit were 452 at line rate and never
    closed the session. Past the overshoot allowance each one is an error: slowed down
    from soft_error_limit on, and 421 at max_errors; the server stays small meanwhile."""
    n = 100_000
    with server_process("sink", max_recipients=100, error_sleep=0.01) as srv:
        base = srv.rss()
        with connect(srv.port) as sock:
            greet(sock)
            counter = ReplyCounter(sock, seconds=30).start()
            with MemorySampler(srv) as memory:
                sock.sendall(b"MAIL FROM:<many@example.com>\r\n")
                batch = b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(1000))
                push(sock, batch * (n // 1000), 200 * MIB, 20)  # until the server hangs up
                seen = counter.join(30)
        # 1 MAIL + 100 RCPTs, 1,000 allowed 452s, 20 counted ones (the 20th is max_errors)
        assert seen == [250] * 101 + [452] * 1020 + [421], (len(seen), set(seen))
        assert counter.data.endswith(b"421 4.7.0 mx.test Error: too many errors\r\n")
        assert memory.peak - base < RSS_BOUND_KIB, (base, memory.peak)
        assert srv.alive()


@pytest.mark.parametrize("loop", LOOPS)
def test_recipient_flood_from_a_client_that_does_not_read(loop: str) -> None:
    """The same flood, but the client reads nothing until it has written everything: the
    server stops reading when its replies back up (it must not buffer replies without
    bound), and once the client reads, every command has its reply (RFC 2920 §3.2: input
    is never lost)."""
    n = 100_000
    # What is tested is the write side: the recipient overshoot limit (which would end
    # this after 2,000 RCPTs) is lifted.
    with server_process("sink", loop=loop, recipient_overshoot_limit=10**9) as srv:
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
    # error_sleep shortened: the soft error limit's delays are tested on their own below
    with server_process("sink", error_sleep=0.01) as srv, connect(srv.port) as sock:
        greet(sock)
        sock.sendall(command * 500 + b"QUIT\r\n")
        seen = codes(read_replies(sock, 10))
    assert 421 in seen[:150], (len(seen), sorted(set(seen)))


# -- issue 10, fault 7: every refused command is an error ------------------------------------


def test_a_directory_harvest_through_a_hook_is_cut_off() -> None:
    """5,000 pipelined RCPTs to a hook answering 550 harvested a directory at line rate:
    each refusal is an error now, so the session ends with 421 at max_errors."""
    with (
        server_process("hooked", rcpt_reply="550 5.1.1 No such user", error_sleep=0.01) as srv,
        connect(srv.port) as sock,
    ):
        greet(sock)
        counter = ReplyCounter(sock, seconds=20).start()
        sock.sendall(b"MAIL FROM:<harvest@example.com>\r\n")
        push(sock, b"".join(b"RCPT TO:<u%d@example.net>\r\n" % i for i in range(5000)), MIB, 10)
        seen = counter.join(20)
    assert seen == [250] + [550] * 20 + [421], seen


def test_errors_past_the_soft_limit_cost_time() -> None:
    """Postfix's smtpd_soft_error_limit and smtpd_error_sleep_time: from soft_error_limit
    errors on, each error costs the client error_sleep seconds before the server reads or
    answers anything more (a lower bound: only that can be checked on a busy machine)."""
    with (
        server_process("sink", soft_error_limit=2, error_sleep=0.3, max_errors=100) as srv,
        connect(srv.port) as sock,
    ):
        greet(sock)
        start = time.monotonic()
        sock.sendall(b"XYZZY\r\n" * 6 + b"NOOP\r\n")
        replies = read_until(sock, b"250 2.0.0 OK\r\n", timeout=20)
        elapsed = time.monotonic() - start
    assert codes(replies) == [500] * 6 + [250]
    assert elapsed >= 5 * 0.3, elapsed  # errors 2..6 cost 0.3 s each


def test_malformed_auth_and_refused_commands_count_as_errors() -> None:
    """A 501 to AUTH, a 503 out of sequence, a 555: all errors (the first two were not)."""

    def authenticator(*args: Any) -> AuthResult:
        return AuthResult(success=False)

    with (
        running(Sink(), max_errors=5, auth_require_tls=False, authenticator=authenticator) as c,
        Raw(c.port) as raw,
    ):
        raw.greet()
        raw.send(b"AUTH PLAIN not-base64!\r\n")
        assert raw.reply() == b"501 5.5.2 Can't decode base64\r\n"
        raw.send(b"RCPT TO:<a@example.net>\r\n")
        assert raw.reply() == b"503 5.5.1 Error: need MAIL command\r\n"
        raw.send(b"AUTH LOGIN\r\n")
        assert raw.reply().startswith(b"334 ")
        raw.send(b"*\r\n")
        assert raw.reply() == b"501 5.7.0 Auth aborted\r\n"
        raw.send(b"DATA\r\n")
        assert raw.reply() == b"503 5.5.1 Error: need MAIL command\r\n"
        raw.send(b"MAIL FROM:<a@example.com> FOO=1\r\n")
        assert raw.read_to_eof(10) == (
            b"555 5.5.4 Error: MAIL parameter FOO not supported\r\n"
            b"421 4.7.0 mx.test Error: too many errors\r\n"
        )
