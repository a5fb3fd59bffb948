"""The lock that gives one transaction (or command exchange) at a time a ``Client``'s
session, lets a pipelining transaction hand it straight to the next one, and the
``Turn`` each transaction holds in that queue."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ferrosmtp.client.options import Timeout
    from ferrosmtp.protocol.client import Command

__all__ = ["FifoLock", "Turn"]


class FifoLock:
    """A FIFO lock with a synchronous fast path (``try_acquire``): taken once per
    message, so it should cost nothing when free. Ownership passes to the next waiter
    directly on release."""

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: deque[asyncio.Future[Any]] = deque()

    def locked(self) -> bool:
        """Whether the lock is held."""
        return self._held

    def try_acquire(self) -> bool:
        """Take the lock if it is free and nobody waits; whether it was taken."""
        if self._held or self._waiters:
            return False
        self._held = True
        return True

    async def acquire(self) -> None:
        """Wait for the lock; waiters get it in the order they came."""
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # ownership was handed to us as we were cancelled
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def enqueue(self) -> asyncio.Future[Any]:
        """A place in the queue: the lock is the caller's when the future is done."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def forget(self, waiter: asyncio.Future[Any]) -> None:
        """Remove ``waiter`` from the queue (it gave up)."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def release(self) -> None:
        """Hand the lock to the next waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # still held: now by that waiter
                return
        self._held = False

    def pass_to(self, waiter: asyncio.Future[Any]) -> None:
        """Pass the lock to ``waiter`` (ahead of any other) without waking it: its owner's
        callbacks carry on for it and resolve the future when there is something to do."""
        self.forget(waiter)


class Turn:
    """A transaction's envelope (MAIL, RCPT..., DATA) waiting to be written, and how far
    it has got once it has been.

    ``wake`` is the one future its task sleeps on: its place in the session queue (None:
    the session is its own now), then the outcome its reply callbacks reach:
    ``("replies", answers)``, the envelope's replies for the task to act on, or
    ``("final", refused, accepted, finals)`` when the callbacks sent the content
    themselves and the final reply is in."""

    __slots__ = (
        "body",
        "chunk",
        "commands",
        "content_started",
        "handed",
        "released",
        "request",
        "reset",
        "sent",
        "timeout",
        "waiter",
        "wake",
    )

    def __init__(self, commands: list[Command], timeout: Timeout) -> None:
        self.commands: list[Command] = commands
        self.timeout = timeout
        self.request: Any = None  # the SendRequest, for the callbacks' outcome
        self.body: bytes | None = None  # content the callbacks may send after the 354
        self.chunk: bytes | None = None  # content sent as BDAT LAST with the envelope
        self.sent: bool = False  # the envelope is on the wire
        self.reset: bool = False  # an RSET went first: its reply is dropped
        self.content_started: bool = False  # any byte of the message content written
        self.released: bool = False  # the callbacks passed the session on after the content
        self.waiter: asyncio.Future[Any] | None = None  # our place in the session queue
        self.wake: asyncio.Future[Any] | None = None  # what the task awaits now
        self.handed: bool = False  # the session was handed to us by the transaction ahead
