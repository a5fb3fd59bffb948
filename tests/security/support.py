"""Helpers for the security suite: a server in a subprocess whose memory can be read from
/proc, a memory sampler, a transaction timer for "is another client still served", and a
socket client that keeps pushing bytes without reading replies.

Every wait has a timeout and every process started here is stopped in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.server.support import HOST, Raw

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
MESSAGE = b"Subject: probe\r\n\r\nhello\r\n"


def _loops() -> list[str]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


# The event loops a server process can run on here: flood tests run on each, since
# `ferrosmtp serve` uses uvloop when it is installed and its transports differ.
LOOPS = _loops()


class RawFrom(Raw):
    """``Raw`` from another loopback address (127.0.0.0/8 is all local): another client,
    as far as per-address limits go."""

    def __init__(self, port: int, source: str, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(
            (HOST, port), timeout=timeout, source_address=(source, 0)
        )
        self.buf = b""


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM / VmSize of a process, in KiB (Linux /proc)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize"):
                out[key] = int(value.split()[0])
    return out


class ServerProcess:
    """A server process; ``port`` once it listens. ``rss()`` and ``hwm()`` in KiB."""

    def __init__(self, popen: subprocess.Popen[bytes], port: int) -> None:
        self.popen = popen
        self.port = port

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss(self) -> int:
        return proc_status(self.pid)["VmRSS"]

    def hwm(self) -> int:
        return proc_status(self.pid)["VmHWM"]

    def reset_hwm(self) -> None:
        """Make VmHWM start again from the current RSS (writing 5 to clear_refs)."""
        with contextlib.suppress(OSError), open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")


def _stop(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=5)


def _wait_for_port(popen: subprocess.Popen[bytes], pattern: re.Pattern[bytes], stream: Any) -> int:
    """Read lines from ``stream`` until ``pattern`` gives the port (10 s at most)."""
    found: list[int] = []
    lines: list[bytes] = []

    def scan() -> None:
        for line in iter(stream.readline, b""):
            lines.append(line)
            m = pattern.search(line)
            if m is not None:
                found.append(int(m.group(1)))
                return

    reader = threading.Thread(target=scan, daemon=True)
    reader.start()
    reader.join(10)
    if not found:
        raise RuntimeError(f"server did not start: {b''.join(lines)!r}")
    # Keep draining the pipe so that a chatty server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in iter(stream.readline, b"")], daemon=True).start()
    return found[0]


@contextlib.contextmanager
def server_process(
    handler: str = "sink",
    *,
    log: Path | None = None,
    maildir: Path | None = None,
    rcpt_reply: str | None = None,
    fsize: int | None = None,
    extra: dict[str, Any] | None = None,
    loop: str = "asyncio",
    **options: Any,
) -> Iterator[ServerProcess]:
    """``ferrosmtp.server.Server(handler, **options)`` in a subprocess on a free port, on
    asyncio's loop or on uvloop (what ``ferrosmtp serve`` picks when it is installed)."""
    spec = {
        "handler": handler,
        "options": options,
        "log": str(log) if log else None,
        "maildir": str(maildir) if maildir else None,
        "rcpt_reply": rcpt_reply,
        "fsize": fsize,
        "loop": loop,
        **(extra or {}),
    }
    popen = subprocess.Popen(
        [PYTHON, "-m", "tests.security.serve_proc", json.dumps(spec)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert popen.stdout is not None
        port = _wait_for_port(popen, re.compile(rb"^PORT (\d+)"), popen.stdout)
        yield ServerProcess(popen, port)
    finally:
        _stop(popen)


@contextlib.contextmanager
def cli_server(*args: str) -> Iterator[ServerProcess]:
    """``python -m ferrosmtp serve --port 0 ...``: the command users run."""
    popen = subprocess.Popen(
        [PYTHON, "-m", "ferrosmtp", "serve", "--host", HOST, "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert popen.stderr is not None
        port = _wait_for_port(popen, re.compile(rb"listening on [\d.]+:(\d+)"), popen.stderr)
        yield ServerProcess(popen, port)
    finally:
        _stop(popen)


class MemorySampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread; ``peak`` in KiB."""

    def __init__(self, server: ServerProcess, interval: float = 0.05) -> None:
        self.server = server
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.peak = max(self.peak, self.server.rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(OSError, KeyError):
            self.peak = max(self.peak, self.server.hwm())


def transaction(port: int, timeout: float = 10.0, sender: str = "probe@example.com") -> float:
    """One complete smtplib transaction; returns how long it took (raises on failure)."""
    started = time.monotonic()
    with smtplib.SMTP(HOST, port, timeout=timeout) as client:
        client.ehlo("probe.example")
        refused = client.sendmail(sender, ["rcpt@example.net"], MESSAGE)
        assert refused == {}
    return time.monotonic() - started


class Prober:
    """Runs ``transaction`` against ``port`` every ``interval`` s in a thread while a flood
    goes on; records each duration or error. Proves other clients are still served."""

    def __init__(self, port: int, interval: float = 0.3, timeout: float = 10.0) -> None:
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.durations: list[float] = []
        self.errors: list[str] = []
        self.acked: list[str] = []  # senders of the probe messages that got their 250
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set() and n < 1000:
            n += 1
            sender = f"p{n}@example.com"
            try:
                self.durations.append(transaction(self.port, self.timeout, sender))
                self.acked.append(sender)
            except Exception as error:
                self.errors.append(f"{type(error).__name__}: {error}")
            self._stop.wait(self.interval)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    @property
    def worst(self) -> float:
        return max(self.durations, default=float("nan"))


def connect(port: int, timeout: float = 10.0, rcvbuf: int | None = None) -> socket.socket:
    """A client socket; ``rcvbuf`` shrinks its receive buffer (a client that reads little)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((HOST, port))
    return sock


def push(sock: socket.socket, data: bytes, total: int, seconds: float) -> int:
    """Send ``data`` over and over (a stream of whole copies) until ``total`` bytes or
    ``seconds`` have gone by, without ever reading; returns the bytes the kernel accepted.
    Stops early if the peer closes."""
    deadline = time.monotonic() + seconds
    sent = 0
    view = memoryview(data)
    old = sock.gettimeout()
    sock.setblocking(False)
    try:
        while sent < total and time.monotonic() < deadline:
            offset = sent % len(data)
            piece = view[offset : offset + min(len(data) - offset, total - sent)]
            try:
                sent += sock.send(piece)
            except BlockingIOError:
                time.sleep(0.002)
            except (BrokenPipeError, ConnectionResetError):
                break
    finally:
        sock.settimeout(old)
    return sent


def read_until(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """Everything the server sends until EOF, a reset or ``deadline`` (a
    ``time.monotonic()`` value), and whether the server closed the connection (EOF)."""
    out = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(1 << 16)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            return out, True
        out += chunk
    return out, False


def read_replies(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until EOF or ``seconds`` (a reset counts as EOF)."""
    return read_until(sock, time.monotonic() + seconds)[0]


def codes(replies: bytes) -> list[int]:
    """The code of every final reply line in ``replies`` (continuation lines skipped)."""
    return [
        int(line[:3]) for line in replies.split(b"\r\n") if len(line) >= 3 and line[3:4] != b"-"
    ]


class ReplyCounter:
    """Reads replies in a thread while the test writes (a client that does read)."""

    def __init__(self, sock: socket.socket, seconds: float = 60.0) -> None:
        # A socket object of its own: its timeout must not change the writer's.
        self.sock = sock.dup()
        self.seconds = seconds
        self.data = b""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    chunk = self.sock.recv(1 << 16)
                except (TimeoutError, ConnectionResetError):
                    break
                if not chunk:
                    break
                self.data += chunk
        finally:
            self.sock.close()

    def start(self) -> ReplyCounter:
        self._thread.start()
        return self

    def wait_for(self, count: int, timeout: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(codes(self.data)) < count and time.monotonic() < deadline:
            if not self._thread.is_alive():
                break
            time.sleep(0.05)
        return codes(self.data)

    def join(self, timeout: float = 30.0) -> list[int]:
        self._thread.join(timeout)
        return codes(self.data)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
