"""The embedded queue: a spool folder with a SQLite database (WAL) and a folder of bodies.

The event loop writes: the operations asked for in one turn of it (puts, records,
leases) go into one transaction, committed with ``synchronous=NORMAL`` (no fsync: a few
tens of microseconds). What makes a commit durable, an ``fdatasync`` of the WAL, is done
by a syncer thread (``ferrosmtp._core.Syncer``, Rust: it never waits for the GIL) which
wakes the loop when done; a put is answered only then, so its 250 still follows the
fsync. Operations that come while a sync is in flight wait for it, and under load
(the last commit carried two puts or more) commits are at least ``COMMIT_INTERVAL``
apart: concurrent sessions share one transaction and one fsync (group commit), and a
transaction's pages, locks and WAL frames are paid once per batch instead of once per
message. Measured with 20 sessions: 0.75 -> 0.6 ms of relay CPU per 1 KiB message, and
a single client waits no longer than before (one put: committed at once). Checkpoints
(the WAL copied into the database) run in a worker thread on a connection of their own,
which syncs both files as ``NORMAL`` does.

The writers of several processes on one spool (``--workers``) take turns on a lock file
(``queue.db-turn``); a commit that finds it taken waits for it in a worker thread, so
the loop never sleeps on another process.

Small bodies (``inline_limit``, 64 KiB by default) stay in memory while they arrive and
go into their row; bigger ones go to ``bodies/ID``, fsynced before their row commits,
and the folder is fsynced with the WAL. Up to ``spill_limit`` (256 KiB) a body is
written in one go once it has all arrived, beyond that streamed as it arrives; either
way the syncer thread writes what is left and fsyncs the file. A body file without a row
(a crash mid-message) is removed by ``recover``; a row whose file is missing or short is
marked corrupt: listed by ``queue list``, never delivered, never fatal.

What an attempt changes (``record``: a delivered message's row deleted, a deferred one's
updated) needs no fsync of its own: lost in a crash, it only means a message delivered
again (at least once, as a crash mid-delivery) or retried early. So records do not start
transactions: they wait (``LAZY_DELAY`` at most) to ride in the next one a put starts,
and are answered at its commit, without waiting for a sync (still durable across a
kill -9: the OS holds the writes). A delivered message's body file is unlinked by the
syncer once that commit is synced: a file must not go while its row may come back.
Leases are not synced either: ``recover`` ends them after a crash anyway.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ferrosmtp import codec
from ferrosmtp.relay.limits import LocalSlots
from ferrosmtp.relay.queue import (
    WRITTEN,
    Envelope,
    QueueEntry,
    QueueError,
    QueueFull,
    RecipientResult,
    new_queue_id,
)

__all__ = ["SqliteQueue"]

log: logging.Logger = logging.getLogger("ferrosmtp.relay.queue")

_T = TypeVar("_T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    envelope TEXT NOT NULL,
    size INTEGER NOT NULL,
    arrival REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    corrupt TEXT,
    body_file TEXT,
    body BLOB
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (next_attempt) WHERE corrupt IS NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema', '1');
"""

_COLUMNS = (
    "id, sender, envelope, size, arrival, attempts, next_attempt, lease_until, last_error,"
    " corrupt, body_file"
)
_SQLITE_FULL = {13}  # SQLITE_FULL
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Transactions between two checkpoints (each copies the WAL into the database; a
# transaction writes a few pages: about SQLite's default of 1000 pages).
CHECKPOINT_EVERY = 200
# Under load, commits at least this far apart (seconds). Measured with smtp-source's 20
# sessions, 1 KiB messages, one process: 0 -> 1,290 msgs/s and 0.82 ms CPU a message,
# 3 ms -> 1,380 and 0.73, 5 ms -> 1,710 and 0.61, 10 ms -> 1,600 and 0.57 (fewer
# sessions ready at each commit); with two workers 5 ms was best too.
COMMIT_INTERVAL = 0.005
# How long a record may wait for a put's transaction before it is committed alone.
LAZY_DELAY = 0.01
# Bodies up to this size go into their row, bigger ones into files (benches/spool.py:
# a body in its row is written about four times over (the WAL, the database at the
# checkpoint, pages around it) with one fsync per batch; a body in a file once, with an
# fsync of its own. Measured: rows cost less CPU and time up to 64 KiB, files from there).
INLINE_LIMIT = 64 << 10
# Bodies up to this size stay in memory while they arrive: a body file is then created,
# written and fsynced in one go by the syncer thread (measured at 100 KiB: creating the
# file and writing each piece on the event loop cost 0.5 ms of its time a message, some
# of it waiting on the file system's journal), and a message delivered at once is not
# read back. Bigger ones go to their file as they arrive: memory per message stays
# bounded whatever its size.
SPILL_LIMIT = 256 << 10


def _storage_error(error: BaseException) -> QueueError:
    if isinstance(error, QueueError):
        return error
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return QueueFull(f"spool full: {error.strerror}")
    if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) in (
        _SQLITE_FULL
    ):
        return QueueFull(f"spool full: {error}")
    return QueueError(f"spool write failed: {error}")


