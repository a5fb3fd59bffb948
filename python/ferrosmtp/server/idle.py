"""The idle and hook timeouts of all of a server's connections, on one timer.

A timer per connection costs every session a push onto the event loop's heap and a
cancel, and on asyncio's own loop each timer also slows every turn of the loop; most
sessions end long before their deadline (one message per connection: issue 14). One timer
per server instead wakes when the earliest deadline may have come, asks each connection
(``SMTP._idle_check``), and sleeps until the next. Each connection's deadline is checked
up to ``1 / SLACK`` of its limit late (300 s: 4.7 s; 0.5 s: 8 ms), so that deadlines
close together take one wake-up, not one each: ten thousand idle connections cost a
sweep every few seconds, not one per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from math import inf
from time import monotonic
from typing import Generic, TypeVar

__all__ = ["SLACK", "IdleSweep"]

# A deadline is checked at most limit / SLACK after it passes.
SLACK = 64

T = TypeVar("T")


class IdleSweep(Generic[T]):
    """One timer for many deadlines: ``arm(loop, at)`` says a check is due by ``at``
    (``time.monotonic()``); ``check(now)`` of every item of ``items`` (read live) ends
    what is due and says when it is due next (``math.inf``: never)."""

    def __init__(self, items: Collection[T], check: Callable[[T, float], float]) -> None:
        self._items = items
        self._check = check
        self._handle: asyncio.TimerHandle | None = None
        self._at = inf  # when the timer fires

    def arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        """Sweep by ``at`` at the latest (a no-op when a sweep comes sooner: the common
        case, a connection made while others are open)."""
        if at >= self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = at
        self._handle = loop.call_later(max(at - monotonic(), 0.0), self._sweep, loop)

    def stop(self) -> None:
        """No more sweeps until the next ``arm`` (the server is closing)."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._at = None, inf

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle, self._at = None, inf
        now = monotonic()
        check = self._check
        due = inf
        for item in list(self._items):  # a check may end a connection (and remove it)
            at = check(item, now)
            if at < due:
                due = at
        if due != inf:
            self.arm(loop, due)
