"""Helpers for the relay tests: queue backends, a relay process, next hops that record
what they receive (with scripted replies), dnsmasq as the DNS server, and smtplib
sending from any loopback address. Everything binds 127.0.0.0/8 only; every wait is
bounded; everything started is stopped."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.message
import email.policy
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ferrosmtp.relay.queue import Queue
from ferrosmtp.relay.sqlite import SqliteQueue
from ferrosmtp.server import Controller
from tests.peers import free_port, require_peer, stop_process, wait_for, wait_listening


def _postgres(tmp: Path) -> Queue:
    """A PostgresQueue in a schema of its own on the session's cluster (started on first
    use, stopped at the end of the session by tests/conftest.py)."""
    from tests.scaleout.services import shared_postgres

    url = shared_postgres().schema_url(str(tmp))
    from ferrosmtp.relay.postgres import PostgresQueue

    return PostgresQueue(url, node="test-node")


# The backends the relay's test suite runs against: every test taking the ``queue``
# fixture runs against each.
BACKENDS: dict[str, Callable[[Path], Queue]] = {
    "sqlite": lambda tmp: SqliteQueue(tmp / "spool"),
    "postgres": _postgres,
}

# Extra arguments for every ``ferrosmtp relay`` and ``ferrosmtp queue`` the tests run,
# e.g. FERROSMTP_TEST_RELAY_ARGS="--queue-url postgresql://..." runs the whole
# process-level suite against another queue backend.
RELAY_ARGS: list[str] = os.environ.get("FERROSMTP_TEST_RELAY_ARGS", "").split()


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def message(subject: str = "test", body: str = "hello\r\n", **headers: str) -> bytes:
    lines = [f"Subject: {subject}", f"Message-ID: <{subject.replace(' ', '.')}@test>"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def send(
    port: int,
    sender: str,
    recipients: Sequence[str],
    content: bytes,
    *,
    source: str | None = None,
    host: str = "127.0.0.1",
    mail_options: Sequence[str] = (),
    rcpt_options: Sequence[str] = (),
) -> tuple[int, str, dict[str, tuple[int, bytes]]]:
    """Send with smtplib; returns the end-of-data reply and the refused recipients."""
    with smtplib.SMTP(
        host, port, timeout=30, source_address=(source, 0) if source else None
    ) as smtp:
        smtp.ehlo("client.test")
        code, reply = smtp.mail(sender, list(mail_options))
        if code != 250:
            return code, reply.decode(), {}
        refused = {}
        for rcpt in recipients:
            rc, rr = smtp.rcpt(rcpt, list(rcpt_options))
            if rc >= 400:
                refused[rcpt] = (rc, rr)
        if len(refused) == len(recipients):
            first = next(iter(refused.values()))
            return first[0], first[1].decode(), refused
        code, reply = smtp.data(content)
        return code, reply.decode(), refused


# --- next hops -------------------------------------------------------------------------


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    rcpt_options: list[str]

    @property
    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


class ScriptedHandler:
    """Records messages; ``data_replies`` (consumed in order) and ``rcpt_replies``
    (per address) script refusals."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.data_replies: list[str] = []
        self.rcpt_replies: dict[str, str] = {}
        self.lock = threading.Lock()
        self.attempts = 0
        self.hang = 0.0  # seconds handle_DATA waits before answering
        self.sessions: set[int] = set()  # connections that carried a message
        self.busy = 0
        self.most_busy = 0  # the most messages in progress at once

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.busy += 1
            self.most_busy = max(self.most_busy, self.busy)
            self.sessions.add(id(session))
        try:
            if self.hang:
                await asyncio.sleep(self.hang)
            return self._answer(envelope)
        finally:
            with self.lock:
                self.busy -= 1

    def _answer(self, envelope: Any) -> str:
        with self.lock:
            self.attempts += 1
            if self.data_replies:
                return self.data_replies.pop(0)
            self.messages.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content),
                    list(envelope.mail_options),
                    list(envelope.rcpt_options),
                )
            )
        return "250 2.0.0 Ok: stored"

    def wait(self, count: int, timeout: float = 20.0) -> list[Received]:
        wait_for(lambda: len(self.messages) >= count, timeout, what=f"{count} message(s)")
        return list(self.messages)


@contextlib.contextmanager
def next_hop(
    host: str = "127.0.0.1", port: int | None = None, **options: Any
) -> Iterator[tuple[ScriptedHandler, int]]:
    """A ferrosmtp server on host:port recording what it receives."""
    handler = ScriptedHandler()
    port = port or free_port(host)
    controller = Controller(handler, hostname=host, port=port, **options)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


# --- the relay as a process -------------------------------------------------------------


class RelayProcess:
    """``ferrosmtp relay`` in a child process, its log in ``log_path``."""

    def __init__(self, spool: Path, *args: str, port: int | None = None) -> None:
        self.spool = spool
        self.port = port or free_port()
        self.args = list(args)
        self.log_path = spool.parent / f"relay-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RelayProcess:
        argv = [
            sys.executable,
            "-m",
            "ferrosmtp",
            "relay",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--spool",
            str(self.spool),
            *self.args,
            *RELAY_ARGS,
        ]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        log.close()
        try:
            wait_listening("127.0.0.1", self.port, timeout=20)
        except Exception:
            self.kill()
            raise RuntimeError("relay did not start:\n" + self.log()) from None
        return self

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def __enter__(self) -> RelayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def queue_cli(spool: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrosmtp", "queue", *args, "--spool", str(spool), *RELAY_ARGS],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- DNS -------------------------------------------------------------------------------


class Dnsmasq:
    """dnsmasq answering only from its command line (MX, A, AAAA, null MX) on a
    loopback UDP/TCP port; no system file read, nothing forwarded."""

    def __init__(self, records: Sequence[str]) -> None:
        self.binary = require_peer("dnsmasq")
        self.records = list(records)
        self.port = _free_udp_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Dnsmasq:
        argv = [
            self.binary,
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--conf-file=/dev/null",
            "--local-ttl=1",
            "--pid-file=",
            "--user=root",
            *self.records,
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(self._answers, 10, what="dnsmasq to answer")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                "dnsmasq exited: " + (self.proc.stderr.read() or b"").decode()
                if self.proc.stderr
                else "dnsmasq exited"
            )
        return wait_listening_tcp(self.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=10)
            self.proc = None

    def __enter__(self) -> Dnsmasq:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_listening_tcp(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_udp_port() -> int:
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port for dnsmasq")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
