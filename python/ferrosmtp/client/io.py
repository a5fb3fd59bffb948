"""The client's asyncio glue: an ``asyncio.Protocol`` that feeds the socket to the sans-IO
``ClientConnection`` and hands each reply to whoever waits for it.

It owns the transport, the per-reply timeouts (one alarm per connection) and write
backpressure; it knows nothing of SMTP beyond what ``ClientConnection`` tells it. Any
failure (lost connection, protocol error, 421, timeout) fails every waiter and makes the
connection unusable: ``Client`` then raises the stored error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import cast

from ferrosmtp._loops import prime_read_buffers
from ferrosmtp.client.options import WRITE_BUFFER_HIGH
from ferrosmtp.errors import (
    SMTPException,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPServerDisconnected,
    SMTPServiceUnavailable,
)
from ferrosmtp.protocol.client import (
    Answer,
    ClientConnection,
    Event,
    Phase,
    RemoteProtocolError,
    ServerClosing,
)

__all__ = ["SMTPProtocol", "clone_error"]

# asyncio's own loop reads into a new 256 KiB buffer every time: see prime_read_buffers.
prime_read_buffers()


def clone_error(exc: SMTPException) -> SMTPException:
    """A fresh copy, so that each waiter raises its own exception object (tracebacks
    attached to a shared instance would pile up)."""
    return type(exc)(*exc.args)


# A callback given the replies it waited for, or the error that ended the connection.
Then = Callable[[list[Answer] | SMTPException], None]


class _Waiter:
    """Someone waiting for the next ``count`` replies, until ``deadline`` (loop time):
    a future, or a callback called as soon as they are in (``then``)."""

    __slots__ = ("answers", "count", "deadline", "future", "then")

    def __init__(
        self,
        count: int,
        future: asyncio.Future[list[Answer]] | None,
        deadline: float | None,
        then: Then | None = None,
    ) -> None:
        self.count = count
        self.future = future
        self.deadline = deadline
        self.then = then
        self.answers: list[Answer] = []


# Replies are read into one buffer per connection (a BufferedProtocol): asyncio's plain
# Protocol would allocate 256 KiB per read, through mmap and munmap, for a reply of a
# hundred bytes.
READ_BUFFER = 65536


class SMTPProtocol(asyncio.BufferedProtocol):
    """Feeds the socket to the ClientConnection and hands replies to waiters in order.

    Waiters are queued in the order their commands were written, so replies reach them in
    that order whatever the read boundaries. Any failure (lost connection, protocol
    error, 421, timeout) fails every waiter and makes the protocol unusable.

    Timeouts use one alarm per connection rather than a timer per reply: each waiter
    has a deadline, and the alarm, set for the earliest one, re-arms itself when it fires
    early because that waiter has been answered meanwhile.
    """

    def __init__(
        self,
        conn: ClientConnection,
        loop: asyncio.AbstractEventLoop,
        greeting_timeout: float | None,
    ) -> None:
        self.conn = conn
        self.loop = loop
        self.greeting_timeout = greeting_timeout
        self.greeting: asyncio.Future[list[Answer]] | None = None
        self.transport: asyncio.Transport | None = None
        self.error: SMTPException | None = None  # why the connection can no longer be used
        self._waiters: deque[_Waiter] = deque()
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._drain_deadline: float | None = None
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_at = 0.0
        self._buffer = memoryview(bytearray(READ_BUFFER))

    # asyncio callbacks

    def get_buffer(self, sizehint: int) -> memoryview:
        """asyncio: where the next read goes."""
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        """asyncio: ``nbytes`` were read into the buffer."""
        self.data_received(self._buffer[:nbytes].tobytes())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio.Transport.
        """asyncio: connected; start waiting for the greeting."""
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        # The greeting may arrive before the connecting coroutine resumes: wait for it
        # from the start.
        self.greeting = self.expect(1, self.greeting_timeout)

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from the server, fed to the ClientConnection."""
        try:
            events = self.conn.receive_data(data)
        except RemoteProtocolError as exc:
            self._deliver(exc.events)  # answered in step before the offence
            self.fail(SMTPProtocolError(f"{exc}; connection closed"))
            return
        self._deliver(events)
        if self.conn.phase is Phase.TLS_HANDSHAKE and self.transport is not None:
            # Read nothing more in plaintext: the next bytes belong to the TLS handshake.
            self.transport.pause_reading()

    def _deliver(self, events: list[Event]) -> None:
        """Hand each reply to whoever waits for it, in order."""
        waiters = self._waiters
        for event in events:
            if type(event) is ServerClosing or event.reply.code == 421:
                self.fail(SMTPServiceUnavailable(421, str(event.reply.text)), graceful=True)
                return
            if not waiters:  # a reply to a command nobody waits for: cannot happen
                self.fail(SMTPProtocolError("reply without a waiting command"))
                return
            waiter = waiters[0]
            answers = waiter.answers
            answers.append(event)  # type: ignore[arg-type]
            if len(answers) == waiter.count:
                waiters.popleft()
                if waiter.then is not None:
                    waiter.then(answers)
                    if self.error is not None:  # the callback failed the connection
                        return
                elif not waiter.future.done():  # type: ignore[union-attr]
                    waiter.future.set_result(answers)  # type: ignore[union-attr]
                # (a cancelled waiter just drops its replies)

    def eof_received(self) -> bool | None:
        """asyncio: the server closed its side; close ours too."""
        return False  # close the transport; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection is gone; pending operations fail."""
        self.conn.connection_lost()
        reason = f"Connection lost: {exc}" if exc else "Connection lost"
        self.fail(SMTPServerDisconnected(reason))
        self.transport = None

    def pause_writing(self) -> None:
        """asyncio: the socket's buffer is full; writers wait."""
        self._paused = True

    def resume_writing(self) -> None:
        """asyncio: the socket drained; writers go on."""
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # used by the client

    def expect(self, count: int, timeout: float | None) -> asyncio.Future[list[Answer]]:
        """Register for the next ``count`` replies (before writing their commands)."""
        future = self.loop.create_future()
        self.expect_then(count, timeout, None, future)
        return future

    def expect_then(
        self,
        count: int,
        timeout: float | None,
        then: Then | None,
        future: asyncio.Future[list[Answer]] | None = None,
    ) -> None:
        """``expect``, with ``then`` called with the replies as soon as they are in (from
        ``data_received``: no task wakes up for them), or with the error that failed the
        connection."""
        if self.error is not None:
            raise clone_error(self.error)
        deadline = None
        if timeout is not None:
            deadline = self.loop.time() + timeout
            if self._alarm is None or deadline < self._alarm_at:
                self._set_alarm(deadline)
        self._waiters.append(_Waiter(count, future, deadline, then))

    def write(self, data: bytes) -> None:
        """Write ``data``, or raise the error that ended the connection."""
        if self.error is not None:
            raise clone_error(self.error)
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self, timeout: float | None) -> None:
        """Wait until the transport's buffer is below its low-water mark."""
        if self.error is not None:
            raise clone_error(self.error)
        if not self._paused:
            return
        self._drain = self.loop.create_future()
        if timeout is not None:
            self._drain_deadline = self.loop.time() + timeout
            if self._alarm is None or self._drain_deadline < self._alarm_at:
                self._set_alarm(self._drain_deadline)
        try:
            await self._drain
        finally:
            self._drain = None
            self._drain_deadline = None

    def fail(self, exc: SMTPException, *, graceful: bool = False) -> None:
        """Make the connection unusable: close it, fail every waiter with ``exc``."""
        if self.error is None:
            self.error = exc
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        self.conn.connection_lost()
        if self.transport is not None and not self.transport.is_closing():
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.then is not None:
                waiter.then(clone_error(self.error))
            elif not waiter.future.done():  # type: ignore[union-attr]
                waiter.future.set_exception(clone_error(self.error))  # type: ignore[union-attr]
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(clone_error(self.error))

    def _set_alarm(self, when: float) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm = self.loop.call_at(when, self._on_alarm)
        self._alarm_at = when

    def _on_alarm(self) -> None:
        self._alarm = None
        now = self.loop.time() + 0.001  # the loop may run a timer a little early
        deadlines = [w.deadline for w in self._waiters if w.deadline is not None]
        if self._drain_deadline is not None:
            deadlines.append(self._drain_deadline)
        if not deadlines:
            return
        if min(deadlines) <= now:
            self.fail(SMTPReadTimeoutError("Timed out waiting for server response"))
        else:
            self._set_alarm(min(deadlines))
