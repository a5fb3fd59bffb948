"""Relay nodes on one PostgreSQL queue behind HAProxy, a load that remembers what got a
250, and a next hop that counts what arrives (by Message-ID)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import smtplib
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.peers import free_port
from tests.relay.support import RelayProcess, ScriptedHandler
from tests.scaleout.services import HAProxy, PostgresCluster

_MESSAGE_ID = re.compile(rb"^Message-I[Dd]:\s*(<[^>\r\n]*>)", re.MULTILINE | re.IGNORECASE)


def message_id(content: bytes) -> str | None:
    head = content.split(b"\r\n\r\n", 1)[0]
    match = _MESSAGE_ID.search(head)
    return match.group(1).decode() if match else None


class CountingHop(ScriptedHandler):
    """A next hop that counts the Message-ID of each message it accepts, and may take
    its time before answering RCPT (deliveries in flight when a node dies; a delay at
    the end of data instead would turn most of them into duplicates, as any message
    whose final dot went out before the kill)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.ids: collections.Counter[str] = collections.Counter()
        self.arrived: dict[str, float] = {}

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        mid = message_id(bytes(envelope.original_content))
        with self.lock:
            if mid is not None:
                self.ids[mid] += 1
                self.arrived.setdefault(mid, time.monotonic())
            self.messages.clear()  # the ids are enough; keep memory flat
        return reply

    def wait_ids(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ids) < count:
            assert time.monotonic() < deadline, f"{len(self.ids)} of {count} message(s) arrived"
            time.sleep(0.05)

    def duplicates(self) -> int:
        with self.lock:
            return sum(n - 1 for n in self.ids.values() if n > 1)


class Load:
    """``clients`` threads sending through ``port`` until stopped, each message with its
    own Message-ID; ``acked`` holds those that got a 250."""

    def __init__(
        self,
        port: int,
        *,
        clients: int = 6,
        size: int = 1024,
        prefix: str = "load",
        source: str | None = None,
        limit: int | None = None,
    ) -> None:
        self.port = port
        self.clients = clients
        self.body = ("X" * 76 + "\r\n") * max(size // 78, 1)
        self.prefix = prefix
        self.source = source
        self.limit = limit
        self.acked: dict[str, str] = {}
        self.refused: collections.Counter[str] = collections.Counter()
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sent = 0

    def start(self) -> Load:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True)
            for i in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
            assert not thread.is_alive(), "a load client did not stop"
        return self

    def wait_sent(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"only {len(self.acked)} of {count} acked"
            time.sleep(0.02)

    def _next(self) -> int | None:
        with self._lock:
            if self.limit is not None and self._sent >= self.limit:
                return None
            self._sent += 1
            return self._sent

    def _client(self, index: int) -> None:
        source = (self.source, 0) if self.source else None
        while not self._stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=30, source_address=source) as s:
                    s.ehlo("load.test")
                    while not self._stop.is_set():
                        n = self._next()
                        if n is None:
                            self._stop.wait(0.05)
                            continue
                        mid = f"<{self.prefix}.{index}.{n}@load.test>"
                        content = f"Message-ID: {mid}\r\nSubject: {n}\r\n\r\n{self.body}"
                        try:
                            s.sendmail("load@x.test", ["sink@y.test"], content)
                        except smtplib.SMTPResponseException as error:
                            with self._lock:
                                self.refused[f"{error.smtp_code}"] += 1
                            if error.smtp_code == 421:
                                raise
                            continue
                        with self._lock:
                            self.acked[mid] = "250"
            except (smtplib.SMTPException, OSError):
                with self._lock:
                    self.errors += 1
                self._stop.wait(0.05)


class Nodes:
    """``count`` relay nodes on ``url``, HAProxy in front (PROXY v2 toward them), all
    relaying to ``hop_port``."""

    def __init__(
        self,
        workdir: Path,
        url: str,
        count: int,
        hop_port: int,
        *,
        extra: Sequence[str] = (),
        proxy: bool = True,
    ) -> None:
        self.workdir = workdir
        self.url = url
        self.args = [
            "--queue-url",
            url,
            "--relayhost",
            f"127.0.0.1:{hop_port}",
            "--lease",
            "4",
            "--min-backoff",
            "1",
            "--max-backoff",
            "2",
            "--hostname",
            "node.test",
            *extra,
        ]
        if proxy:
            self.args += ["--proxy-protocol", "5"]
        self.nodes = [
            RelayProcess(workdir / f"spool{i}", *self.args, port=free_port()) for i in range(count)
        ]
        self.haproxy = HAProxy([n.port for n in self.nodes], workdir=workdir) if proxy else None

    @property
    def port(self) -> int:
        assert self.haproxy is not None
        return self.haproxy.port

    def start(self) -> Nodes:
        for node in self.nodes:
            node.start()
        if self.haproxy is not None:
            self.haproxy.start()
        return self

    def stop(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        for node in self.nodes:
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"--- node {n.port} ---\n{n.log()[-4000:]}" for n in self.nodes)

    def sent_by(self) -> list[int]:
        """Deliveries logged by each node."""
        return [n.log().count("status=sent") for n in self.nodes]

    def accepted_by(self) -> list[int]:
        return [n.log().count(" message from=") for n in self.nodes]


def queued(cluster: PostgresCluster, url: str, where: str = "true") -> int:
    schema = url.rsplit("%3D", 1)[1]
    return int(cluster.psql(f"SELECT count(*) FROM {schema}.relay_messages WHERE {where}"))


@contextlib.contextmanager
def counting_hop(delay: float = 0.0) -> Iterator[tuple[CountingHop, int]]:
    """A ferrosmtp server on 127.0.0.1:<free port> counting Message-IDs."""
    from ferrosmtp.server import Controller

    handler = CountingHop(delay)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
