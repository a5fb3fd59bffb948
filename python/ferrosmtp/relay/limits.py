"""Per-destination concurrency limits, counted wherever the queue counts them.

A next hop gets at most ``limit`` transactions at once (Postfix's
default_destination_concurrency_limit). The slots are the queue's (``take_slots`` /
``give_slots``): the SQLite spool counts them in the process (:class:`LocalSlots`), the
PostgreSQL queue in the database, so the limit holds across every relay node.

Going to the database for every delivery would double its writes, so a node keeps the
slots it took while it uses them: a delivery that ends hands its slot to the next one
waiting on this node. Two rules keep the slots moving between nodes:

- a slot idle for ``idle`` seconds goes back (a node that stops sending frees its share);
- a slot held for ``tenure`` seconds goes back at the end of its delivery even if this
  node has more to send, and this node's waiters take it again only at their next poll,
  on an equal footing with the other nodes' (a busy node cannot keep every slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, Protocol

__all__ = ["DestinationLimits", "LocalSlots", "SlotSource"]


class SlotSource(Protocol):
    """What holds the slots: the queue (``Queue.take_slots`` / ``give_slots``)."""

    async def take_slots(
        self, destination: str, want: int, limit: int, lease: float
    ) -> Sequence[int]: ...

    async def give_slots(self, destination: str, slots: Sequence[int]) -> None: ...


class LocalSlots:
    """Slots counted in this process (the SQLite spool's; leases are moot here)."""

    def __init__(self) -> None:
        self._taken: dict[str, set[int]] = {}

    async def take_slots(
        self, destination: str, want: int, limit: int, lease: float
    ) -> list[int]:
        taken = self._taken.setdefault(destination, set())
        free = [s for s in range(limit) if s not in taken][:want]
        taken.update(free)
        return free

    async def give_slots(self, destination: str, slots: Sequence[int]) -> None:
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
        self.waiting = 0
        self.changed = asyncio.Event()
        self.fetching = asyncio.Lock()


class DestinationLimits:
    """``async with limits.slot(destination):`` around each transaction to a next hop."""

    def __init__(
        self,
        source: SlotSource,
        limit: int,
        *,
        lease: float = 60.0,
        tenure: float = 2.0,
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

    @contextlib.asynccontextmanager
    async def slot(self, destination: str) -> AsyncIterator[None]:
        state = self._destinations.get(destination)
        if state is None:
            state = self._destinations[destination] = _Destination()
        held = await self._acquire(destination, state)
        state.busy += 1
        try:
            yield
        finally:
            state.busy -= 1
            await self._release(destination, state, held)

    async def _acquire(self, destination: str, state: _Destination) -> _Held:
        state.waiting += 1
        try:
            while True:
                if state.free:
                    return state.free.pop()
                async with state.fetching:
                    if state.free:
                        continue
                    want = min(state.waiting, self.limit)
                    slots = await self.source.take_slots(destination, want, self.limit, self.lease)
                    now = time.monotonic()
                    state.free.extend(_Held(s, now) for s in slots)
                    if slots:
                        state.changed.set()
                        continue
                if state.free:
                    continue
                state.changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(state.changed.wait(), self.poll)
        finally:
            state.waiting -= 1

    async def _release(self, destination: str, state: _Destination, held: _Held) -> None:
        now = time.monotonic()
        if now - held.taken >= self.tenure:
            # Back to the source; waiters here compete for it at their next poll.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.source.give_slots(destination, [held.slot]))
            self._forget_if_unused(destination, state)
            return
        held.freed = now
        state.free.append(held)
        state.changed.set()
        if state.waiting == 0:
            self._later(self._trim(destination, state))

    async def _trim(self, destination: str, state: _Destination) -> None:
        """Give back the slots still idle ``idle`` seconds after their last use."""
        await asyncio.sleep(self.idle)
        limit = time.monotonic() - self.idle
        stale = [h for h in state.free if h.freed <= limit]
        if not stale:
            return
        state.free = [h for h in state.free if h.freed > limit]
        with contextlib.suppress(Exception):
            await self.source.give_slots(destination, [h.slot for h in stale])
        self._forget_if_unused(destination, state)

    def _forget_if_unused(self, destination: str, state: _Destination) -> None:
        if not state.free and state.busy == 0 and state.waiting == 0:
            if self._destinations.get(destination) is state:
                del self._destinations[destination]

    def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Give every idle slot back (at shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for destination, state in list(self._destinations.items()):
            if state.free:
                slots, state.free = [h.slot for h in state.free], []
                with contextlib.suppress(Exception):
                    await self.source.give_slots(destination, slots)
        self._destinations.clear()
