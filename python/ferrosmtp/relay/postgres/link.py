"""A node's link to the queue's database: the connection pool, the writer that groups
writes into shared transactions (group commit), the LISTEN connection, and what happens
when the database goes away.

**Group commit**: writes wait in a list; one task runs whatever is waiting as one
transaction, pipelined (one round trip), and commits once: concurrent sessions share a
commit and its WAL flush. If one write fails the batch, each is run again alone, so only
the culprit fails.

**A lost database**: the first connection error marks the link down; writes submitted
while it is down fail at once (``NotSent``: a put answers 451), ``durably`` waits for the
link to come back. A task reconnects with backoff (50 ms doubling to 2 s) into a fresh
pool, calls ``resume`` (in one transaction) before anything else runs, then marks the link
up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ferrosmtp.relay.postgres import schema
from ferrosmtp.relay.queue import QueueError, QueueFull

__all__ = ["Conn", "Link", "Lost", "NotSent", "is_lost", "queue_error", "safe_url"]

log: logging.Logger = logging.getLogger("ferrosmtp.relay.queue")

_T = TypeVar("_T")
Conn = psycopg.AsyncConnection[Any]

CHANNEL = "ferrosmtp_relay"  # NOTIFY channel: new mail may be due
MAX_BATCH = 256
CONNECT: dict[str, Any] = {
    "autocommit": True,
    "connect_timeout": 5,
    # A peer that vanishes without a reset is noticed in seconds, not hours.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "application_name": "ferrosmtp-relay",
}


class Lost(QueueError):
    """The database could not be reached (the operation may be retried once it is)."""


class NotSent(Lost):
    """Not even a connection: nothing reached the database."""


def is_lost(error: BaseException) -> bool:
    """A connection problem (retry after reconnecting), not a statement that failed."""
    if isinstance(error, (PoolTimeout, OSError, asyncio.TimeoutError)):
        return True
    if isinstance(error, psycopg.OperationalError):
        state = error.sqlstate
        return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")
    return isinstance(error, psycopg.InterfaceError)


def _text(error: BaseException) -> str:
    """One line: the server's primary message (no CONTEXT lines), else the error's."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(error).strip() or type(error).__name__
    return " ".join(text.split())


def queue_error(error: BaseException) -> QueueError:
    """The QueueError for a database error: ``Lost`` for a connection problem, ``QueueFull``
    for a full disk (SQLSTATE class 53), else QueueError."""
    if isinstance(error, QueueError):
        return error
    if is_lost(error):
        return Lost(f"database unreachable: {_text(error)}")
    state = getattr(error, "sqlstate", None) or ""
    if state.startswith("53"):  # insufficient resources: disk full, out of memory...
        return QueueFull(f"database full: {_text(error)}")
    return QueueError(f"database error: {_text(error)}")


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


class _Op:
    __slots__ = ("apply", "future", "notify")

    def __init__(
        self, apply: Callable[[Conn], Awaitable[Any]], future: asyncio.Future[Any], notify: bool
    ) -> None:
        self.apply = apply
        self.future = future
        self.notify = notify


