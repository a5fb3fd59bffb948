"""``Pool``: up to ``size`` reused ``Client`` connections to one server, shared by any
number of tasks, filled to a pipelining depth before more are opened."""

from __future__ import annotations

import asyncio
import email.message
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from time import monotonic
from typing import TYPE_CHECKING, Literal, TypeVar

from ferrosmtp.client.options import DEFAULT, ClientOptions, Timeout
from ferrosmtp.client.results import SendResult
from ferrosmtp.client.session import Client
from ferrosmtp.errors import SMTPException, SMTPServerDisconnected

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = ["Pool"]

_T = TypeVar("_T")


class _Slot:
    """One pooled connection: its client (connected once ``ready`` is done), how many
    messages are using it, and which of the pool's lists it is filed in."""

    __slots__ = ("client", "idle_since", "ready", "reused", "timer", "users", "where")

    def __init__(self, client: Client, ready: asyncio.Future[None]) -> None:
        self.client = client
        self.ready = ready
        self.users = 0
        self.reused = False  # it has carried a message before
        self.timer: asyncio.TimerHandle | None = None  # idle timeout (re-armed lazily)
        self.idle_since = 0.0  # time.monotonic() when it last became idle
        self.where: list[_Slot] | None = None

    @property
    def usable(self) -> bool:
        """Opening, or open and healthy."""
        ready = self.ready
        if not ready.done():
            return True
        # The pool is the client's companion: it reads the connection's failure state
        # directly, which no public property exposes without also asking the transport.
        protocol = self.client._protocol
        return ready.exception() is None and protocol is not None and protocol.error is None

    @property
    def pipelines(self) -> bool:
        conn = self.client.connection
        return conn is not None and conn.pipelining


