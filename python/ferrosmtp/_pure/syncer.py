"""The spool's file work, off the event loop: ``Syncer`` makes commits durable, writes
and fsyncs body files and unlinks them, in batches (the pure twin of
``ferrosmtp._core.Syncer``, ``src/syncer.rs``).

The event loop commits to SQLite itself (a commit without an fsync costs tens of
microseconds) and asks a syncer thread for everything that waits on the disk; each call
returns a ticket:

- ``request(folder)``: an ``fdatasync`` of the WAL file (and an ``fsync`` of the bodies
  folder), covering every commit made before it;
- ``store(path, data, append)``: a body file written (a new one, or the end of one written
  already) and fsynced;
- ``remove(path)``: a body file unlinked once the WAL is synced after it (its row's
  deletion, committed before, is then durable).

The thread takes all the tickets asked for while it worked as one batch: the stores
written, their fsyncs and one sync of the WAL (and the folder), then the removes (the
Rust syncer runs those fsyncs at once, in threads; this one, one after the other). The
loop learns which tickets are finished by reading ``fileno()`` (one byte per batch) and
calling ``completed()``. Concurrent sessions share one fsync.

The Rust syncer's thread never needs the interpreter. This one, a Python thread, waits for
the GIL each time it wakes (up to the switch interval while the loop is busy), and every
batch costs the loop thread hand-offs: measured with the relay, 0.3 ms more CPU per
message. Same API and behaviour, for ``FERROSMTP_BACKEND=pure``.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from typing import NamedTuple

__all__ = ["Syncer"]

# macOS has no fdatasync (fsync syncs the data too); Windows no O_CLOEXEC (the relay, this
# module's one user, needs POSIX anyway, but the codec imports everywhere).
_fdatasync = getattr(os, "fdatasync", os.fsync)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class _Job(NamedTuple):
    ticket: int
    kind: str  # "sync", "store", "remove"
    path: str | os.PathLike[str] | None = None
    data: bytes = b""
    flag: bool = False  # sync: with the folder; store: append


def _error(failure: OSError) -> OSError:
    """The error as the Rust syncer gives it: ``OSError(errno, strerror)``, no file name."""
    code = failure.errno if failure.errno is not None else errno.EIO
    return OSError(code, failure.strerror or os.strerror(code))


def _write(path: str | os.PathLike[str], data: bytes, append: bool) -> int:
    """Write a store's data; returns the open file (its fsync comes with the batch's)."""
    flags = os.O_WRONLY | _CLOEXEC | (os.O_APPEND if append else os.O_CREAT | os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


class Syncer:
    """The spool's file work in a thread of its own (``ferrosmtp.relay.sqlite``): the WAL's
    ``fdatasync`` (and the folder's ``fsync``), body files written and fsynced, body files
    unlinked once the WAL is synced; batched, each call a ticket.
    """

    def __init__(self, file: str | os.PathLike[str], folder: str | os.PathLike[str]) -> None:
        self._wal = os.open(file, os.O_RDONLY | _CLOEXEC)
        self._folder = folder
        self._lock = threading.Condition()
        self._requested = 0  # the last ticket handed out
        self._jobs: list[_Job] = []
        self._done = 0  # every ticket up to this one is finished (or failed)
        self._failed: list[tuple[int, OSError]] = []  # since the last completed()
        self._closing = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="ferrosmtp-syncer", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        """Readable when tickets have finished since the last ``completed()``."""
        return self._wake_r.fileno()

    def _ask(self, kind: str, path: str | os.PathLike[str] | None, data: bytes, flag: bool) -> int:
        with self._lock:
            if self._closing:
                raise OSError("the syncer is closed")
            self._requested += 1
            self._jobs.append(_Job(self._requested, kind, path, data, flag))
            self._lock.notify()
            return self._requested

    def request(self, folder: bool) -> int:
        """Ask for a sync of everything written to the file so far (and of the folder);
        returns its ticket.
        """
        return self._ask("sync", None, b"", folder)

    def store(self, path: str | os.PathLike[str], data: bytes, append: bool = False) -> int:
        """Ask for ``data`` written to ``path`` (a new file; with ``append``, at the end of
        an existing one) and the file fsynced; returns its ticket.
        """
        return self._ask("store", path, data, append)

    def remove(self, path: str | os.PathLike[str]) -> int:
        """Ask for ``path`` unlinked once the file is synced after this call; returns its
        ticket.
        """
        return self._ask("remove", path, b"", False)

    def completed(self) -> tuple[int, list[tuple[int, OSError]]]:
        """``(done, failed)``: tickets up to ``done`` are finished; ``failed`` lists those
        that failed since the last call, each with its ``OSError``.
        """
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            failed, self._failed = self._failed, []
            return self._done, failed

    def close(self) -> None:
        """Finish the tickets asked for, then stop the thread. Idempotent."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join()
        if self._wal >= 0:
            os.close(self._wal)
            self._wal = -1
            self._wake_w.close()

    def _sync(self, folder: bool) -> None:
        _fdatasync(self._wal)
        if folder:
            fd = os.open(self._folder, os.O_RDONLY | _CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._jobs and not self._closing:
                    self._lock.wait()
                if not self._jobs:
                    return
                upto, jobs, self._jobs = self._requested, self._jobs, []
            failed: list[tuple[int, OSError]] = []
            written: list[tuple[int, int]] = []
            for job in jobs:
                if job.kind == "store":
                    assert job.path is not None
                    try:
                        written.append((job.ticket, _write(job.path, job.data, job.flag)))
                    except OSError as failure:
                        failed.append((job.ticket, _error(failure)))
            for ticket, fd in written:
                try:
                    os.fsync(fd)
                except OSError as failure:
                    failed.append((ticket, _error(failure)))
                finally:
                    os.close(fd)
            synced: OSError | None = None
            if any(job.kind != "store" for job in jobs):
                try:
                    self._sync(any(job.kind == "sync" and job.flag for job in jobs))
                except OSError as failure:
                    synced = _error(failure)
            for job in jobs:
                if job.kind == "sync" and synced is not None:
                    failed.append((job.ticket, synced))
                elif job.kind == "remove" and synced is None:
                    # Not synced: the deletion may not be durable, so the file stays (a
                    # body file without a row is removed by the spool's recovery).
                    assert job.path is not None
                    try:
                        os.unlink(job.path)
                    except FileNotFoundError:
                        pass
                    except OSError as failure:
                        failed.append((job.ticket, _error(failure)))
            failed.sort(key=lambda failure: failure[0])
            with self._lock:
                self._done = upto
                self._failed.extend(failed)
            try:
                self._wake_w.send(b"\0")
            except OSError:  # full: a wake-up is pending already; closed: nobody listens
                pass
