"""The quiet-machine rule shared by every benchmark script.

A busy machine slows the incumbents (aiosmtpd, aiosmtplib, Postfix's tools) more than it
slows ferrosmtp, which flatters every ratio. So each script prints the load average before
and after its run, and a table taken while the 1-minute load was over ``LIMIT`` is marked
as not publishable (and the script exits non-zero) unless ``--allow-busy`` was given.
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
        return any(load[0] > self.limit for _, load in self.readings)

    def verdict(self) -> str:
        """One line for the report: the readings and whether the table may be published."""
        text = ", ".join(f"{when} {load[0]:.2f}" for when, load in self.readings)
        if self.busy:
            return (
                f"**NOT PUBLISHABLE: the machine was busy** (1-min load {text}; limit "
                f"{self.limit}): rerun on a quiet machine"
            )
        return f"quiet machine (1-min load {text}; limit {self.limit})"