class Pool:
    """Up to ``size`` connections to one server, shared by any number of tasks.

    ::

        async with ferrosmtp.Pool("smarthost", 587, size=8, username="u", password="p") as pool:
            await asyncio.gather(*(pool.send_message(m) for m in messages))

    Connections open when first needed and are reused for the next messages (the
    session is reset after a refused message; a completed one needs no RSET). When the
    server offers PIPELINING, a connection carries up to ``pipeline_depth`` messages at
    once (default 2: one message's content and the next one's envelope go out in one
    write, so a connection moves a message per round trip instead of one per two), and
    the pool fills connections to that depth before opening more. ``pipeline_depth=1``
    gives each message a connection of its own.

    A connection that fails is dropped and replaced on the next use; if the server had
    closed a reused connection and nothing of the message had gone out yet, the message
    is retried once on a fresh connection. Connections idle for ``idle_timeout`` seconds
    are closed with QUIT. ``close()`` (or leaving ``async with``) refuses new messages,
    waits for those in flight and closes every connection.

    Other keyword arguments are those of ``Client``.
    """

    def __init__(
        self,
        hostname: str | None = None,
        port: int | None = None,
        *,
        size: int = 8,
        idle_timeout: float | None = 30.0,
        pipeline_depth: int = 2,
        **client_options: Unpack[ClientOptions],
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one connection")
        if pipeline_depth < 1:
            raise ValueError("pipeline_depth must be at least 1")
        Client(hostname, port, **client_options)  # refuse bad options now, not at first use
        self.hostname = hostname
        self.port = port
        self.size = size
        self.idle_timeout = idle_timeout
        self.pipeline_depth = pipeline_depth
        self._options = client_options
        self._idle: list[_Slot] = []  # connected, unused: the most recently used last
        self._open: list[_Slot] = []  # in use (or opening), with room for another message
        self._count = 0  # connections open or opening
        self._waiters: deque[asyncio.Future[None]] = deque()  # tasks waiting for room
        self._busy = 0
        self._all_done = asyncio.Event()
        self._all_done.set()
        self._closed = False
        self._retiring: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def connections(self) -> int:
        """Connections open (or opening)."""
        return self._count

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def connect(self) -> None:
        """Open one connection now (connect, TLS, login), so that an unreachable server or
        refused credentials show up before the first message. It is then reused."""
        await self._run(_nothing)

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: str | bytes,
        /,
        *,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        ret: Literal["FULL", "HDRS"] | None = None,
        envid: str | None = None,
        notify: Iterable[str] | None = None,
        orcpt: bool | Mapping[str, str] = False,
        use_bdat: bool | None = None,
        timeout: Timeout = DEFAULT,
    ) -> SendResult:
        """``Client.sendmail`` on a pooled connection (the same arguments)."""
        return await self._run(
            lambda c: c.sendmail(
                sender,
                recipients,
                message,
                mail_options=mail_options,
                rcpt_options=rcpt_options,
                ret=ret,
                envid=envid,
                notify=notify,
                orcpt=orcpt,
                use_bdat=use_bdat,
                timeout=timeout,
            )
        )

    async def send_message(
        self,
        message: email.message.Message,
        /,
        *,
        sender: str | None = None,
        recipients: str | Sequence[str] | None = None,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        ret: Literal["FULL", "HDRS"] | None = None,
        envid: str | None = None,
        notify: Iterable[str] | None = None,
        orcpt: bool | Mapping[str, str] = False,
        use_bdat: bool | None = None,
        timeout: Timeout = DEFAULT,
    ) -> SendResult:
        """``Client.send_message`` on a pooled connection (the same arguments)."""
        return await self._run(
            lambda c: c.send_message(
                message,
                sender=sender,
                recipients=recipients,
                mail_options=mail_options,
                rcpt_options=rcpt_options,
                ret=ret,
                envid=envid,
                notify=notify,
                orcpt=orcpt,
                use_bdat=use_bdat,
                timeout=timeout,
            )
        )

    async def _run(self, operation: Callable[[Client], Awaitable[_T]]) -> _T:
        if self._closed:
            raise SMTPException("The pool is closed")
        if self._busy == 0:
            self._all_done.clear()
        self._busy += 1
        try:
            for attempt in range(2):
                slot = self._acquire_now() or await self._acquire()
                try:
                    return await operation(slot.client)
                except SMTPServerDisconnected as exc:
                    # A reused connection found dead before any content went out: the
                    # server dropped it while idle. Safe to send once more, elsewhere.
                    retry = slot.reused and getattr(exc, "message_not_sent", False)
                    if attempt == 0 and retry:
                        continue
                    raise
                finally:
                    self._release(slot)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._all_done.set()

    async def _acquire(self) -> _Slot:
        """A connection with room: an idle one, else one in use that can pipeline another
        message, else a new one (up to ``size``), else wait for room."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise SMTPException("The pool is closed")
            slot = self._take(self._idle) or self._take(self._open)
            if slot is None and self._count < self.size:
                slot = _Slot(
                    Client(self.hostname, self.port, **self._options), loop.create_future()
                )
                self._count += 1
                self._use(slot)
                try:
                    await slot.client.connect()
                except BaseException as exc:
                    slot.ready.set_exception(exc)
                    slot.ready.exception()  # retrieved here; sharers get it by awaiting
                    self._release(slot)
                    raise
                slot.ready.set_result(None)
                self._file(slot)  # now we know whether it pipelines
                return slot
            if slot is not None:
                self._use(slot)
                try:
                    await slot.ready  # still opening: share it once it is up
                except BaseException:
                    self._release(slot)
                    raise
                return slot
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # pass the wake-up on
                raise

    def _acquire_now(self) -> _Slot | None:
        """``_acquire`` without waiting, when an open connection has room."""
        if self._closed:
            return None
        slot = self._take(self._idle) if self._idle else None
        if slot is None and self._open:
            slot = self._take(self._open)
        if slot is None or not slot.ready.done():
            return None
        self._use(slot)
        return slot

    def _take(self, slots: list[_Slot]) -> _Slot | None:
        """The most recently filed usable slot of ``slots``; dead ones are dropped."""
        while slots:
            slot = slots[-1]
            if slot.usable:
                return slot
            slots.pop()
            slot.where = None
            self._file(slot)
        return None

    def _use(self, slot: _Slot) -> None:
        slot.users += 1  # (its idle timer, if any, sees that when it fires)
        self._file(slot)

    def _release(self, slot: _Slot) -> None:
        slot.users -= 1
        if slot.ready.done() and slot.ready.exception() is None:
            slot.reused = True
        self._file(slot)
        self._wake()

    def _file(self, slot: _Slot) -> None:
        """Put ``slot`` where ``_acquire`` looks for room, or retire it: the pool's one
        place for these rules."""
        if slot.where is not None:
            slot.where.remove(slot)
            slot.where = None
        if not slot.usable or (self._closed and slot.users == 0):
            if slot.users == 0:  # dead (or the pool closes): forget it once unused
                if slot.timer is not None:
                    slot.timer.cancel()
                    slot.timer = None
                self._count -= 1
                self._retire(slot.client)
            return
        if slot.users == 0:
            slot.where = self._idle
            if self.idle_timeout is not None:
                # One timer per idle spell at most, not one per message: it is armed when
                # the connection first goes idle, and re-arms itself if it was used since.
                slot.idle_since = monotonic()
                if slot.timer is None:
                    loop = asyncio.get_running_loop()
                    slot.timer = loop.call_later(self.idle_timeout, self._expire, slot)
        elif slot.users < self.pipeline_depth and (not slot.ready.done() or slot.pipelines):
            slot.where = self._open
        else:
            return  # full: it is found again when a message releases it
        slot.where.append(slot)

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _expire(self, slot: _Slot) -> None:
        slot.timer = None
        if slot.users == 0 and slot.where is self._idle and self.idle_timeout is not None:
            left = slot.idle_since + self.idle_timeout - monotonic()
            if left > 0:  # used since the timer was armed: idle for less time than that
                loop = asyncio.get_running_loop()
                slot.timer = loop.call_later(left, self._expire, slot)
                return
            self._idle.remove(slot)
            slot.where = None
            self._count -= 1
            self._retire(slot.client)

    def _retire(self, client: Client) -> None:
        """Close a connection politely (QUIT) in the background."""
        if not client.is_connected:
            client.close()
            return
        task = asyncio.get_running_loop().create_task(_quit_quietly(client))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Refuse new messages, wait for the ones in flight, QUIT every connection."""
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)  # they see the pool closed and raise
        await self._all_done.wait()
        while self._idle:
            slot = self._idle.pop()
            slot.where = None
            if slot.timer is not None:
                slot.timer.cancel()
            self._count -= 1
            self._retire(slot.client)
        if self._retiring:
            await asyncio.wait(set(self._retiring))


async def _nothing(client: Client) -> None:
    return None


async def _quit_quietly(client: Client) -> None:
    try:
        await asyncio.wait_for(client.quit(), timeout=5)
    except (SMTPException, OSError, asyncio.TimeoutError):
        client.close()
