"""The shared queue: PostgreSQL, for several relay nodes (psycopg 3, async, with its pool).

Any node delivers any message, so a node that dies strands nothing: its leases expire and
the others take its messages over.

**Writes are batched** (group commit): puts, records, renewals and releases wait in a list;
one task runs whatever is waiting as one transaction (pipelined: one round trip) and
commits once, so concurrent sessions share a commit and its WAL flush. A put returns,
and the client gets its 250, only after that commit.

**Bodies** are rows of ``relay_bodies`` of up to ``chunk_size`` octets. A body that fits
in one chunk stays in memory until its put and goes into the put's transaction. A bigger
one is written a chunk at a time while it arrives, each chunk in a short transaction with
``synchronous_commit = off`` (no flush of its own): the put's synchronous commit flushes
the WAL up to itself, and so every chunk written before it. Memory per message is one
chunk whatever its size. Why chunk rows rather than COPY or large objects: both of those
keep a transaction (and a pooled connection) open for as long as the client sends, which
rules out sharing commits and ties the pool to slow clients; chunk rows need neither, and
the put checks in the database that every chunk is there (a restart between the chunks
and the put cannot give a 250 for a body with holes).

**Leases**: ``lease`` takes due messages with ``SELECT ... FOR UPDATE SKIP LOCKED`` (nodes
never wait for each other nor take the same message), stamps them with an expiry from the
database's clock and this process's owner name, and ``renew`` extends them while they are
delivered. Every attempt is kept in ``relay_attempts`` (which node, which recipient, what
happened). New mail is announced with ``NOTIFY``: a node ``LISTEN``\\ s and its scheduler
wakes at once instead of polling quickly. Per-destination slots (``take_slots``) live in
``relay_slots`` so the concurrency limit of a next hop holds across nodes.

**A lost database**: new mail is answered ``451 4.3.0`` (the put raises QueueError) while a
task reconnects with backoff; a put whose commit was under way when the connection broke is
checked once the database is back: 250 if the row is there, 451 if not; an in-doubt row
that was answered 451 is deleted when the database answers again, so the client's retry
does not make a duplicate. Records wait for the database and are then written (a message
delivered meanwhile is not delivered again); the leases this node holds are renewed as soon
as it is back.

The schema is versioned: ``relay_migrations`` holds the steps applied, ``MIGRATIONS`` the
steps this version knows; ``open`` applies the missing ones under an advisory lock (nodes
starting together do not race).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ferrosmtp.relay.queue import (
    Envelope,
    QueueEntry,
    QueueError,
    QueueFull,
    RecipientResult,
    new_queue_id,
)

__all__ = ["MIGRATIONS", "PostgresQueue"]

log = logging.getLogger("ferrosmtp.relay.queue")

_T = TypeVar("_T")
Conn = psycopg.AsyncConnection[Any]

CHANNEL = "ferrosmtp_relay"  # NOTIFY channel: new mail may be due
NOW = "extract(epoch from now())"  # the database's clock: leases do not depend on the nodes'
MIGRATION_LOCK = 0x6665_7272_6F73  # pg_advisory_xact_lock key ("ferros")
MAX_BATCH = 256

# (version, what it does, statements). Append steps; never change a released one.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "messages, body chunks, attempts, destination slots",
        (
            """CREATE TABLE relay_messages (
                id text PRIMARY KEY,
                sender text NOT NULL,
                envelope text NOT NULL,
                size bigint NOT NULL,
                chunks integer NOT NULL,
                arrival double precision NOT NULL,
                attempts integer NOT NULL DEFAULT 0,
                next_attempt double precision NOT NULL,
                lease_until double precision NOT NULL DEFAULT 0,
                lease_owner text,
                last_error text,
                corrupt text
            )""",
            "CREATE INDEX relay_messages_due ON relay_messages (next_attempt)"
            " WHERE corrupt IS NULL",
            """CREATE TABLE relay_bodies (
                message_id text NOT NULL,
                seq integer NOT NULL,
                data bytea NOT NULL,
                written double precision NOT NULL DEFAULT extract(epoch from now()),
                PRIMARY KEY (message_id, seq)
            )""",
            # Mail compresses poorly and pglz costs the database CPU: store as is.
            "ALTER TABLE relay_bodies ALTER COLUMN data SET STORAGE EXTERNAL",
            """CREATE TABLE relay_attempts (
                message_id text NOT NULL,
                at double precision NOT NULL DEFAULT extract(epoch from now()),
                node text NOT NULL,
                recipient text NOT NULL,
                outcome text NOT NULL,
                status text,
                diagnostic text,
                remote_mta text
            )""",
            "CREATE INDEX relay_attempts_message ON relay_attempts (message_id)",
            "CREATE INDEX relay_attempts_at ON relay_attempts USING brin (at)",
            """CREATE TABLE relay_slots (
                destination text NOT NULL,
                slot integer NOT NULL,
                owner text,
                lease_until double precision NOT NULL DEFAULT 0,
                PRIMARY KEY (destination, slot)
            )""",
            """CREATE FUNCTION relay_check_body(message text, expected integer)
            RETURNS void LANGUAGE plpgsql AS $$
            DECLARE
                stored integer;
            BEGIN
                SELECT count(*) INTO stored FROM relay_bodies WHERE message_id = message;
                IF stored <> expected THEN
                    RAISE EXCEPTION 'message %: % body chunk(s) stored, % expected',
                        message, stored, expected USING ERRCODE = 'data_corrupted';
                END IF;
            END $$""",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_COLUMNS = (
    "id, sender, envelope, size, arrival, attempts, next_attempt, lease_until, last_error,"
    " corrupt, chunks"
)
_INSERT_BODY = "INSERT INTO relay_bodies (message_id, seq, data) VALUES (%s, %s, %b)"
_INSERT_MESSAGE = (
    "INSERT INTO relay_messages (id, sender, envelope, size, chunks, arrival, next_attempt,"
    " lease_until, lease_owner) VALUES (%s, %s, %s, %s, %s, %s, %s,"
    f" CASE WHEN %s > 0 THEN {NOW} + %s ELSE 0 END, %s)"
)
_CONNECT: dict[str, Any] = {
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


class _Lost(QueueError):
    """The database could not be reached (the operation may be retried once it is)."""


class _NotSent(_Lost):
    """Not even a connection: nothing reached the database."""


def _is_lost(error: BaseException) -> bool:
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


def _queue_error(error: BaseException) -> QueueError:
    if isinstance(error, QueueError):
        return error
    if _is_lost(error):
        return _Lost(f"database unreachable: {_text(error)}")
    state = getattr(error, "sqlstate", None) or ""
    if state.startswith("53"):  # insufficient resources: disk full, out of memory...
        return QueueFull(f"database full: {_text(error)}")
    return QueueError(f"database error: {_text(error)}")


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _entry(row: Sequence[Any]) -> QueueEntry:
    return QueueEntry(
        id=row[0],
        envelope=Envelope.loads(row[1], row[2]),
        size=row[3],
        arrival=row[4],
        attempts=row[5],
        next_attempt=row[6],
        lease_until=row[7] or None,
        last_error=row[8],
        corrupt=row[9],
    )


class _Op:
    __slots__ = ("apply", "future", "notify")

    def __init__(
        self, apply: Callable[[Conn], Awaitable[Any]], future: asyncio.Future[Any], notify: bool
    ) -> None:
        self.apply = apply
        self.future = future
        self.notify = notify


class _Body:
    """A body being received: the last partial chunk in memory, full chunks in the
    database as they fill."""

    def __init__(self, queue: PostgresQueue) -> None:
        self.id = new_queue_id()
        self.size = 0
        self.chunks = 0  # chunks already in the database
        self._queue = queue
        self._buffer = bytearray()
        self._failed: QueueError | None = None

    async def write(self, data: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        self.size += len(data)
        self._buffer += data
        size = self._queue.chunk_size
        while len(self._buffer) > size:
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            try:
                await self._queue._write_chunk(self.id, self.chunks, chunk)
            except QueueError as error:
                self._failed = error
                await self.abort()
                raise
            self.chunks += 1

    def tail(self) -> bytes:
        return bytes(self._buffer)

    async def abort(self) -> None:
        self._buffer = bytearray()
        if self.chunks:
            self.chunks = 0
            await self._queue._forget_chunks(self.id)


class PostgresQueue:
    """The queue in a PostgreSQL database shared by relay nodes.

    ``node`` names this node, stable across its restarts and unique among the nodes
    running at once (the CLI uses ``HOSTNAME:PORT``): ``recover`` ends the leases an
    earlier run of the same node left, and only those (the other nodes are alive).
    """

    def __init__(
        self,
        url: str,
        *,
        node: str | None = None,
        pool_size: int = 4,
        chunk_size: int = 128 << 10,
        timeout: float = 5.0,
        doubt_wait: float = 3.0,
        sweep_every: float = 600.0,
        orphan_age: float = 3600.0,
        attempt_retention: float = 7 * 86400.0,
    ) -> None:
        self.url = url
        self.node = node or socket.gethostname()
        self.owner = f"{self.node}/{os.getpid()}.{secrets.token_hex(3)}"
        self.pool_size = pool_size
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.doubt_wait = doubt_wait
        self.sweep_every = sweep_every
        self.orphan_age = orphan_age
        self.attempt_retention = attempt_retention
        self.commits = 0  # write transactions committed (group commit: fewer than writes)
        self.reconnects = 0
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._ops: list[_Op] = []
        self._wake = asyncio.Event()
        self._work = asyncio.Event()
        self._up = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reconnecting: asyncio.Task[None] | None = None
        self._held: set[str] = set()  # messages leased to this process
        self._slots: dict[str, set[int]] = {}  # destination slots held by this process
        self._lease_seconds = 60.0
        self._in_doubt: set[str] = set()  # answered 451 though their commit may have landed
        self._closing = False

    def __repr__(self) -> str:
        return f"PostgresQueue({_safe(self.url)!r}, node={self.node!r})"

    # --- life cycle ---------------------------------------------------------------------

    async def _new_pool(self) -> AsyncConnectionPool[Conn]:
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.url,
            min_size=self.pool_size,
            max_size=self.pool_size,
            kwargs=dict(_CONNECT),
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
        if self._pool is not None:
            return
        self._closing = False
        try:
            pool = await self._new_pool()
        except Exception as error:
            raise QueueError(f"cannot open the queue at {_safe(self.url)}: {error}") from error
        try:
            await self._migrate(pool)
        except BaseException:
            await pool.close(timeout=0)
            raise
        self._pool = pool
        self._up.set()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write_loop()),
            loop.create_task(self._listen_loop()),
            loop.create_task(self._sweep_loop()),
        ]

    async def _migrate(self, pool: AsyncConnectionPool[Conn]) -> None:
        try:
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS relay_migrations (version integer PRIMARY KEY,"
                    " description text NOT NULL, applied timestamptz NOT NULL DEFAULT now())"
                )
                cur = await conn.execute("SELECT coalesce(max(version), 0) FROM relay_migrations")
                row = await cur.fetchone()
                current = int(row[0]) if row else 0
                if current > SCHEMA_VERSION:
                    raise QueueError(
                        f"the queue's schema is version {current}; this ferrosmtp knows up to"
                        f" {SCHEMA_VERSION}: upgrade ferrosmtp"
                    )
                for version, description, statements in MIGRATIONS:
                    if version <= current:
                        continue
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO relay_migrations (version, description) VALUES (%s, %s)",
                        (version, description),
                    )
                    log.info("queue schema: applied step %d (%s)", version, description)
        except psycopg.Error as error:
            raise QueueError(f"cannot set up the queue's schema: {error}") from error

    async def schema_version(self) -> int:
        row = await self._read_one("SELECT coalesce(max(version), 0) FROM relay_migrations")
        return int(row[0]) if row else 0

    async def close(self) -> None:
        if self._pool is None:
            return
        self._closing = True
        writer = self._tasks[0] if self._tasks else None
        if writer is not None and self._up.is_set():
            # Let the writes already handed over finish (bounded).
            self._wake.set()
            deadline = time.monotonic() + self.timeout
            while self._ops and time.monotonic() < deadline and not writer.done():
                await asyncio.sleep(0.01)
        tasks = [*self._tasks, *([self._reconnecting] if self._reconnecting else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks, self._reconnecting = [], None
        failure = QueueError("the queue is closed")
        for op in self._ops:
            if not op.future.done():
                op.future.set_exception(failure)
        self._ops = []
        pool, self._pool = self._pool, None
        self._up.clear()
        await pool.close(timeout=2)

    # --- the connection -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def _connection_lost(self, error: BaseException) -> None:
        if self._closing or not self._up.is_set():
            return
        self._up.clear()
        log.warning(
            "queue database %s unreachable (%s): new mail is refused with 451 until it"
            " answers again",
            _safe(self.url),
            str(error).strip() or type(error).__name__,
        )
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                probe = await psycopg.AsyncConnection.connect(self.url, **_CONNECT)
                await probe.close()
                pool = await self._new_pool()
            except Exception as error:
                log.debug("queue database still unreachable: %s", error)
                continue
            old, self._pool = self._pool, pool
            if old is not None:
                self._later(old.close(timeout=1))
            try:
                await self._resume()
            except Exception as error:
                log.debug("queue database lost again while resuming: %s", error)
                continue
            break
        self.reconnects += 1
        self._reconnecting = None
        self._up.set()
        self._work.set()
        self._wake.set()
        log.warning("queue database %s answers again", _safe(self.url))

    async def _resume(self) -> None:
        """After an outage: remove the rows answered 451 whose commit did land, and renew
        what this process holds (an outage must not let the leases lapse)."""
        pool = self._pool
        assert pool is not None
        async with pool.connection() as conn, conn.transaction():
            if self._in_doubt:
                cur = await conn.execute(
                    "DELETE FROM relay_messages WHERE id = ANY(%s) AND (lease_owner = %s"
                    f" OR (lease_until <= {NOW} AND attempts = 0)) RETURNING id",
                    (list(self._in_doubt), self.owner),
                )
                removed = [r[0] for r in await cur.fetchall()]
                if removed:
                    await conn.execute(
                        "DELETE FROM relay_bodies WHERE message_id = ANY(%s)", (removed,)
                    )
                    log.warning(
                        "removed %d message(s) answered 451 whose commit had landed: %s",
                        len(removed),
                        " ".join(removed),
                    )
                self._in_doubt.clear()
            if self._held:
                await conn.execute(
                    f"UPDATE relay_messages SET lease_until = {NOW} + %s"
                    " WHERE id = ANY(%s) AND lease_owner = %s",
                    (self._lease_seconds, list(self._held), self.owner),
                )
            await conn.execute(
                f"UPDATE relay_slots SET lease_until = {NOW} + %s WHERE owner = %s",
                (self._lease_seconds, self.owner),
            )

    async def _read_all(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        if self._pool is None:
            raise QueueError("the queue is not open")
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(sql, args)
                return await cur.fetchall()
        except Exception as error:
            if _is_lost(error):
                self._connection_lost(error)
            raise _queue_error(error) from error

    async def _read_one(self, sql: str, args: Any = None) -> tuple[Any, ...] | None:
        rows = await self._read_all(sql, args)
        return rows[0] if rows else None

    def _later(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # --- group commit -------------------------------------------------------------------

    async def _submit(self, apply: Callable[[Conn], Awaitable[_T]], notify: bool = False) -> _T:
        """Run ``apply`` in the next shared transaction; return once it has committed."""
        if self._pool is None:
            raise QueueError("the queue is not open")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(apply, future, notify))
        self._wake.set()
        return await future

    async def _durably(self, apply: Callable[[Conn], Awaitable[_T]], notify: bool = False) -> _T:
        """``_submit`` again after each reconnection until it commits (idempotent writes)."""
        while True:
            if not self._up.is_set():
                await self._up.wait()
            try:
                return await self._submit(apply, notify)
            except _Lost:
                if self._closing:
                    raise
                await asyncio.sleep(0.05)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ops:
                batch, self._ops = self._ops[:MAX_BATCH], self._ops[MAX_BATCH:]
                if self._up.is_set():
                    await self._run_batch(batch)
                else:  # puts answer 451 at once; records wait for the reconnection
                    _settle(batch, error=_NotSent("database unreachable"))

    async def _run_batch(self, batch: list[_Op]) -> None:
        pool = self._pool
        assert pool is not None
        try:
            conn = await pool.getconn()
        except Exception as error:
            self._connection_lost(error)
            _settle(batch, error=_NotSent(f"database unreachable: {error}"))
            return
        try:
            results = []
            async with conn.pipeline(), conn.transaction():
                for op in batch:
                    results.append(await op.apply(conn))
                if any(op.notify for op in batch):
                    await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        except Exception as error:
            await _put_back(pool, conn)
            if _is_lost(error):
                self._connection_lost(error)
                _settle(batch, error=_queue_error(error))
            elif len(batch) == 1:
                _settle(batch, error=_queue_error(error))
            else:
                for op in batch:  # one operation failed them all: run each alone
                    await self._run_batch([op])
            return
        await _put_back(pool, conn)
        self.commits += 1
        for op, result in zip(batch, results, strict=True):
            if not op.future.done():
                op.future.set_result(result)

    # --- putting ------------------------------------------------------------------------

    def new_body(self) -> _Body:
        return _Body(self)

    async def _write_chunk(self, message_id: str, seq: int, data: bytes) -> None:
        if self._pool is None or not self._up.is_set():
            raise _NotSent("database unreachable")
        try:
            async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit TO off")
                await conn.execute(_INSERT_BODY, (message_id, seq, data))
        except Exception as error:
            if _is_lost(error):
                self._connection_lost(error)
            raise _queue_error(error) from error

    async def _forget_chunks(self, message_id: str) -> None:
        """Best effort: chunks left behind are swept later (``orphan_age``)."""
        if self._pool is None or not self._up.is_set():
            return
        with contextlib.suppress(Exception):
            async with self._pool.connection() as conn:
                await conn.execute("DELETE FROM relay_bodies WHERE message_id = %s", (message_id,))

    async def put(self, envelope: Envelope, body: Any, *, lease: float | None = None) -> QueueEntry:
        assert isinstance(body, _Body)
        if not self._up.is_set():
            await body.abort()
            raise _NotSent(f"queue database {_safe(self.url)} unreachable")
        now = time.time()
        tail = body.tail()
        streamed = body.chunks
        chunks = streamed + (1 if tail else 0)
        lease = lease or 0.0
        owner = self.owner if lease else None
        row = (
            body.id,
            envelope.sender,
            envelope.dumps(),
            body.size,
            chunks,
            now,
            now,
            lease,
            lease,
            owner,
        )

        async def insert(conn: Conn) -> None:
            if tail:
                await conn.execute(_INSERT_BODY, (body.id, streamed, tail))
            if streamed:
                await conn.execute("SELECT relay_check_body(%s, %s)", (body.id, chunks))
            await conn.execute(_INSERT_MESSAGE, row)

        try:
            await self._submit(insert, notify=not lease)
        except _NotSent:
            await body.abort()
            raise
        except _Lost as error:
            if not await self._settle_doubt(body.id):
                raise QueueError(f"{error}; the message was not stored") from error
        except QueueError:
            await body.abort()
            raise
        if lease:
            self._held.add(body.id)
        else:
            self._work.set()
        return QueueEntry(
            id=body.id,
            envelope=envelope,
            size=body.size,
            arrival=now,
            next_attempt=now,
            lease_until=now + lease if lease else None,
            body=tail if not streamed else None,
        )

    async def _settle_doubt(self, message_id: str) -> bool:
        """The connection broke while a put committed: did it? Waits ``doubt_wait`` for
        the database; True if the row is there. If the database does not come back in
        time the put is answered 451 and its row, if any, deleted when it does."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._up.wait(), self.doubt_wait)
        if self._up.is_set():
            try:
                row = await self._read_one(
                    "SELECT 1 FROM relay_messages WHERE id = %s", (message_id,)
                )
                if row is not None:
                    log.info(
                        "%s: stored after all (the commit landed before the break)", message_id
                    )
                    return True
                await self._forget_chunks(message_id)
                return False
            except QueueError:
                pass
        self._in_doubt.add(message_id)
        return False

    # --- delivering ---------------------------------------------------------------------

    async def lease(self, n: int, lease: float) -> list[QueueEntry]:
        if not self._up.is_set():
            return []  # nothing can be taken while the database is away; no error flood
        self._lease_seconds = lease
        rows = await self._read_all(
            f"""WITH due AS (
                SELECT id FROM relay_messages
                WHERE next_attempt <= {NOW} AND lease_until <= {NOW} AND corrupt IS NULL
                ORDER BY next_attempt LIMIT %(n)s FOR UPDATE SKIP LOCKED
            ), taken AS (
                UPDATE relay_messages m SET lease_until = {NOW} + %(lease)s,
                    lease_owner = %(owner)s
                FROM due WHERE m.id = due.id
                RETURNING m.id, m.sender, m.envelope, m.size, m.arrival, m.attempts,
                    m.next_attempt, m.lease_until, m.last_error, m.corrupt, m.chunks
            )
            SELECT taken.*, b.data FROM taken
            LEFT JOIN relay_bodies b ON taken.chunks = 1 AND b.message_id = taken.id
                AND b.seq = 0
            ORDER BY taken.next_attempt""",
            {"n": n, "lease": lease, "owner": self.owner},
        )
        entries = []
        for row in rows:
            entry = _entry(row)
            if row[10] == 0:
                entry.body = b""
            elif row[11] is not None:
                entry.body = bytes(row[11])
            entries.append(entry)
            self._held.add(entry.id)
        return entries

    async def renew(self, ids: Sequence[str], lease: float) -> None:
        self._lease_seconds = lease
        if not self._up.is_set():
            return  # renewed by _resume as soon as the database is back
        wanted = list(ids)
        owner = self.owner

        async def run(conn: Conn) -> None:
            if wanted:
                await conn.execute(
                    f"UPDATE relay_messages SET lease_until = {NOW} + %s"
                    " WHERE id = ANY(%s) AND lease_owner = %s",
                    (lease, wanted, owner),
                )
            await conn.execute(
                f"UPDATE relay_slots SET lease_until = {NOW} + %s WHERE owner = %s",
                (lease, owner),
            )

        with contextlib.suppress(_Lost):
            await self._submit(run)

    async def read_body(self, entry: QueueEntry) -> bytes:
        if entry.body is not None:
            return entry.body
        deadline = time.monotonic() + 30
        while True:
            try:
                rows = await self._read_all(
                    "SELECT data FROM relay_bodies WHERE message_id = %s ORDER BY seq",
                    (entry.id,),
                )
                found = await self._read_one(
                    "SELECT chunks FROM relay_messages WHERE id = %s", (entry.id,)
                )
                break
            except _Lost:
                if time.monotonic() > deadline:
                    raise
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._up.wait(), max(deadline - time.monotonic(), 0))
        if found is None:
            raise QueueError(f"{entry.id}: no longer queued")
        data = b"".join(bytes(r[0]) for r in rows)
        if len(rows) == found[0] and len(data) == entry.size:
            return data
        problem = f"body has {len(rows)} chunk(s), {len(data)} octets; {entry.size} expected"

        async def mark(conn: Conn) -> None:
            await conn.execute(
                "UPDATE relay_messages SET corrupt = %s, last_error = %s, lease_until = 0,"
                " lease_owner = NULL WHERE id = %s",
                (problem, problem, entry.id),
            )

        await self._submit(mark)
        self._held.discard(entry.id)
        raise QueueError(f"{entry.id}: {problem}")

    async def record(
        self,
        entry: QueueEntry,
        results: Sequence[RecipientResult],
        next_attempt: float | None,
        error: str | None = None,
    ) -> None:
        done = entry.apply(results, error)
        attempts = [
            (entry.id, self.owner, r.address, r.outcome.value, r.status, r.diagnostic, r.remote_mta)
            for r in results
        ]
        if not done:
            entry.next_attempt = next_attempt if next_attempt is not None else time.time()
            entry.lease_until = None
        values = (entry.envelope.dumps(), entry.attempts, entry.next_attempt, error, entry.id)

        async def run(conn: Conn) -> None:
            if attempts:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO relay_attempts (message_id, node, recipient, outcome,"
                        " status, diagnostic, remote_mta) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        attempts,
                    )
            if done:
                await conn.execute("DELETE FROM relay_messages WHERE id = %s", (entry.id,))
                await conn.execute("DELETE FROM relay_bodies WHERE message_id = %s", (entry.id,))
            else:
                await conn.execute(
                    "UPDATE relay_messages SET envelope = %s, attempts = %s, next_attempt = %s,"
                    " last_error = %s, lease_until = 0, lease_owner = NULL WHERE id = %s",
                    values,
                )

        # Waits out an outage: a delivery that happened must be written down, or the
        # message would go out again when its lease expires.
        await self._durably(run)
        self._held.discard(entry.id)

    async def release(self, entry: QueueEntry) -> None:
        self._held.discard(entry.id)
        if not self._up.is_set():
            return  # the lease expires by itself

        async def run(conn: Conn) -> None:
            await conn.execute(
                "UPDATE relay_messages SET lease_until = 0, lease_owner = NULL"
                " WHERE id = %s AND lease_owner = %s",
                (entry.id, self.owner),
            )

        with contextlib.suppress(_Lost):
            await self._submit(run, notify=True)

    # --- destination slots (the per-destination limit across nodes) --------------------

    async def take_slots(
        self, destination: str, want: int, limit: int, lease: float
    ) -> Sequence[int]:
        if not self._up.is_set() or self._pool is None:
            return []
        args = {"d": destination, "limit": limit, "want": want, "owner": self.owner, "lease": lease}
        try:
            async with self._pool.connection() as conn, conn.transaction():
                # Slot state need not survive a database crash: no flush of its own.
                await conn.execute("SET LOCAL synchronous_commit TO off")
                slots = await _take_slots(conn, args)
                if not slots:
                    # First use of the destination (or of a higher limit): make its rows.
                    cur = await conn.execute(
                        "INSERT INTO relay_slots (destination, slot) SELECT %s, g"
                        " FROM generate_series(0, %s - 1) g ON CONFLICT DO NOTHING",
                        (destination, limit),
                    )
                    if cur.rowcount:
                        slots = await _take_slots(conn, args)
        except Exception as error:
            if _is_lost(error):
                self._connection_lost(error)
                return []
            raise _queue_error(error) from error
        if slots:
            self._slots.setdefault(destination, set()).update(slots)
        return slots

    async def give_slots(self, destination: str, slots: Sequence[int]) -> None:
        held = self._slots.get(destination)
        if held is not None:
            held.difference_update(slots)
            if not held:
                del self._slots[destination]
        if not self._up.is_set() or self._pool is None or not slots:
            return  # they expire by themselves
        with contextlib.suppress(Exception):
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit TO off")
                await conn.execute(
                    "UPDATE relay_slots SET owner = NULL, lease_until = 0"
                    " WHERE destination = %s AND slot = ANY(%s) AND owner = %s",
                    (destination, list(slots), self.owner),
                )

    # --- administration -----------------------------------------------------------------

    async def recover(self) -> int:
        """End the leases an earlier run of this node left (a crash), and sweep."""

        async def run(conn: Conn) -> int:
            cur = await conn.execute(
                "UPDATE relay_messages SET lease_until = 0, lease_owner = NULL"
                " WHERE split_part(lease_owner, '/', 1) = %s AND lease_owner <> %s"
                " RETURNING 1",
                (self.node, self.owner),
            )
            count = len(await cur.fetchall())
            await conn.execute(
                "UPDATE relay_slots SET lease_until = 0, owner = NULL"
                " WHERE split_part(owner, '/', 1) = %s AND owner <> %s",
                (self.node, self.owner),
            )
            return count

        count = await self._submit(run, notify=True)
        await self.sweep()
        if count:
            log.info("node %s: %d message(s) left mid-delivery are due again", self.node, count)
        return count

    async def sweep(self) -> None:
        """Delete body chunks of messages never stored (cut off, or a crash before their
        put) and attempts past ``attempt_retention``."""

        async def run(conn: Conn) -> None:
            await conn.execute(
                f"DELETE FROM relay_bodies b WHERE b.written < {NOW} - %s AND NOT EXISTS"
                " (SELECT 1 FROM relay_messages m WHERE m.id = b.message_id)",
                (self.orphan_age,),
            )
            await conn.execute(
                f"DELETE FROM relay_attempts WHERE at < {NOW} - %s", (self.attempt_retention,)
            )

        await self._submit(run)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every)
            if self._up.is_set():
                try:
                    await self.sweep()
                except QueueError as error:
                    log.warning("queue sweep failed: %s", error)

    async def delete(self, queue_id: str | None) -> int:
        where, args = ("", ()) if queue_id is None else (" WHERE id = %s", (queue_id,))

        async def run(conn: Conn) -> int:
            cur = await conn.execute("DELETE FROM relay_messages" + where + " RETURNING id", args)
            ids = [r[0] for r in await cur.fetchall()]
            if ids:
                await conn.execute("DELETE FROM relay_bodies WHERE message_id = ANY(%s)", (ids,))
            return len(ids)

        return await self._submit(run)

    async def retry(self, queue_id: str | None) -> int:
        where, args = ("", ()) if queue_id is None else (" WHERE id = %s", (queue_id,))

        async def run(conn: Conn) -> int:
            cur = await conn.execute(
                f"UPDATE relay_messages SET next_attempt = {NOW}, corrupt = NULL"
                + where
                + " RETURNING 1",
                args,
            )
            return len(await cur.fetchall())

        count = await self._submit(run, notify=True)
        self._work.set()
        return count

    async def attempts(self, queue_id: str) -> list[dict[str, Any]]:
        """Every attempt recorded for a message (kept ``attempt_retention`` seconds)."""
        rows = await self._read_all(
            "SELECT at, node, recipient, outcome, status, diagnostic, remote_mta"
            " FROM relay_attempts WHERE message_id = %s ORDER BY at",
            (queue_id,),
        )
        names = ("at", "node", "recipient", "outcome", "status", "diagnostic", "remote_mta")
        return [dict(zip(names, r, strict=True)) for r in rows]

    async def list(self) -> list[QueueEntry]:
        rows = await self._read_all(f"SELECT {_COLUMNS} FROM relay_messages ORDER BY arrival")
        return [_entry(r) for r in rows]

    async def get(self, queue_id: str) -> QueueEntry | None:
        row = await self._read_one(
            f"SELECT {_COLUMNS} FROM relay_messages WHERE id = %s", (queue_id,)
        )
        return None if row is None else _entry(row)

    async def counts(self) -> dict[str, int]:
        row = await self._read_one(
            "SELECT"
            f" count(*) FILTER (WHERE corrupt IS NULL AND lease_until > {NOW}),"
            f" count(*) FILTER (WHERE corrupt IS NULL AND lease_until <= {NOW} AND attempts > 0),"
            f" count(*) FILTER (WHERE corrupt IS NULL AND lease_until <= {NOW} AND attempts = 0),"
            " count(*) FILTER (WHERE corrupt IS NOT NULL) FROM relay_messages"
        )
        assert row is not None
        return dict(zip(("active", "deferred", "incoming", "corrupt"), row, strict=True))

    async def wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
        self._work.clear()

    # --- notifications ------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        """Wake the scheduler on NOTIFY; reconnect with backoff when the link breaks."""
        delay = 0.05
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, **_CONNECT)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.05
                    self._work.set()  # anything announced while we were not listening
                    async for _ in conn.notifies():
                        self._work.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.debug("queue notifications interrupted: %s", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _settle(batch: list[_Op], *, error: BaseException) -> None:
    for op in batch:
        if not op.future.done():
            op.future.set_exception(error)


async def _put_back(pool: AsyncConnectionPool[Conn], conn: Conn) -> None:
    with contextlib.suppress(Exception):
        await pool.putconn(conn)


async def _take_slots(conn: Conn, args: dict[str, Any]) -> list[int]:
    cur = await conn.execute(
        f"""WITH free AS (
            SELECT slot FROM relay_slots
            WHERE destination = %(d)s AND slot < %(limit)s AND lease_until <= {NOW}
            ORDER BY slot LIMIT %(want)s FOR UPDATE SKIP LOCKED
        )
        UPDATE relay_slots s SET owner = %(owner)s, lease_until = {NOW} + %(lease)s
        FROM free WHERE s.destination = %(d)s AND s.slot = free.slot
        RETURNING s.slot""",
        args,
    )
    return [int(r[0]) for r in await cur.fetchall()]
