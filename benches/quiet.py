"""The quiet-machine rule shared by every benchmark script.

A busy machine slows the incumbents (aiosmtpd, aiosmtplib, Postfix's tools) more than it
slows ferrosmtp, which flatters every ratio. So each script prints the load average before
and after its run, and a table is marked as not publishable (and the script exits non-zero
unless ``--allow-busy`` was given) when the machine was busy: a 1-minute load over
``LIMIT`` as the run started, or other processes using more than ``LIMIT`` of a CPU on
average while it ran.

The load average after the run cannot say the second: a benchmark that drives servers with
smtp-source keeps both cores busy itself, so its own processes put the 1-minute load near 2
by the end whatever else ran. So the check after the run counts CPU time instead: all the
machine's (``/proc/stat``) less this process's and its children's (``os.times``, which
counts children once they have been waited for: call :meth:`QuietCheck.after` after every
child has exited). Start each run on a machine that has settled (``wait_quiet``).
"""

from __future__ import annotations

import os
import time

# Load over this (2-core machines) means another process competed for the CPU.
LIMIT = 0.5


def load_average() -> tuple[float, float, float]:
    """The 1-, 5- and 15-minute load averages (zeros where the OS has none)."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def machine_cpu_seconds() -> float | None:
    """CPU time every process on the machine has used (user, nice and system), from
    ``/proc/stat``; None where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return sum(int(x) for x in fields[1:4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def own_cpu_seconds() -> float:
    """CPU time this process and its waited-for children have used."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class QuietCheck:
    """Call :meth:`before` when the run starts and :meth:`after` when it ends (every
    child waited for); then :attr:`busy` says whether the machine was busy."""

    def __init__(self, limit: float = LIMIT) -> None:
        self.limit = limit
        self.readings: list[tuple[str, tuple[float, float, float]]] = []
        self._start: tuple[float, float | None, float] | None = None
        # Other processes' CPU time during the run, in CPUs (None: not measured).
        self.others: float | None = None

    def before(self) -> str:
        self._start = (time.monotonic(), machine_cpu_seconds(), own_cpu_seconds())
        return self._read("before")

    def after(self) -> str:
        text = self._read("after")
        if self._start is not None:
            started, machine, own = self._start
            now = machine_cpu_seconds()
            wall = time.monotonic() - started
            if machine is not None and now is not None and wall > 0:
                # Clock ticks are 10 ms: a short run's figure is rounded up to them.
                used = (now - machine) - (own_cpu_seconds() - own)
                self.others = max(used, 0.0) / wall
                text += f"; other processes used {self.others:.2f} CPUs during the run"
        return text

    def _read(self, when: str) -> str:
        load = load_average()
        self.readings.append((when, load))
        return f"load average {when}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"

    @property
    def busy(self) -> bool:
        loaded = any(load[0] > self.limit for when, load in self.readings if when == "before")
        return loaded or (self.others is not None and self.others > self.limit)

    def verdict(self) -> str:
        """One line for the report: the readings and whether the table may be published."""
        text = ", ".join(f"{when} {load[0]:.2f}" for when, load in self.readings)
        text += " (the reading after includes the run's own processes)"
        if self.others is not None:
            text += f"; other processes used {self.others:.2f} CPUs during the run"
        if self.busy:
            return (
                f"**NOT PUBLISHABLE: the machine was busy** (1-min load {text}; limit "
                f"{self.limit} before the run and for the others during it): rerun on a "
                "quiet machine"
            )
        return f"quiet machine (1-min load {text}; limit {self.limit})"


def wait_quiet(limit: float = LIMIT, timeout: float = 600.0) -> bool:
    """Wait (up to ``timeout`` seconds) until the 1-minute load is under ``limit``: the
    previous run's load takes a minute or two to decay. True when it got there."""
    deadline = time.monotonic() + timeout
    while load_average()[0] >= limit:
        if time.monotonic() > deadline:
            return False
        time.sleep(5)
    return True
