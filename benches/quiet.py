"""The quiet-machine rule shared by every benchmark script.

A busy machine slows the incumbents (aiosmtpd, aiosmtplib, Postfix's tools) more than it
slows ferrosmtp, which flatters every ratio. So each script prints the load average before
and after its run, and a table is marked as not publishable (and the script exits non-zero
unless ``--allow-busy`` was given) when the 1-minute load was over ``LIMIT`` as it started.

The reading after the run is printed but not judged: a benchmark that drives servers with
smtp-source keeps both cores busy itself, so its own processes put the 1-minute load near 2
by the end whatever else ran. Start each run on a machine that has settled (``wait_quiet``).
"""

from __future__ import annotations

import os

# Load over this (2-core machines) means another process competed for the CPU.
LIMIT = 0.5


def load_average() -> tuple[float, float, float]:
    """The 1-, 5- and 15-minute load averages (zeros where the OS has none)."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


class QuietCheck:
    """Call :meth:`before` when the run starts and :meth:`after` when it ends; then
    :attr:`busy` says whether either reading was over the limit."""

    def __init__(self, limit: float = LIMIT) -> None:
        self.limit = limit
        self.readings: list[tuple[str, tuple[float, float, float]]] = []

    def before(self) -> str:
        return self._read("before")

    def after(self) -> str:
        return self._read("after")

    def _read(self, when: str) -> str:
        load = load_average()
        self.readings.append((when, load))
        return f"load average {when}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"

    @property
    def busy(self) -> bool:
        return any(load[0] > self.limit for when, load in self.readings if when == "before")

    def verdict(self) -> str:
        """One line for the report: the readings and whether the table may be published."""
        text = ", ".join(f"{when} {load[0]:.2f}" for when, load in self.readings)
        text += "; the reading after includes the run's own processes"
        if self.busy:
            return (
                f"**NOT PUBLISHABLE: the machine was busy** (1-min load {text}; limit "
                f"{self.limit} before the run): rerun on a quiet machine"
            )
        return f"quiet machine (1-min load {text}; limit {self.limit})"


def wait_quiet(limit: float = LIMIT, timeout: float = 600.0) -> bool:
    """Wait (up to ``timeout`` seconds) until the 1-minute load is under ``limit``: the
    previous run's load takes a minute or two to decay. True when it got there."""
    import time

    deadline = time.monotonic() + timeout
    while load_average()[0] >= limit:
        if time.monotonic() > deadline:
            return False
        time.sleep(5)
    return True