def connect(path: Path, *, timeout: float = 10.0, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection with the spool's settings: WAL, fsync on every commit (``FULL``);
    the spool's own writer commits with ``NORMAL`` and syncs the WAL itself (``_Spool``)."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    # Debian builds SQLite with SECURE_DELETE: every delivered message's body would be
    # overwritten with zeros, doubling the writes of a big message. Postfix only unlinks
    # its queue files; so do we (the pages are reused).
    conn.execute("PRAGMA secure_delete=OFF")
    return conn


Settled = list[tuple["asyncio.Future[Any]", Any, "BaseException | None"]]


class _Op:
    __slots__ = ("durable", "fn", "future", "new_file", "undo", "unlink")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any],
        new_file: bool,
        unlink: str | None,
        durable: bool,
        undo: Callable[[sqlite3.Connection], Any] | None = None,
    ) -> None:
        self.fn = fn
        self.future = future
        self.new_file = new_file
        self.unlink = unlink  # a file the syncer unlinks once the commit is synced
        self.durable = durable  # answered once the commit is synced
        self.undo = undo  # what takes ``fn`` back if that sync fails


class _Spool:
    """The spool's writer: transactions on the event loop, their fsyncs and the body
    files in a Syncer thread (the module's docstring says when it commits and why). A
    commit synced this way is as durable as one made with ``synchronous=FULL``, which
    syncs the WAL at each commit."""

    def __init__(self, path: Path, bodies: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self.loop = loop
        self.conn = connect(path, timeout=5.0, synchronous="NORMAL")
        self.conn.execute("PRAGMA wal_autocheckpoint=0")  # _checkpoint() does them
        self.conn.executescript(SCHEMA)
        self.turn = _open_turn(path)
        self.syncer = codec.Syncer(f"{path}-wal", str(bodies))
        self.pending: list[_Op] = []  # to commit at the end of this turn of the loop
        self.lazy: list[_Op] = []  # records: they ride in the next transaction
        # Committed, waiting for their sync: (ticket, those operations and their results).
        self.waiting: collections.deque[tuple[int, list[tuple[_Op, Any]]]] = collections.deque()
        # Body files being written and fsynced by the syncer: (ticket, who waits).
        self.storing: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self.scheduled: asyncio.Handle | None = None  # _commit at the end of this turn
        self.flush: asyncio.TimerHandle | None = None  # _commit for records, if none comes
        self.turn_wait: asyncio.Future[Any] | None = None
        self.last_commit = 0.0
        self.last_batch = 0  # durable operations in the last commit
        self.batches = 0  # transactions committed (group commit: fewer than operations)
        self.since_checkpoint = 0
        self.checkpointing = False
        self.checkpointer: sqlite3.Connection | None = None
        loop.add_reader(self.syncer.fileno(), self._synced)

    def store(self, path: str, data: bytes, append: bool) -> asyncio.Future[None]:
        """Have the syncer write ``data`` to ``path`` (a new file, or the end of one) and
        fsync it; the future fails with the OSError if it cannot."""
        future = self.loop.create_future()
        self.storing.append((self.syncer.store(path, data, append), future))
        return future

    def submit(self, op: _Op, lazy: bool) -> None:
        if lazy:
            self.lazy.append(op)
            if self.scheduled is None and self.flush is None and self.turn_wait is None:
                self.flush = self.loop.call_later(LAZY_DELAY, self._commit)
            return
        self.pending.append(op)
        self._schedule()

    def _schedule(self) -> None:
        """Commit what is pending at the end of this turn of the loop, unless a sync is
        in flight (the commit made when it ends takes all that came meanwhile) or the
        last commit was less than COMMIT_INTERVAL ago."""
        if self.scheduled is not None or self.turn_wait is not None or self.waiting:
            return
        wait = self.last_commit + COMMIT_INTERVAL - self.loop.time()
        if wait <= 0 or self.last_batch < 2:
            self.scheduled = self.loop.call_soon(self._commit)
        else:
            self.scheduled = self.loop.call_later(wait, self._commit)

    def _commit(self) -> None:
        """Take the turn (see ``_open_turn``) and commit what is waiting."""
        for handle in (self.scheduled, self.flush):  # the records ride in this one
            if handle is not None:
                handle.cancel()
        self.scheduled = self.flush = None
        if not (self.pending or self.lazy):
            return
        if self.turn is not None:
            try:
                fcntl.flock(self.turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process commits: wait for it off the loop
                self.turn_wait = self.loop.run_in_executor(
                    None, fcntl.flock, self.turn, fcntl.LOCK_EX
                )
                self.turn_wait.add_done_callback(self._turn_taken)
                return
            except OSError:
                self.turn = None  # no lock to be had: SQLite's own waiting still applies
        self._commit_now(self.turn is not None)

    def _turn_taken(self, future: asyncio.Future[Any]) -> None:
        self.turn_wait = None
        if future.cancelled():
            return  # the loop is closing: close() commits what is pending
        held = future.exception() is None
        if not held:
            self.turn = None
        self._commit_now(held)

    def _commit_now(self, held: bool) -> None:
        self.last_commit = self.loop.time()
        batch = self.pending
        self.pending = []
        if self.lazy:
            batch.extend(self.lazy)
            self.lazy = []
        try:
            settled = self._transaction(batch)
        finally:
            if held:
                assert self.turn is not None
                with contextlib.suppress(OSError):
                    fcntl.flock(self.turn, fcntl.LOCK_UN)
        self.batches += 1
        durable: list[tuple[_Op, Any]] = []
        now: Settled = []
        folder = False
        for op, outcome in zip(batch, settled, strict=True):
            if outcome[2] is None and op.unlink is not None:
                try:  # by the syncer, after a sync that makes this commit durable
                    self.syncer.remove(op.unlink)
                except OSError:
                    pass  # closed: recover() removes a body file without a row
            if op.durable and outcome[2] is None:
                durable.append((op, outcome[1]))
                folder = folder or op.new_file
            else:
                now.append(outcome)
        self.last_batch = len(durable)
        if durable:
            try:
                self.waiting.append((self.syncer.request(folder), durable))
            except OSError as error:
                now.extend((op.future, None, error) for op, _ in durable)
        _settle(now)
        self.since_checkpoint += 1
        if self.since_checkpoint >= CHECKPOINT_EVERY and not self.checkpointing:
            self.since_checkpoint = 0
            self.checkpointing = True
            self.loop.run_in_executor(None, self._checkpoint)

    def _transaction(self, batch: list[_Op]) -> Settled:
        """Run ``batch`` in one transaction; if one operation fails it, each alone."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [op.fn(conn) for op in batch]
            conn.execute("COMMIT")
        except BaseException as error:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if len(batch) == 1:
                return [(batch[0].future, None, error)]
        else:
            return [(op.future, result, None) for op, result in zip(batch, results, strict=True)]
        # One operation failed the batch: run each alone so only the culprit fails.
        settled: Settled = []
        for op in batch:
            settled.extend(self._transaction([op]))
        return settled

    def _synced(self) -> None:
        """The syncer finished tickets: answer the stores and the operations they made
        durable."""
        done, failed = self.syncer.completed()
        errors = dict(failed)
        storing = self.storing
        while storing and storing[0][0] <= done:
            ticket, future = storing.popleft()
            _settle([(future, None, errors.pop(ticket, None))])
        waiting = self.waiting
        while waiting and waiting[0][0] <= done:
            ticket, ops = waiting.popleft()
            error = errors.pop(ticket, None)
            if error is None:
                _settle([(op.future, result, None) for op, result in ops])
                continue
            # Not durable: the client hears 451 and sends it again, so the rows must not
            # stay to be delivered too.
            failure = QueueError(f"spool sync failed: {error}")
            _settle([(op.future, None, failure) for op, _ in ops])
            for op, _ in ops:
                if op.undo is not None:  # best effort: nobody waits for it
                    future = self.loop.create_future()
                    future.add_done_callback(_retrieved)
                    self.submit(_Op(op.undo, future, False, None, False), True)
        for error in errors.values():  # unlinks: a file left is only disk space
            log.warning("spool: cannot remove a body file: %s", error)
        if self.pending:
            self._schedule()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database (in a worker thread; syncs both files)."""
        try:
            if self.checkpointer is None:
                self.checkpointer = connect(self.path, synchronous="NORMAL")
            self.checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as error:
            log.warning("spool %s: checkpoint failed: %s", self.path, error)
        finally:
            self.checkpointing = False

    async def close(self) -> None:
        """Commit what is waiting, wait for its sync, and stop."""
        for handle in (self.scheduled, self.flush):
            if handle is not None:
                handle.cancel()
        self.scheduled = self.flush = None
        while self.turn_wait is not None:
            await asyncio.sleep(0.001)
        if self.pending or self.lazy:
            self._commit()
            while self.turn_wait is not None:
                await asyncio.sleep(0.001)
        while self.waiting or self.storing:
            await asyncio.sleep(0.001)
        while self.checkpointing:
            await asyncio.sleep(0.001)
        self.loop.remove_reader(self.syncer.fileno())
        await asyncio.to_thread(self.syncer.close)
        if self.turn is not None:
            os.close(self.turn)
        self.conn.close()
        if self.checkpointer is not None:
            self.checkpointer.close()


def _open_turn(db_path: Path) -> int | None:
    """The lock file the writers of one spool take turns on (``queue.db-turn``).

    The processes of ``--workers`` (and ``ferrosmtp queue`` commands) each have a writer.
    SQLite alone would let one wait for the other's write lock by sleeping and polling
    (1, 2, 5, 10... ms): measured with two workers, a writer spent as long waiting in
    BEGIN IMMEDIATE as committing, up to 88 ms at once. ``flock`` instead wakes the
    waiter the moment the lock is free, and the waiter's batch has grown meanwhile. None
    when the file cannot be opened (a read-only spool): SQLite's own waiting still
    applies."""
    try:
        return os.open(f"{db_path}-turn", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("spool: %s", future.exception())


def _settle(results: Settled) -> None:
    for future, result, error in results:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class _Body:
    """A body being received: in memory up to the spill limit, then in a file."""

    def __init__(self, queue: SqliteQueue) -> None:
        self.id = new_queue_id()
        self.size = 0
        self._queue = queue
        self._chunks: list[bytes] = []
        self._file: Any = None  # a spilled body's file, open while the body arrives
        self._named = False  # a file by this body's name may exist
        self._path = f"{queue._bodies_text}/{self.id}"  # a str join: no Path per message
        self._failed: QueueError | None = None

    @property
    def in_file(self) -> bool:
        return self.size > self._queue.inline_limit

    def write(self, data: bytes) -> Awaitable[None]:
        """Nothing to await: in memory, or in the spilled file's buffer (its fsync comes
        at ``store``)."""
        if self._failed is not None:
            raise self._failed
        self.size += len(data)
        try:
            if self._file is not None:
                self._file.write(data)
                return WRITTEN
            self._chunks.append(data)
            if self.size > self._queue.spill_limit:
                self._file = open(self._path, "xb")
                self._named = True
                self._file.writelines(self._chunks)
                self._chunks = []
        except OSError as error:
            self._failed = _storage_error(error)
            self._forget()
            raise self._failed from error
        return WRITTEN

    def inline(self) -> bytes:
        return b"".join(self._chunks)

    async def store(self, spool: _Spool) -> bytes | None:
        """Have the syncer write the body file (what is still in memory: all of it,
        unless it spilled) and fsync it. Returns the body if it was all in memory."""
        if self._file is None:
            data = b"".join(self._chunks)
            self._chunks = []
            self._named = True
            try:
                await spool.store(self._path, data, False)
            except FileExistsError:
                self._named = False  # another message's file: not ours to remove
                raise
            return data
        spilled, self._file = self._file, None
        spilled.close()  # what Python still buffers goes to the OS; the syncer fsyncs
        await spool.store(self._path, b"", True)
        return None

    async def abort(self) -> None:
        self._forget()

    def _forget(self) -> None:
        self._chunks = []
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._named:
            with contextlib.suppress(OSError):
                os.unlink(self._path)


class SqliteQueue:
    """The queue in a spool folder: ``queue.db`` (SQLite, WAL) and ``bodies/``."""

    def __init__(
        self,
        spool: str | os.PathLike[str],
        *,
        inline_limit: int = INLINE_LIMIT,
        spill_limit: int = SPILL_LIMIT,
    ) -> None:
        self.spool: Path = Path(spool)
        self.bodies: Path = self.spool / "bodies"
        self._bodies_text = str(self.bodies)
        self.db_path: Path = self.spool / "queue.db"
        self.inline_limit = inline_limit
        self.spill_limit = max(spill_limit, inline_limit)
        self._spool_writer: _Spool | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._work = asyncio.Event()
        self._slots = LocalSlots()  # per process: the workers of one spool count their own

    def __repr__(self) -> str:
        return f"SqliteQueue({str(self.spool)!r})"

    # --- life cycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Create the storage if needed. Idempotent."""
        if self._spool_writer is not None:
            return
        self.bodies.mkdir(parents=True, exist_ok=True, mode=0o700)
        loop = asyncio.get_running_loop()
        try:
            spool = await asyncio.to_thread(_Spool, self.db_path, self.bodies, loop)
        except (OSError, sqlite3.Error) as error:
            raise QueueError(f"cannot open the spool {self.spool}: {error}") from error
        self._spool_writer = spool

    async def close(self) -> None:
        """Finish pending writes and release resources."""
        spool, self._spool_writer = self._spool_writer, None
        if spool is not None:
            await spool.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _writer(self) -> _Spool:
        if self._spool_writer is None:
            raise QueueError("the queue is not open")
        return self._spool_writer

    async def _run(
        self,
        fn: Callable[[sqlite3.Connection], _T],
        new_file: bool = False,
        unlink: str | None = None,
        *,
        lazy: bool = False,
        durable: bool = True,
        undo: Callable[[sqlite3.Connection], Any] | None = None,
    ) -> _T:
        """Run ``fn`` in the next transaction (committed at the end of this turn of the
        loop) and return once it is synced to disk; ``durable=False``: once committed;
        ``lazy``: in the next transaction anybody starts (within ``LAZY_DELAY``), without
        waiting for a sync. ``undo`` takes ``fn`` back if the sync fails; ``unlink``
        names a file the syncer removes once the commit is synced."""
        spool = self._writer()
        future: asyncio.Future[_T] = spool.loop.create_future()
        spool.submit(_Op(fn, future, new_file, unlink, durable and not lazy, undo), lazy)
        return await future

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read on the reader connection (in a worker thread)."""
        with self._reader_lock:
            if self._reader is None:
                self._reader = connect(self.db_path)
            return fn(self._reader)

    async def recover(self) -> int:
        """At relay start, when no other process delivers from this queue: end every lease (messages
        left mid-delivery by a crash are due again). Returns how many."""

        def run(conn: sqlite3.Connection) -> tuple[int, set[str]]:
            count = conn.execute(
                "UPDATE messages SET lease_until = 0 WHERE lease_until > 0"
            ).rowcount
            named = conn.execute("SELECT body_file FROM messages WHERE body_file IS NOT NULL")
            files = {r[0] for r in named}
            return count, files

        count, files = await self._run(run)
        # Body files without a row: messages cut off before their 250 (never acknowledged).
        for path in self.bodies.iterdir():
            if path.name not in files:
                with contextlib.suppress(OSError):
                    path.unlink()
        if count:
            log.info("spool %s: %d message(s) left mid-delivery are due again", self.spool, count)
        return count

    # --- putting ------------------------------------------------------------------------

    def new_body(self) -> _Body:
        """A writer for a message body about to arrive."""
        return _Body(self)

    async def put(self, envelope: Envelope, body: Any, *, lease: float | None = None) -> QueueEntry:
        """Store envelope and body durably (fsync or commit) and return the entry.  ``lease``
        (seconds) stores the message already leased to the caller, who delivers it at once (the
        entry then carries the body when it is small). Raises QueueFull when out of space,
        QueueError on any other failure; nothing is kept then."""
        assert isinstance(body, _Body)
        now = time.time()
        inline = None if body.in_file else body.inline()
        kept = None
        try:
            if inline is None:
                # The syncer creates, writes and fsyncs the file (the event loop never
                # waits on the file system's journal for a body up to the spill limit).
                kept = await body.store(self._writer())
            lease_until = now + lease if lease else 0.0
            row = (
                body.id,
                envelope.sender,
                envelope.dumps(),
                body.size,
                now,
                now,
                lease_until,
                body.id if inline is None else None,
                inline,
            )

            def insert(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "INSERT INTO messages (id, sender, envelope, size, arrival, next_attempt,"
                    " lease_until, body_file, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )

            def undo(conn: sqlite3.Connection) -> None:
                conn.execute("DELETE FROM messages WHERE id = ?", (body.id,))

            await self._run(insert, new_file=inline is None, undo=undo)
        except BaseException as error:
            await body.abort()
            if isinstance(error, Exception):
                raise _storage_error(error) from error
            raise
        if not lease:
            self._work.set()
        return QueueEntry(
            id=body.id,
            envelope=envelope,
            size=body.size,
            arrival=now,
            next_attempt=now,
            lease_until=lease_until or None,
            # Delivered at once: no need to read back what is still in memory.
            body=inline if inline is not None or not lease else kept,
        )

    # --- delivering ---------------------------------------------------------------------

    async def lease(self, n: int, lease: float) -> list[QueueEntry]:
        """Up to ``n`` messages due now (next attempt passed, no live lease), leased for ``lease``
        seconds, oldest due first."""

        def run(conn: sqlite3.Connection) -> list[QueueEntry]:
            now = time.time()
            rows = conn.execute(
                f"SELECT {_COLUMNS}, body FROM messages WHERE next_attempt <= ?"
                " AND lease_until <= ? AND corrupt IS NULL ORDER BY next_attempt LIMIT ?",
                (now, now, n),
            ).fetchall()
            if not rows:
                return []
            until = now + lease
            conn.executemany(
                "UPDATE messages SET lease_until = ? WHERE id = ?", [(until, r[0]) for r in rows]
            )
            entries = []
            for row in rows:
                entry = QueueEntry.from_row(row)
                entry.lease_until = until
                entry.body = row[11]
                entries.append(entry)
            return entries

        # Not synced: a lease lost in a crash is ended by recover() anyway.
        return await self._run(run, durable=False)

    async def renew(self, ids: Sequence[str], lease: float) -> None:
        """Extend the leases of messages still being delivered."""
        until = time.time() + lease
        await self._run(
            lambda conn: conn.executemany(
                "UPDATE messages SET lease_until = ? WHERE id = ? AND lease_until > 0",
                [(until, i) for i in ids],
            ),
            durable=False,
        )

    async def read_body(self, entry: QueueEntry) -> bytes:
        """The body of a leased message. Raises QueueError if it is missing or corrupt (the backend
        then marks the message corrupt: listed, never delivered)."""
        if entry.body is not None:
            return entry.body
        found = await asyncio.to_thread(self._read_body, entry)
        if found is None:
            raise QueueError(f"{entry.id}: no longer queued")
        if isinstance(found, bytes):
            return found
        problem = found
        await self._run(
            lambda conn: conn.execute(
                "UPDATE messages SET corrupt = ?, last_error = ?, lease_until = 0 WHERE id = ?",
                (problem, problem, entry.id),
            )
        )
        raise QueueError(f"{entry.id}: {problem}")

    def _read_body(self, entry: QueueEntry) -> bytes | str | None:
        """The body from its file (a body file is named after its message), else from
        its row (in a worker thread): the body, what is wrong with it, or None when the
        message is no longer queued."""
        try:
            with open(f"{self._bodies_text}/{entry.id}", "rb") as f:
                data = f.read()
        except FileNotFoundError as error:
            row = self._read(
                lambda conn: conn.execute(
                    "SELECT body_file, body FROM messages WHERE id = ?", (entry.id,)
                ).fetchone()
            )
            if row is None:
                return None
            if row[1] is not None:
                return bytes(row[1])
            return f"body file unreadable: {error.strerror}"
        except OSError as error:
            return f"body file unreadable: {error.strerror}"
        return data if len(data) == entry.size else f"body file has {len(data)} octets"

    async def record(
        self,
        entry: QueueEntry,
        results: Sequence[RecipientResult],
        next_attempt: float | None,
        error: str | None = None,
    ) -> bool:
        """Store one attempt: per-recipient outcomes, ``attempts`` + 1, the last error and the next
        attempt; end the lease. The message is deleted when no recipient is pending any more
        (``next_attempt`` is then ignored). False when the message was deleted (``queue
        delete``) while it was being delivered: nothing is stored, it stays deleted."""
        if entry.apply(results, error):
            # The body file (if any) goes once the row's deletion is synced, unlinked by
            # the syncer: an unlink can wait on the file system's journal, which the
            # event loop must not. (A body in memory may still have a file: one over the
            # inline limit, handed over by put() for delivery.)
            in_row = entry.body is not None and entry.size <= self.inline_limit
            count = await self._run(
                lambda conn: (
                    conn.execute("DELETE FROM messages WHERE id = ?", (entry.id,)).rowcount
                ),
                unlink=None if in_row else f"{self._bodies_text}/{entry.id}",
                lazy=True,
            )
            return bool(count)
        entry.next_attempt = next_attempt if next_attempt is not None else time.time()
        entry.lease_until = None
        values = (
            entry.envelope.dumps(),
            entry.attempts,
            entry.next_attempt,
            error,
            entry.id,
        )
        count = await self._run(
            lambda conn: (
                conn.execute(
                    "UPDATE messages SET envelope = ?, attempts = ?, next_attempt = ?,"
                    " last_error = ?, lease_until = 0 WHERE id = ?",
                    values,
                ).rowcount
            ),
            lazy=True,
        )
        return bool(count)

    async def release(self, entry: QueueEntry) -> None:
        """End a lease without recording an attempt (shutting down)."""
        await self._run(
            lambda conn: conn.execute(
                "UPDATE messages SET lease_until = 0 WHERE id = ?", (entry.id,)
            )
        )

    # --- administration -----------------------------------------------------------------

    async def delete(self, queue_id: str | None) -> int:
        """Delete one message (or every one with None); returns how many."""

        def run(conn: sqlite3.Connection) -> list[str | None]:
            where, args = ("", ()) if queue_id is None else (" WHERE id = ?", (queue_id,))
            files = [r[0] for r in conn.execute("SELECT body_file FROM messages" + where, args)]
            conn.execute("DELETE FROM messages" + where, args)
            return files

        files = await self._run(run)
        for name in files:
            if name:
                with contextlib.suppress(OSError):
                    (self.bodies / name).unlink()
        return len(files)

    async def retry(self, queue_id: str | None) -> int:
        """Make one message (or every one with None) due now; returns how many."""
        now = time.time()
        where, args = ("", ()) if queue_id is None else (" WHERE id = ?", (queue_id,))
        count = await self._run(
            lambda conn: (
                conn.execute(
                    "UPDATE messages SET next_attempt = ?, corrupt = NULL" + where, (now, *args)
                ).rowcount
            )
        )
        self._work.set()
        return int(count)

    def _check_file(self, entry: QueueEntry, name: str | None) -> None:
        if entry.corrupt is not None or name is None:
            return
        try:
            size = (self.bodies / name).stat().st_size
        except OSError:
            entry.corrupt = "body file missing"
            return
        if size != entry.size:
            entry.corrupt = f"body file has {size} octets, {entry.size} expected"

    def _list(self, where: str = "", args: tuple[Any, ...] = ()) -> list[QueueEntry]:
        def run(conn: sqlite3.Connection) -> list[QueueEntry]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM messages{where} ORDER BY rowid", args
            ).fetchall()
            entries = []
            for row in rows:
                entry = QueueEntry.from_row(row)
                self._check_file(entry, row[10])
                entries.append(entry)
            return entries

        try:
            return self._read(run)
        except sqlite3.Error as error:
            raise QueueError(f"cannot read the spool {self.spool}: {error}") from error

    def list_json(self) -> Iterator[str]:
        """``queue list --json``'s lines, made by SQLite's JSON functions: a queue of
        100,000 messages lists in about a second (no Python object per message). The
        same fields as ``QueueEntry.to_json``."""
        now = time.time()
        conn = connect(self.db_path)
        try:
            rows = conn.execute(
                "SELECT json_object('id', id, 'sender', sender, 'recipients',"
                " (SELECT json_group_array(json_extract(r.value, '$.address'))"
                "  FROM json_each(envelope, '$.rcpt') AS r"
                "  WHERE json_extract(r.value, '$.outcome') IS NULL),"
                " 'size', size, 'arrival', arrival, 'attempts', attempts,"
                " 'next_attempt', next_attempt, 'last_error', last_error,"
                " 'leased', json(CASE WHEN lease_until > ? THEN 'true' ELSE 'false' END),"
                " 'corrupt', corrupt), body_file, size, corrupt"
                " FROM messages ORDER BY rowid",  # insertion order: arrival order, no sort
                (now,),
            )
            for line, name, size, corrupt in rows:
                if name is not None and corrupt is None:
                    entry = QueueEntry("", Envelope("", []), size, 0.0)
                    self._check_file(entry, name)
                    if entry.corrupt is not None:
                        data = json.loads(line)
                        data["corrupt"] = entry.corrupt
                        line = json.dumps(data, ensure_ascii=False)
                yield line
        except sqlite3.Error as error:
            raise QueueError(f"cannot read the spool {self.spool}: {error}") from error
        finally:
            conn.close()

    async def list(self) -> list[QueueEntry]:
        """Every queued message, oldest first, without bodies."""
        return await asyncio.to_thread(self._list)

    async def get(self, queue_id: str) -> QueueEntry | None:
        """One message without its body, or None."""
        found = await asyncio.to_thread(self._list, " WHERE id = ?", (queue_id,))
        return found[0] if found else None

    async def counts(self) -> dict[str, int]:
        """Queue depth by state: ``active`` (leased), ``deferred`` (tried before), ``incoming``
        (never tried), ``corrupt``."""

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            now = time.time()
            row = conn.execute(
                "SELECT"
                " COALESCE(SUM(corrupt IS NULL AND lease_until > ?), 0),"
                " COALESCE(SUM(corrupt IS NULL AND lease_until <= ? AND attempts > 0), 0),"
                " COALESCE(SUM(corrupt IS NULL AND lease_until <= ? AND attempts = 0), 0),"
                " COALESCE(SUM(corrupt IS NOT NULL), 0) FROM messages",
                (now, now, now),
            ).fetchone()
            return dict(zip(("active", "deferred", "incoming", "corrupt"), row, strict=True))

        return await asyncio.to_thread(self._read, run)

    async def wait_for_work(self, timeout: float) -> None:
        """Return when new mail may be due (a put, a retry) or after ``timeout``."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
        self._work.clear()

    async def take_slots(
        self, destination: str, want: int, limit: int, lease: float
    ) -> Sequence[int]:
        """Slots counted in this process (each worker of a spool counts its own)."""
        return await self._slots.take_slots(destination, want, limit, lease)

    async def give_slots(self, destination: str, slots: Sequence[int]) -> None:
        """Free slots taken with ``take_slots``."""
        await self._slots.give_slots(destination, slots)
