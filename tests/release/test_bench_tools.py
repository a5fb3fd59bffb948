"""The benchmark scripts' own rules: when a machine counts as quiet (benches/quiet.py) and
how a server's CPU time is read (benches/load_server.py). A table published on a busy
machine flatters ferrosmtp, so these are checked like the library."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches"))

import load_server
import quiet

needs_proc = pytest.mark.skipif(
    not os.path.exists("/proc/stat"), reason="reads Linux's /proc (the benchmark machine's)"
)


def _scripted(monkeypatch: pytest.MonkeyPatch, machine: list[float], own: list[float]) -> None:
    """Readings at before() and after(): the machine's CPU seconds, ours, 4 s apart."""
    monkeypatch.setattr(quiet, "machine_cpu_seconds", lambda: machine.pop(0))
    monkeypatch.setattr(quiet, "own_cpu_seconds", lambda: own.pop(0))
    clock = [100.0, 104.0]
    monkeypatch.setattr(quiet, "time", SimpleNamespace(monotonic=lambda: clock.pop(0)))
    monkeypatch.setattr(quiet, "load_average", lambda: (0.1, 0.1, 0.1))


@pytest.mark.parametrize(
    ("machine_used", "own_used", "others", "busy"),
    [
        (7.0, 6.0, 0.25, False),  # our run kept both cores busy: not the others' doing
        (7.0, 4.0, 0.75, True),  # 3 CPU seconds in 4 s were someone else's
        (2.0, 2.0, 0.0, False),
    ],
)
def test_others_are_the_machine_less_the_run(
    monkeypatch: pytest.MonkeyPatch, machine_used: float, own_used: float, others: float, busy: bool
) -> None:
    _scripted(monkeypatch, [1000.0, 1000.0 + machine_used], [50.0, 50.0 + own_used])
    check = quiet.QuietCheck()
    check.before()
    assert f"{others:.2f} CPUs" in check.after()
    assert check.others == pytest.approx(others)
    assert check.busy is busy
    assert ("NOT PUBLISHABLE" in check.verdict()) is busy


def test_a_busy_start_is_busy_whatever_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    _scripted(monkeypatch, [1000.0, 1001.0], [50.0, 51.0])
    monkeypatch.setattr(quiet, "load_average", lambda: (0.9, 0.5, 0.5))
    check = quiet.QuietCheck()
    check.before()
    check.after()
    assert check.others == 0.0 and check.busy


@needs_proc
def test_another_process_burning_cpu_is_seen() -> None:
    hog = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.time() + 3\nwhile time.time() < t: pass"]
    )
    try:
        time.sleep(0.3)  # the interpreter is up and spinning
        check = quiet.QuietCheck()
        check.before()
        time.sleep(1.0)
        check.after()  # the hog is not ours to wait for yet: its CPU is someone else's
    finally:
        hog.kill()
        hog.wait()
    assert check.others is not None and check.others > 0.5
    assert check.busy


@needs_proc
def test_server_cpu_seconds_count_the_process() -> None:
    before = load_server.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    # /proc counts in clock ticks (10 ms): 0.3 s of work reads as at least 0.25 s.
    assert load_server.cpu_seconds(os.getpid()) - before >= 0.25
