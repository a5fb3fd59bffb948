"""``PostgresQueue``: the relay's queue interface on PostgreSQL (the tables are in
``schema``, the connection, group commit and reconnection in ``link``).

Puts, records, renewals and releases go through the link's shared transactions; leases,
slots, body chunks and reads use pooled connections of their own. Times that decide who
may take a message (``lease_until``) come from the database's clock; arrival and the next
attempt from the node's, as the scheduler computes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any

import psycopg

from ferrosmtp.relay.postgres.link import CONNECT, Conn, Link, Lost, NotSent, queue_error, safe_url
from ferrosmtp.relay.postgres.schema import NOW, version
from ferrosmtp.relay.queue import (
    WRITTEN,
    BodyWriter,
    Envelope,
    QueueEntry,
    QueueError,
    RecipientResult,
    new_queue_id,
)

__all__ = ["PostgresQueue"]

log: logging.Logger = logging.getLogger("ferrosmtp.relay.queue")

_COLUMNS = (
    "id, sender, envelope, size, arrival, attempts, next_attempt, lease_until, last_error,"
    " corrupt, chunks"
)
_INSERT_BODY = "INSERT INTO relay_bodies (message_id, seq, data) VALUES (%s, %s, %b)"
_MESSAGE_VALUES = (
    "VALUES (%(id)s, %(sender)s, %(envelope)s, %(size)s, %(chunks)s, %(now)s, %(now)s,"
    f" CASE WHEN %(lease)s > 0 THEN {NOW} + %(lease)s ELSE 0 END, %(owner)s)"
)
_MESSAGE_COLUMNS = (
    "relay_messages (id, sender, envelope, size, chunks, arrival, next_attempt, lease_until,"
    " lease_owner)"
)
# One statement a message where a body fits in one chunk (each statement is a round of
# Python in the node and of parse-bind-execute in the server).
_PUT = (
    "WITH body AS (INSERT INTO relay_bodies (message_id, seq, data)"
    " SELECT %(id)s, 0, %(tail)b WHERE %(chunks)s > 0)"
    f" INSERT INTO {_MESSAGE_COLUMNS} {_MESSAGE_VALUES}"
)
_INSERT_MESSAGE = f"INSERT INTO {_MESSAGE_COLUMNS} {_MESSAGE_VALUES}"
_LIST_JSON = (
    "SELECT json_build_object('id', id, 'sender', sender, 'recipients', (SELECT"
    " coalesce(json_agg(r->>'address'), '[]') FROM json_array_elements(envelope::json->'rcpt')"
    " AS r WHERE r->>'outcome' IS NULL), 'size', size, 'arrival', arrival, 'attempts',"
    " attempts, 'next_attempt', next_attempt, 'last_error', last_error, 'leased',"
    f" lease_until > {NOW}, 'corrupt', corrupt)::text FROM relay_messages ORDER BY arrival"
)
# Only the slots this process holds: one it gave back while the database was away is
# still its own there, and renewing it would keep it from every node for good.
_RENEW_SLOTS = (
    f"UPDATE relay_slots SET lease_until = {NOW} + %s WHERE owner = %s AND"
    " (destination, slot) IN (SELECT * FROM unnest(%s::text[], %s::int[]))"
)
_ATTEMPTS = (
    "attempt AS (INSERT INTO relay_attempts (message_id, node, recipient, outcome, status,"
    " diagnostic, remote_mta) SELECT %(id)s, %(node)s, r, o, s, d, m FROM unnest("
    "%(rcpt)s::text[], %(outcome)s::text[], %(status)s::text[], %(diagnostic)s::text[],"
    " %(mta)s::text[]) AS u(r, o, s, d, m))"
)
_DONE = (
    f"WITH {_ATTEMPTS}, body AS (DELETE FROM relay_bodies WHERE message_id = %(id)s)"
    " DELETE FROM relay_messages WHERE id = %(id)s"
)
_DEFERRED = (
    f"WITH {_ATTEMPTS} UPDATE relay_messages SET envelope = %(envelope)s,"
    " attempts = %(attempts)s, next_attempt = %(next)s, last_error = %(error)s,"
    " lease_until = 0, lease_owner = NULL WHERE id = %(id)s"
)


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

    def write(self, data: bytes) -> Awaitable[None]:
        """In memory until a chunk is full; then awaiting the result stores it."""
        if self._failed is not None:
            raise self._failed
        self.size += len(data)
        self._buffer += data
        if len(self._buffer) > self._queue.chunk_size:
            return self._store_chunks()
        return WRITTEN

    async def _store_chunks(self) -> None:
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
        pool_size: int = 5,
        chunk_size: int = 128 << 10,
        timeout: float = 5.0,
        doubt_wait: float = 3.0,
        sweep_every: float = 600.0,
        orphan_age: float = 3600.0,
        attempt_retention: float = 7 * 86400.0,
    ) -> None:
        self.url: str = url
        self.node: str = node or socket.gethostname()
        self.owner: str = f"{self.node}/{os.getpid()}.{secrets.token_hex(3)}"
        self.chunk_size: int = chunk_size
        self.doubt_wait: float = doubt_wait
        self.sweep_every: float = sweep_every
        self.orphan_age: float = orphan_age
        self.attempt_retention: float = attempt_retention
        self.link: Link = Link(
            url, pool_size=pool_size, timeout=timeout, on_notify=self._wake, resume=self._resume
        )
        self._work = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._held: set[str] = set()  # messages leased to this process
        self._slots: dict[str, set[int]] = {}  # destination slots held by this process
        self._lease_seconds = 60.0
        self._in_doubt: set[str] = set()  # answered 451 though their commit may have landed

    def __repr__(self) -> str:
        return f"PostgresQueue({safe_url(self.url)!r}, node={self.node!r})"

    @property
    def connected(self) -> bool:
        return self.link.up.is_set()

    @property
    def commits(self) -> int:
        return self.link.commits

    @property
    def reconnects(self) -> int:
        return self.link.reconnects

    # --- life cycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create or upgrade the schema (idempotent)."""
        if self.link.is_open:
            return
        await self.link.open()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def close(self) -> None:
        """Finish the writes handed over (bounded), stop the tasks, close the pool."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.link.close()

    async def schema_version(self) -> int:
        """The version of the database's schema (``relay_migrations``)."""
        async with self.link.connection() as conn:
            return await version(conn)

    async def _resume(self, conn: Conn) -> None:
        """After an outage, before anything else: remove the rows answered 451 whose
        commit did land, and renew what this process holds (an outage must not let the
        leases lapse)."""
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
        # Slots given back while the database was away are still ours there: free them.
        destinations, slots = self._slot_keys()
        await conn.execute(
            "UPDATE relay_slots SET owner = NULL, lease_until = 0 WHERE owner = %s AND"
            " (destination, slot) NOT IN (SELECT * FROM unnest(%s::text[], %s::int[]))",
            (self.owner, destinations, slots),
        )
        await conn.execute(_RENEW_SLOTS, (self._lease_seconds, self.owner, destinations, slots))

    def _slot_keys(self) -> tuple[list[str], list[int]]:
        """The slots this process holds, as two arrays (destination, slot)."""
        pairs = [(d, s) for d, held in self._slots.items() for s in held]
        return [d for d, _ in pairs], [s for _, s in pairs]

    # --- putting ------------------------------------------------------------------------

    def new_body(self) -> BodyWriter:
        """A writer for a body: chunks go to ``relay_bodies`` as they fill."""
        return _Body(self)

    async def _write_chunk(self, message_id: str, seq: int, data: bytes) -> None:
        async with self.link.connection() as conn, conn.pipeline(), conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit TO off")
            await conn.execute(_INSERT_BODY, (message_id, seq, data))

    async def _forget_chunks(self, message_id: str) -> None:
        """Best effort: chunks left behind are swept later (``orphan_age``)."""
        with contextlib.suppress(QueueError):
            async with self.link.connection() as conn:
                await conn.execute("DELETE FROM relay_bodies WHERE message_id = %s", (message_id,))

    async def put(self, envelope: Envelope, body: Any, *, lease: float | None = None) -> QueueEntry:
        """Envelope and body in the next shared commit; 250 may be answered once this returns.

        Raises QueueError (451) when the database is unreachable, at once, or when a commit
        under way when the connection broke did not land."""
        assert isinstance(body, _Body)
        if not self.link.up.is_set():
            await body.abort()
            raise NotSent(f"queue database {safe_url(self.url)} unreachable")
        now = time.time()
        tail = body.tail()
        streamed = body.chunks
        chunks = streamed + (1 if tail else 0)
        lease = lease or 0.0
        owner = self.owner if lease else None
        row = {
            "id": body.id,
            "sender": envelope.sender,
            "envelope": envelope.dumps(),
            "size": body.size,
            "chunks": chunks,
            "now": now,
            "lease": lease,
            "owner": owner,
            "tail": tail,
        }

        async def insert(conn: Conn) -> None:
            if not streamed:
                await conn.execute(_PUT, row)
                return
            if tail:
                await conn.execute(_INSERT_BODY, (body.id, streamed, tail))
            await conn.execute("SELECT relay_check_body(%s, %s)", (body.id, chunks))
            await conn.execute(_INSERT_MESSAGE, row)

        try:
            await self.link.submit(insert, notify=not lease)
        except NotSent:
            await body.abort()
            raise
        except Lost as error:
            if not await self._settle_doubt(body.id):
                raise QueueError(f"{error}; the message was not stored") from error
        except QueueError:
            await body.abort()
            raise
        if lease:
            self._held.add(body.id)
        else:
            self._wake()
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
        if await self.link.wait_up(self.doubt_wait):
            try:
                row = await self.link.read_one(
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
        """Up to ``n`` due messages, oldest due first, leased to this process with ``SELECT ...
        FOR UPDATE SKIP LOCKED`` (other nodes skip them), small bodies included; none while
        the database is away."""
        if not self.link.up.is_set():
            return []  # nothing can be taken while the database is away; no error flood
        self._lease_seconds = lease
        rows = await self.link.read_all(
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
            entry = QueueEntry.from_row(row)
            if row[10] == 0:
                entry.body = b""
            elif row[11] is not None:
                entry.body = bytes(row[11])
            entries.append(entry)
            self._held.add(entry.id)
        return entries

    async def renew(self, ids: Sequence[str], lease: float) -> None:
        """Extend this process's leases of ``ids`` and its destination slots (skipped while
        the database is away: they are renewed when it is back)."""
        self._lease_seconds = lease
        if not self.link.up.is_set():
            return  # renewed by _resume as soon as the database is back
        wanted = list(ids)
        owner = self.owner
        destinations, slots = self._slot_keys()

        async def run(conn: Conn) -> None:
            if wanted:
                await conn.execute(
                    f"UPDATE relay_messages SET lease_until = {NOW} + %s"
                    " WHERE id = ANY(%s) AND lease_owner = %s",
                    (lease, wanted, owner),
                )
            if slots:
                await conn.execute(_RENEW_SLOTS, (lease, owner, destinations, slots))

        with contextlib.suppress(Lost):
            await self.link.submit(run)

    async def read_body(self, entry: QueueEntry) -> bytes:
        """The body from its chunks (waits up to 30 s for a lost database); a body with
        missing chunks marks the message corrupt and raises QueueError."""
        if entry.body is not None:
            return entry.body
        deadline = time.monotonic() + 30
        while True:
            try:
                rows = await self.link.read_all(
                    "SELECT data FROM relay_bodies WHERE message_id = %s ORDER BY seq",
                    (entry.id,),
                )
                found = await self.link.read_one(
                    "SELECT chunks FROM relay_messages WHERE id = %s", (entry.id,)
                )
                break
            except Lost:
                if time.monotonic() > deadline:
                    raise
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.link.up.wait(), max(deadline - time.monotonic(), 0))
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

        await self.link.submit(mark)
        self._held.discard(entry.id)
        raise QueueError(f"{entry.id}: {problem}")

    async def record(
        self,
        entry: QueueEntry,
        results: Sequence[RecipientResult],
        next_attempt: float | None,
        error: str | None = None,
    ) -> bool:
        """Store one attempt (a row per recipient in ``relay_attempts``) and end the lease;
        delete the message once no recipient is pending. Waits out an outage. False when
        the message was deleted while it was being delivered and recipients were left
        pending (nothing is stored then; a final attempt is always True, as its write may
        be a retry of one that committed before the connection was lost)."""
        done = entry.apply(results, error)
        if not done:
            entry.next_attempt = next_attempt if next_attempt is not None else time.time()
            entry.lease_until = None
        values = {
            "id": entry.id,
            "node": self.owner,
            "rcpt": [r.address for r in results],
            "outcome": [r.outcome.value for r in results],
            "status": [r.status for r in results],
            "diagnostic": [r.diagnostic for r in results],
            "mta": [r.remote_mta for r in results],
            "envelope": entry.envelope.dumps(),
            "attempts": entry.attempts,
            "next": entry.next_attempt,
            "error": error,
        }

        async def run(conn: Conn) -> bool:
            if done:
                await conn.execute(_DONE, values)
                return True
            # A deferral (not the common case) waits for its answer: whether the message
            # was still there (not deleted meanwhile) is not known in the pipeline before.
            cur = await conn.execute(_DEFERRED + " RETURNING 1", values)
            return bool(await cur.fetchall())

        # Waits out an outage: a delivery that happened must be written down, or the
        # message would go out again when its lease expires.
        recorded = await self.link.durably(run)
        self._held.discard(entry.id)
        return recorded

    async def release(self, entry: QueueEntry) -> None:
        """End a lease without an attempt; the message is due for any node at once (NOTIFY)."""
        self._held.discard(entry.id)
        if not self.link.up.is_set():
            return  # the lease expires by itself

        async def run(conn: Conn) -> None:
            await conn.execute(
                "UPDATE relay_messages SET lease_until = 0, lease_owner = NULL"
                " WHERE id = %s AND lease_owner = %s",
                (entry.id, self.owner),
            )

        with contextlib.suppress(Lost):
            await self.link.submit(run, notify=True)

    # --- destination slots (the per-destination limit across nodes) --------------------

    async def take_slots(
        self, destination: str, want: int, limit: int, lease: float
    ) -> Sequence[int]:
        """Free rows of ``relay_slots`` (made on first use), taken with SKIP LOCKED: the
        limit holds across every node; none while the database is away."""
        if not self.link.up.is_set():
            return []
        args = {"d": destination, "limit": limit, "want": want, "owner": self.owner, "lease": lease}
        try:
            async with self.link.connection() as conn, conn.transaction():
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
        except Lost:
            return []
        if slots:
            self._slots.setdefault(destination, set()).update(slots)
        return slots

    async def give_slots(self, destination: str, slots: Sequence[int]) -> None:
        """Free slots taken with ``take_slots`` (they expire by themselves otherwise)."""
        held = self._slots.get(destination)
        if held is not None:
            held.difference_update(slots)
            if not held:
                del self._slots[destination]
        if not self.link.up.is_set() or not slots:
            return  # they expire by themselves
        with contextlib.suppress(QueueError):
            async with self.link.connection() as conn, conn.transaction():
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

        count = await self.link.submit(run, notify=True)
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

        await self.link.submit(run)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every)
            if self.link.up.is_set():
                try:
                    await self.sweep()
                except QueueError as error:
                    log.warning("queue sweep failed: %s", error)

    async def delete(self, queue_id: str | None) -> int:
        """Delete one message (or every one with None) and its body; returns how many."""
        where, args = ("", ()) if queue_id is None else (" WHERE id = %s", (queue_id,))

        async def run(conn: Conn) -> int:
            cur = await conn.execute("DELETE FROM relay_messages" + where + " RETURNING id", args)
            ids = [r[0] for r in await cur.fetchall()]
            if ids:
                await conn.execute("DELETE FROM relay_bodies WHERE message_id = ANY(%s)", (ids,))
            return len(ids)

        return await self.link.submit(run)

    async def retry(self, queue_id: str | None) -> int:
        """Make one message (or every one with None) due now, on every node (NOTIFY)."""
        where, args = ("", ()) if queue_id is None else (" WHERE id = %s", (queue_id,))

        async def run(conn: Conn) -> int:
            cur = await conn.execute(
                f"UPDATE relay_messages SET next_attempt = {NOW}, corrupt = NULL"
                + where
                + " RETURNING 1",
                args,
            )
            return len(await cur.fetchall())

        count = await self.link.submit(run, notify=True)
        self._wake()
        return count

    async def attempts(self, queue_id: str) -> list[dict[str, Any]]:
        """Every attempt recorded for a message (kept ``attempt_retention`` seconds)."""
        rows = await self.link.read_all(
            "SELECT at, node, recipient, outcome, status, diagnostic, remote_mta"
            " FROM relay_attempts WHERE message_id = %s ORDER BY at",
            (queue_id,),
        )
        names = ("at", "node", "recipient", "outcome", "status", "diagnostic", "remote_mta")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def list_json(self) -> Iterator[str]:
        """``queue list --json``'s lines made by the server (``QueueEntry.to_json``'s
        fields), read with a cursor of its own: no Python object per message."""
        try:
            # A named (server-side) cursor lives in a transaction: not autocommit.
            options = {**CONNECT, "autocommit": False}
            with psycopg.connect(self.url, **options) as conn, conn.cursor(name="list") as cur:
                cur.itersize = 2000
                cur.execute(_LIST_JSON)
                for (line,) in cur:
                    yield line
        except psycopg.Error as error:
            raise queue_error(error) from error

    async def list(self) -> list[QueueEntry]:
        """Every queued message, oldest first, without bodies."""
        rows = await self.link.read_all(f"SELECT {_COLUMNS} FROM relay_messages ORDER BY arrival")
        return [QueueEntry.from_row(r) for r in rows]

    async def get(self, queue_id: str) -> QueueEntry | None:
        """One message without its body, or None."""
        row = await self.link.read_one(
            f"SELECT {_COLUMNS} FROM relay_messages WHERE id = %s", (queue_id,)
        )
        return None if row is None else QueueEntry.from_row(row)

    async def counts(self) -> dict[str, int]:
        """Queue depth by state: ``active``, ``deferred``, ``incoming``, ``corrupt``."""
        row = await self.link.read_one(
            "SELECT"
            f" count(*) FILTER (WHERE corrupt IS NULL AND lease_until > {NOW}),"
            f" count(*) FILTER (WHERE corrupt IS NULL AND lease_until <= {NOW} AND attempts > 0),"
            f" count(*) FILTER (WHERE corrupt IS NULL AND lease_until <= {NOW} AND attempts = 0),"
            " count(*) FILTER (WHERE corrupt IS NOT NULL) FROM relay_messages"
        )
        assert row is not None
        return dict(zip(("active", "deferred", "incoming", "corrupt"), row, strict=True))

    async def wait_for_work(self, timeout: float) -> None:
        """Return on a NOTIFY from any node (new mail, a retry, a release) or after ``timeout``."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
        self._work.clear()

    def _wake(self) -> None:
        self._work.set()


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
