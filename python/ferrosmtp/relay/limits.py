"""Per-destination concurrency limits, counted wherever the queue counts them.

A next hop gets at most ``limit`` transactions at once (Postfix's
default_destination_concurrency_limit). The slots are the queue's (``take_slots`` /
``give_slots``): the SQLite spool counts them in the process (:class:`LocalSlots`), the
PostgreSQL queue in the database, so the limit holds across every relay node.

Going to the database for every delivery would double its writes, so a node keeps the
slots it took while it uses them: a delivery that ends hands its slot to the next one
waiting on this node. Two rules keep the slots moving between nodes:

- a slot idle for ``idle`` seconds goes back (a node that stops sending frees its share);
- in a shared queue, a slot held for ``tenure`` seconds goes back at the end of its
  delivery even if this node has more to send, and this node takes it again only at its
  next poll, on an equal footing with the other nodes (a busy node cannot keep every
  slot).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import math
import time
from collections.abc import Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

__all__ = ["DestinationLimits", "LocalSlots", "SlotSource"]


class SlotSource(Protocol):
    """What holds the slots: the queue (``Queue.take_slots`` / ``give_slots``)."""

    async def take_slots(
        self, destination: str, want: int, limit: int, lease: float
    ) -> Sequence[int]:
        """Up to ``want`` of the ``limit`` slots of ``destination``, held ``lease`` s."""
        ...

    async def give_slots(self, destination: str, slots: Sequence[int]) -> None:
        """Free slots taken with ``take_slots``."""
        ...


class LocalSlots:
    """Slots counted in this process (the SQLite spool's; leases are moot here)."""

    def __init__(self) -> None:
        self._taken: dict[str, set[int]] = {}

    async def take_slots(self, destination: str, want: int, limit: int, lease: float) -> list[int]:
        """The lowest free slot numbers, up to ``want`` (``lease`` is ignored: a process
        that dies takes its counts with it)."""
        taken = self._taken.setdefault(destination, set())
        free = [s for s in range(limit) if s not in taken][:want]
        taken.update(free)
        return free

    async def give_slots(self, destination: str, slots: Sequence[int]) -> None:
        """Free slots taken with ``take_slots``."""
        taken = self._taken.get(destination)
        if taken is None:
            return
        taken.difference_update(slots)
        if not taken:
            del self._taken[destination]


@dataclasses.dataclass
class _Held:
    slot: int
    taken: float  # monotonic time it was taken from the source
    freed: float = 0.0  # when its last delivery ended


class _Destination:
    def __init__(self) -> None:
        self.free: list[_Held] = []  # taken from the source, not in use
        self.busy = 0
        self.waiters: collections.deque[asyncio.Future[_Held]] = collections.deque()
        self.fetcher: asyncio.Task[None] | None = None
        self.trim: asyncio.TimerHandle | None = None  # the next look for idle slots


class _Slot:
    """``async with limits.slot(destination)``: a plain object, not an async generator
    (one per delivery: a generator and its loop hooks cost more than the delivery's own
    bookkeeping)."""

    __slots__ = ("_destination", "_held", "_limits", "_state")

    def __init__(self, limits: DestinationLimits, destination: str) -> None:
        self._limits = limits
        self._destination = destination

    async def __aenter__(self) -> None:
        limits, destination = self._limits, self._destination
        state = limits._destinations.get(destination)
        if state is None:
            state = limits._destinations[destination] = _Destination()
        self._state = state
        self._held = await limits._acquire(destination, state)
        state.busy += 1

    async def __aexit__(self, *exc: object) -> None:
        self._state.busy -= 1
        await self._limits._release(self._destination, self._state, self._held)


class DestinationLimits:
    """``async with limits.slot(destination):`` around each transaction to a next hop.

    Deliveries waiting for a slot queue up (first come, first served); one task per
    destination asks the source for as many slots as there are waiters, and asks again
    every ``poll`` seconds while none is free (a thousand waiting deliveries are one
    query, not a thousand). ``tenure`` is how long a node keeps a slot while it has work;
    with a source of its own (``math.inf``) it never needs to hand slots around.
    """

    def __init__(
        self,
        source: SlotSource,
        limit: int,
        *,
        lease: float = 60.0,
        tenure: float = math.inf,
        idle: float = 1.0,
        poll: float = 0.05,
    ) -> None:
        if limit < 1:
            raise ValueError("a destination concurrency limit is at least 1")
        self.source = source
        self.limit = limit
        self.lease = lease
        self.tenure = tenure
        self.idle = idle
        self.poll = poll
        self._destinations: dict[str, _Destination] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def held(self, destination: str) -> int:
        """Slots this process holds for ``destination`` (busy or idle)."""
        state = self._destinations.get(destination)
        return 0 if state is None else state.busy + len(state.free)

    def slot(self, destination: str) -> AbstractAsyncContextManager[None]:
        """Hold one of ``destination``'s slots for the body of the ``async with``."""
        return _Slot(self, destination)

    async def _acquire(self, destination: str, state: _Destination) -> _Held:
        if state.free and not state.waiters:
            return state.free.pop()
        waiter: asyncio.Future[_Held] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        if state.fetcher is None or state.fetcher.done():
            state.fetcher = asyncio.ensure_future(self._fetch(destination, state))
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._hand_over(state, waiter.result())  # got one as it was cancelled
            raise

    async def _fetch(self, destination: str, state: _Destination) -> None:
        """Take slots from the source for the waiters, polling while there are none."""
        while True:
            while state.free and state.waiters:
                self._hand_over(state, state.free.pop())
            want = min(len(state.waiters), self.limit - self.held(destination))
            if not state.waiters:
                return
            slots: Sequence[int] = []
            if want > 0:
                try:
                    slots = await self.source.take_slots(destination, want, self.limit, self.lease)
                except Exception:
                    slots = []  # the source is away; ask again at the next poll
            now = time.monotonic()
            for slot in slots:
                self._hand_over(state, _Held(slot, now))
            if state.waiters and not slots:
                await asyncio.sleep(self.poll)

    def _hand_over(self, state: _Destination, held: _Held) -> None:
        while state.waiters:
            waiter = state.waiters.popleft()
            if not waiter.done():
                waiter.set_result(held)
                return
        held.freed = time.monotonic()
        state.free.append(held)

    async def _release(self, destination: str, state: _Destination, held: _Held) -> None:
        now = time.monotonic()
        if now - held.taken >= self.tenure:
            # Back to the source; this node's waiters take it again at the fetcher's next
            # poll, on an equal footing with the other nodes.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.source.give_slots(destination, [held.slot]))
            self._forget_if_unused(destination, state)
            return
        self._hand_over(state, held)
        if not state.waiters and state.free and state.trim is None:
            state.trim = asyncio.get_running_loop().call_later(
                self.idle, self._trim, destination, state
            )

    def _trim(self, destination: str, state: _Destination) -> None:
        """Give back the slots idle for ``idle`` seconds since their last use; look again
        later while some are idle but not for that long (one timer per destination, not
        one per delivery)."""
        state.trim = None
        limit = time.monotonic() - self.idle
        stale = [h for h in state.free if h.freed <= limit]
        state.free = [h for h in state.free if h.freed > limit]
        if state.free:
            wait = min(h.freed for h in state.free) - limit
            state.trim = asyncio.get_running_loop().call_later(
                max(wait, 0.01), self._trim, destination, state
            )
        if stale:
            self._later(self._give_back(destination, state, [h.slot for h in stale]))

    async def _give_back(self, destination: str, state: _Destination, slots: list[int]) -> None:
        with contextlib.suppress(Exception):
            await self.source.give_slots(destination, slots)
        self._forget_if_unused(destination, state)

    def _forget_if_unused(self, destination: str, state: _Destination) -> None:
        if not state.free and state.busy == 0 and not state.waiters:
            if state.trim is not None:
                state.trim.cancel()
                state.trim = None
            if self._destinations.get(destination) is state:
                del self._destinations[destination]

    def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Give every idle slot back (at shutdown)."""
        tasks = [*self._tasks]
        tasks += [s.fetcher for s in self._destinations.values() if s.fetcher is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for destination, state in list(self._destinations.items()):
            if state.trim is not None:
                state.trim.cancel()
                state.trim = None
            if state.free:
                slots, state.free = [h.slot for h in state.free], []
                with contextlib.suppress(Exception):
                    await self.source.give_slots(destination, slots)
        self._destinations.clear()
