"""A big queue: messages sent by Postfix's smtp-source while the next hop is down, then
the next hop (smtp-sink) comes up and ``queue retry --all``: every message is delivered,
the relay's peak RSS stays under 200 MiB and ``queue list`` answers in under 2 s.

CI runs it with 10,000 messages (about half a minute on 2 cores); the issue's full size
is ``FERROSMTP_RELAY_VOLUME=100000 pytest tests/relay/test_volume.py`` (a few minutes).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.peers import SmtpSink, free_port, require_peer
from tests.relay.support import RelayProcess, wait_until

VOLUME = int(os.environ.get("FERROSMTP_RELAY_VOLUME", "10000"))
RSS_LIMIT = 200 << 20


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no VmHWM")


def queue_size(spool: Path) -> tuple[int, float]:
    """Messages queued and tried at least once (none in delivery), and the time that
    ``queue list --json`` took (wall clock; its CPU time is printed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ferrosmtp", "queue", "list", "--json", "--spool", str(spool)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"queue list --json: {seconds:.2f} s wall, {cpu:.2f} s CPU")
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    settled = [e for e in entries if e["attempts"] >= 1 and not e["leased"]]
    return (len(entries) if len(settled) == len(entries) else -1), seconds


@pytest.mark.slow
def test_a_big_queue_waits_for_the_next_hop_then_drains(tmp_path: Path) -> None:
    source = require_peer("smtp-source")
    spool = tmp_path / "spool"
    sink_port = free_port()
    with RelayProcess(
        spool,
        "--relayhost",
        f"127.0.0.1:{sink_port}",
        "-q",
        "--min-backoff",
        "3600",
        "--max-backoff",
        "3600",
    ) as relay:
        assert relay.proc is not None
        subprocess.run(
            [
                source,
                "-s",
                "20",
                "-m",
                str(VOLUME),
                "-l",
                "1024",
                "-f",
                "a@x.test",
                "-t",
                "b@y.test",
                f"127.0.0.1:{relay.port}",
            ],
            check=True,
            timeout=600,
            capture_output=True,
        )
        # Every message tried once against the dead next hop, then deferred for an hour.
        wait_until(lambda: queue_size(spool)[0] == VOLUME, 120, f"{VOLUME} queued")
        count, seconds = queue_size(spool)
        assert count == VOLUME
        with SmtpSink(port=sink_port, max_connections=256) as sink:
            retried = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ferrosmtp",
                    "queue",
                    "retry",
                    "--all",
                    "--spool",
                    str(spool),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert retried.stdout.strip() == f"{VOLUME} message(s) due now"
            sink.wait_counters(messages=VOLUME, timeout=600)
            wait_until(lambda: queue_size(spool)[0] == 0, 60, "an empty queue")
            assert sink.counters().messages == VOLUME
        rss = peak_rss(relay.proc.pid)
        print(
            f"\nvolume test: {VOLUME} messages, queue list {seconds:.2f} s, "
            f"relay peak RSS {rss / (1 << 20):.0f} MiB"
        )
        assert rss < RSS_LIMIT
        assert seconds < 2.0, f"queue list of {VOLUME} took {seconds:.2f} s"
