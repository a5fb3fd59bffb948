"""Relay nodes sharing one PostgreSQL queue behind a real HAProxy (TCP, send-proxy-v2),
all on loopback: exactly once when nothing fails, kill -9 of a node under load (10
times), PostgreSQL restarted under load."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.peers import require_peer
from tests.scaleout.conftest import REPORT
from tests.scaleout.nodes import Load, Nodes, counting_hop, queued
from tests.scaleout.services import PostgresCluster

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def wait(check: object, timeout: float, what: str, nodes: Nodes | None = None) -> float:
    """Poll ``check()`` until true; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}"
                + (f"\n{nodes.logs()}" if nodes is not None else "")
            )
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.parametrize("count", [2, 3])
def test_every_message_delivered_exactly_once_through_haproxy(
    count: int, tmp_path: Path, postgres: PostgresCluster, queue_url: str
) -> None:
    source = require_peer("smtp-source")
    messages = 400
    with counting_hop() as (hop, hop_port):
        nodes = Nodes(tmp_path, queue_url, count, hop_port)
        try:
            nodes.start()
            result = subprocess.run(
                [
                    source,
                    "-m",
                    str(messages),
                    "-s",
                    "12",
                    "-l",
                    "1024",
                    "-f",
                    "load@x.test",
                    "-t",
                    "sink@y.test",
                    f"127.0.0.1:{nodes.port}",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            assert "warning" not in result.stderr and "fatal" not in result.stderr, result.stderr
            wait(lambda: len(hop.ids) >= messages, 60, f"{messages} deliveries", nodes)
            wait(lambda: queued(postgres, queue_url) == 0, 30, "an empty queue", nodes)
            time.sleep(0.5)  # anything late would show now
            assert len(hop.ids) == messages
            assert hop.duplicates() == 0
            accepted, sent = nodes.accepted_by(), nodes.sent_by()
        finally:
            nodes.stop()
    assert sum(accepted) == messages and sum(sent) == messages
    assert all(accepted) and all(sent), (accepted, sent)  # HAProxy spread the load


def test_kill_9_a_node_under_load_ten_times(
    tmp_path: Path, postgres: PostgresCluster, queue_url: str
) -> None:
    """Every message that got a 250 arrives; the survivor delivers what the dead node held
    once its leases expire (--lease 4: within 4 + 10 s)."""
    lease = 4.0
    taken_over: list[tuple[int, float]] = []
    duplicates = 0
    acked_total = 0
    with counting_hop(delay=0.05) as (hop, hop_port):
        nodes = Nodes(tmp_path, queue_url, 2, hop_port)
        try:
            nodes.start()
            for round_ in range(10):
                victim = nodes.nodes[round_ % 2]
                load = Load(nodes.port, clients=6, prefix=f"r{round_}").start()
                load.wait_sent(30, 30)
                time.sleep(0.3 + 0.07 * round_)
                victim.kill()  # SIGKILL
                killed = time.monotonic()
                owner = f"split_part(lease_owner, '/', 1) LIKE '%:{victim.port}'"
                held = queued(postgres, queue_url, f"{owner} AND lease_until > 0")
                time.sleep(0.5)  # the load goes on through the survivor
                load.stop()
                acked = set(load.acked)

                def arrived(acked: set[str] = acked) -> bool:
                    return not acked - set(hop.ids)

                wait(arrived, lease + 10, f"round {round_}: every acknowledged message", nodes)
                wait(lambda: queued(postgres, queue_url) == 0, lease + 10, "an empty queue", nodes)
                took = time.monotonic() - killed
                assert took <= lease + 10
                taken_over.append((held, took))
                acked_total += len(acked)
                victim.start()  # same port, same node name: ready for the next round
                time.sleep(0.7)  # HAProxy's check sees it up again (inter 300 ms, rise 1)
            duplicates = hop.duplicates()
            stray = set(hop.ids) - {m for m in hop.ids if m.startswith("<r")}
        finally:
            nodes.stop()
    assert not stray
    assert sum(held for held, _ in taken_over) > 0, "no kill caught a node holding mail"
    REPORT.append(
        f"kill -9 x10 (2 nodes, --lease {lease:.0f}): {acked_total} messages acknowledged, "
        f"0 lost, {duplicates} duplicate(s); held by the dead node at the kill: "
        + ", ".join(str(h) for h, _ in taken_over)
        + "; all delivered within (s): "
        + ", ".join(f"{t:.1f}" for _, t in taken_over)
    )


def test_postgresql_restarted_under_load(tmp_path: Path, own_postgres: PostgresCluster) -> None:
    """No 250 without a commit, no loss, no duplicate from the reconnection."""
    url = own_postgres.schema_url("nodes-restart")
    with counting_hop() as (hop, hop_port):
        nodes = Nodes(tmp_path, url, 2, hop_port, extra=["--lease", "30"])
        try:
            nodes.start()
            load = Load(nodes.port, clients=6, prefix="pg").start()
            load.wait_sent(100, 30)
            own_postgres.restart("immediate", down=1.0)
            before = len(load.acked)
            load.wait_sent(before + 100, 60)  # the nodes carry on after reconnecting
            load.stop()
            acked = set(load.acked)
            wait(lambda: not acked - set(hop.ids), 40, "every acknowledged message", nodes)
            wait(lambda: queued(own_postgres, url) == 0, 40, "an empty queue", nodes)
            time.sleep(0.5)
            logs = "".join(n.log() for n in nodes.nodes)
        finally:
            nodes.stop()
    delivered = set(hop.ids)
    assert delivered - acked == set(), "delivered though the client was told 451"
    assert hop.duplicates() == 0
    refused = sum(load.refused.values())
    assert load.refused.keys() <= {"451"}, load.refused
    assert logs.count("answers again") >= 2, "a node did not notice the restart"
    REPORT.append(
        f"PostgreSQL restarted (immediate) under load, 2 nodes: {len(acked)} acknowledged, "
        f"all delivered once; {refused} answered 451 while it was away, none delivered"
    )
