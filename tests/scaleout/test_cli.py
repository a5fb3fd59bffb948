"""``ferrosmtp relay`` and ``ferrosmtp queue`` with ``--queue-url``: the queue commands act on
the shared queue while a node runs; a database that cannot be reached, or a URL that is
not PostgreSQL's, is one line and an exit status, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers import free_port
from tests.relay.support import RelayProcess, message, send, wait_until

pytestmark = pytest.mark.interop


def ferrosmtp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrosmtp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_queue_commands_on_the_shared_queue(tmp_path: Path, queue_url: str) -> None:
    dead = free_port()  # the next hop is down: the mail stays queued
    with RelayProcess(
        tmp_path / "spool", "--queue-url", queue_url, "--relayhost", f"127.0.0.1:{dead}"
    ) as relay:
        for subject in ("one", "two"):
            code, _, _ = send(relay.port, "a@x.test", ["b@y.test"], message(subject))
            assert code == 250

        def listed() -> list[dict[str, object]]:
            result = ferrosmtp("queue", "list", "--json", "--queue-url", queue_url)
            assert result.returncode == 0, result.stderr
            return [json.loads(line) for line in result.stdout.splitlines()]

        wait_until(
            lambda: all(m["attempts"] == 1 for m in listed()) and len(listed()) == 2,
            20,
            "two deferred messages",
        )
        first, second = listed()
        assert first["recipients"] == ["b@y.test"] and "connect to" in str(first["last_error"])
        shown = ferrosmtp("queue", "show", str(first["id"]), "--queue-url", queue_url)
        assert shown.returncode == 0, shown.stderr
        assert "Subject: one" in shown.stdout and '"sender": "a@x.test"' in shown.stdout
        details = json.loads(shown.stdout.split("\n}\n", 1)[0] + "\n}")
        (attempt,) = details["history"]  # every attempt, with the node that made it
        assert attempt["node"].startswith(f"{socket.gethostname()}:{relay.port}/")
        assert attempt["recipient"] == "b@y.test" and attempt["outcome"] == "pending"
        assert attempt["status"] == "4.4.1" and "connect to" in attempt["diagnostic"]
        retried = ferrosmtp("queue", "retry", "--all", "--queue-url", queue_url)
        assert retried.stdout.strip() == "2 message(s) due now"
        deleted = ferrosmtp("queue", "delete", str(second["id"]), "--queue-url", queue_url)
        assert deleted.stdout.strip() == "1 message(s) deleted"
        assert [m["id"] for m in listed()] == [first["id"]]
        missing = ferrosmtp("queue", "show", "NOSUCHID", "--queue-url", queue_url)
        assert missing.returncode == 1 and missing.stderr.strip() == (
            "ferrosmtp queue: no message NOSUCHID"
        )


def test_an_unreachable_database_is_one_line_and_an_exit_status() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/mail"
    for argv, status in (
        (["queue", "list", "--queue-url", url], 1),
        (["relay", "--listen", "127.0.0.1:0", "--queue-url", url], 3),
    ):
        result = ferrosmtp(*argv)
        assert result.returncode == status, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "cannot open the queue at" in lines[0] and "Connection refused" in lines[0]


def test_a_url_that_is_not_postgresql_is_a_usage_error() -> None:
    result = ferrosmtp("relay", "--queue-url", "mysql://db/mail")
    assert result.returncode == 2
    assert "expected postgresql://USER@HOST:PORT/DB" in result.stderr
    assert "Traceback" not in result.stderr