class Link:
    """``on_notify`` is called for every NOTIFY (and after each new LISTEN, as anything
    may have been announced meanwhile); ``resume(conn)`` runs after a reconnection,
    before the link is up again."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int,
        timeout: float,
        on_notify: Callable[[], None],
        resume: Callable[[Conn], Awaitable[None]],
    ) -> None:
        self.url: str = url
        self.pool_size: int = pool_size
        self.timeout: float = timeout
        self.on_notify: Callable[[], None] = on_notify
        self.resume: Callable[[Conn], Awaitable[None]] = resume
        self.commits: int = 0  # write transactions committed (group commit: fewer than writes)
        self.reconnects: int = 0
        self.up: asyncio.Event = asyncio.Event()  # set while the database answers
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._ops: list[_Op] = []
        self._writer: Conn | None = None  # the writer's own connection, out of the pool
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reconnecting: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    # --- life cycle ---------------------------------------------------------------------

    async def _new_pool(self) -> AsyncConnectionPool[Conn]:
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.url,
            min_size=self.pool_size,
            max_size=self.pool_size,
            kwargs=dict(CONNECT),
            open=False,
            timeout=self.timeout,
            name="ferrosmtp-relay",
            reconnect_timeout=3600.0,
        )
        try:
            await pool.open(wait=True, timeout=self.timeout)
        except BaseException:
            await pool.close(timeout=0)
            raise
        return pool

    async def open(self) -> None:
        """Connect, bring the schema up to date, start the writer and the listener."""
        if self._pool is not None:
            return
        self._closing = False
        try:
            # One connection first: an unreachable database or a bad URL is one clear
            # error at once, not the pool's attempts until its timeout.
            async with await psycopg.AsyncConnection.connect(self.url, **CONNECT) as conn:
                await schema.migrate(conn)
            pool = await self._new_pool()
        except QueueError:
            raise
        except Exception as error:
            raise QueueError(
                f"cannot open the queue at {safe_url(self.url)}: {_text(error)}"
            ) from error
        self._pool = pool
        self.up.set()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write_loop()), loop.create_task(self._listen_loop())]

    async def close(self) -> None:
        """Finish the writes handed over (bounded), stop the tasks, close the pool."""
        if self._pool is None:
            return
        self._closing = True
        task = self._tasks[0] if self._tasks else None
        if task is not None and self.up.is_set():
            # Let the writes already handed over finish (bounded).
            self._wake.set()
            deadline = asyncio.get_running_loop().time() + self.timeout
            while self._ops and asyncio.get_running_loop().time() < deadline and not task.done():
                await asyncio.sleep(0.01)
        tasks = [*self._tasks, *([self._reconnecting] if self._reconnecting else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks, self._reconnecting = [], None
        _settle(self._ops, QueueError("the queue is closed"))
        self._ops = []
        pool, self._pool = self._pool, None
        self.up.clear()
        writer, self._writer = self._writer, None
        if writer is not None:
            await _put_back(pool, writer)
        await pool.close(timeout=2)

    # --- losing the database and finding it again --------------------------------------

    def lost(self, error: BaseException) -> None:
        """Mark the link down after a connection error and start reconnecting."""
        if self._closing or not self.up.is_set():
            return
        self.up.clear()
        log.warning(
            "queue database %s unreachable (%s): new mail is refused with 451 until it"
            " answers again",
            safe_url(self.url),
            _text(error),
        )
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                probe = await psycopg.AsyncConnection.connect(self.url, **CONNECT)
                await probe.close()
                pool = await self._new_pool()
            except Exception as error:
                log.debug("queue database still unreachable: %s", error)
                continue
            old, self._pool = self._pool, pool
            if old is not None:
                writer, self._writer = self._writer, None
                if writer is not None:
                    await _put_back(old, writer)
                _background(old.close(timeout=1))
            try:
                async with pool.connection() as conn, conn.transaction():
                    await self.resume(conn)
            except Exception as error:
                log.debug("queue database lost again while resuming: %s", error)
                continue
            break
        self.reconnects += 1
        self._reconnecting = None
        self.up.set()
        self._wake.set()
        self.on_notify()
        log.warning("queue database %s answers again", safe_url(self.url))

    async def wait_up(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the link to be up; whether it is."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.up.wait(), timeout)
        return self.up.is_set()

    # --- group commit -------------------------------------------------------------------

    async def submit(self, apply: Callable[[Conn], Awaitable[_T]], notify: bool = False) -> _T:
        """Run ``apply`` in the next shared transaction; return once it has committed.
        ``notify``: the transaction sends a NOTIFY (new mail may be due)."""
        if self._pool is None:
            raise QueueError("the queue is not open")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(apply, future, notify))
        self._wake.set()
        return await future

    async def durably(self, apply: Callable[[Conn], Awaitable[_T]], notify: bool = False) -> _T:
        """``submit`` again after each reconnection until it commits (idempotent writes)."""
        while True:
            if not self.up.is_set():
                await self.up.wait()
            try:
                return await self.submit(apply, notify)
            except Lost:
                if self._closing:
                    raise
                await asyncio.sleep(0.05)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # One turn of the event loop first: the sessions whose data arrived in the same
            # wake-up hand their writes over too, and share this commit.
            await asyncio.sleep(0)
            while self._ops:
                batch, self._ops = self._ops[:MAX_BATCH], self._ops[MAX_BATCH:]
                if self.up.is_set():
                    await self._run_batch(batch)
                else:  # puts answer 451 at once; durable writes wait for the reconnection
                    _settle(batch, NotSent("database unreachable"))

    async def _run_batch(self, batch: list[_Op]) -> None:
        pool = self._pool
        assert pool is not None
        conn = self._writer
        if conn is None:
            # The writer keeps a connection of its own (no pool round per batch).
            try:
                conn = self._writer = await pool.getconn()
            except Exception as error:
                self.lost(error)
                _settle(batch, NotSent(f"database unreachable: {_text(error)}"))
                return
        try:
            results = []
            async with conn.pipeline(), conn.transaction():
                for op in batch:
                    results.append(await op.apply(conn))
                if any(op.notify for op in batch):
                    await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        except Exception as error:
            self._writer = None
            await _put_back(pool, conn)  # reset, or dropped if broken
            if is_lost(error):
                self.lost(error)
                _settle(batch, queue_error(error))
            elif len(batch) == 1:
                _settle(batch, queue_error(error))
            else:
                for op in batch:  # one write failed them all: run each alone
                    await self._run_batch([op])
            return
        self.commits += 1
        for op, result in zip(batch, results, strict=True):
            if not op.future.done():
                op.future.set_result(result)

    # --- everything else ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection of its own (autocommit); errors become QueueError, and a
        lost connection marks the link down."""
        if self._pool is None or not self.up.is_set():
            raise NotSent("database unreachable")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except Exception as error:
            if is_lost(error):
                self.lost(error)
            raise queue_error(error) from error

    async def read_all(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """The rows of one query on a pooled connection of its own."""
        async with self.connection() as conn:
            cur = await conn.execute(sql, args)
            return await cur.fetchall()

    async def read_one(self, sql: str, args: Any = None) -> tuple[Any, ...] | None:
        """The first row of one query, or None."""
        rows = await self.read_all(sql, args)
        return rows[0] if rows else None

    async def _listen_loop(self) -> None:
        """``on_notify`` on every NOTIFY; reconnect with backoff when the link breaks."""
        delay = 0.05
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, **CONNECT)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.05
                    self.on_notify()  # anything announced while we were not listening
                    async for _ in conn.notifies():
                        self.on_notify()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.debug("queue notifications interrupted: %s", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _settle(batch: list[_Op], error: BaseException) -> None:
    for op in batch:
        if not op.future.done():
            op.future.set_exception(error)


async def _put_back(pool: AsyncConnectionPool[Conn], conn: Conn) -> None:
    with contextlib.suppress(Exception):
        await pool.putconn(conn)


def _background(coro: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(coro)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
