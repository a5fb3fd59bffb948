"""kill -9 at any point loses no message that got a 250: 10 times, the relay is killed
while 20 clients send, and restarted on the same spool; at the end every Message-ID
that was acknowledged has arrived at the next hop. Duplicates (messages in flight at a
kill, delivered again after the restart: at-least-once) are counted and reported."""

from __future__ import annotations

import collections
import random
import smtplib
import threading
import time
from pathlib import Path

import pytest

from tests.peers import free_port
from tests.relay.support import RelayProcess, next_hop, wait_until
from tests.relay.test_delivery import listed

ROUNDS = 10
CLIENTS = 20


class Clients:
    """20 threads sending numbered messages until told to stop; the Message-IDs that got
    a 250 are remembered."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(CLIENTS)]

    def run(self, index: int) -> None:
        number = 0
        while not self.stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
                    while not self.stop.is_set():
                        number += 1
                        mid = f"<c{index}.n{number}@crash.test>"
                        content = f"Message-ID: {mid}\r\nSubject: crash\r\n\r\nbody\r\n"
                        smtp.sendmail("a@x.test", ["b@y.test"], content.encode())
                        with self.lock:
                            self.acked.append(mid)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the relay is down: try again

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_message(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    port = free_port()
    rng = random.Random(11)
    with next_hop() as (hop, hop_port):
        args = (
            "--relayhost",
            f"127.0.0.1:{hop_port}",
            "-q",
            "--min-backoff",
            "1",
            "--max-backoff",
            "2",
        )
        relay = RelayProcess(spool, *args, port=port)
        with Clients(port) as clients:
            for _ in range(ROUNDS):
                relay.start()
                time.sleep(rng.uniform(0.5, 1.5))
                relay.kill()  # SIGKILL: no shutdown code runs
        relay.start()
        try:
            acked = set(clients.acked)
            assert len(acked) > 100, "the clients hardly sent anything"

            def arrived() -> collections.Counter[str]:
                with hop.lock:
                    return collections.Counter(m.message["Message-ID"] for m in hop.messages)

            wait_until(lambda: acked <= set(arrived()), 120, "every acknowledged message")
            wait_until(lambda: listed(spool) == [], 60, "an empty queue")
        finally:
            relay.stop()
        counts = arrived()
        duplicates = sum(n - 1 for n in counts.values() if n > 1)
        lost = acked - set(counts)
        print(
            f"\ncrash test: {ROUNDS} kill -9, {len(acked)} acknowledged, "
            f"{len(counts)} distinct arrived, {duplicates} duplicates, {len(lost)} lost"
        )
        assert not lost
