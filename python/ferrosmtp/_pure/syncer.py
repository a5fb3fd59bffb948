"""The spool's fsyncs, off the event loop: ``Syncer`` makes commits durable in batches
(the pure twin of ``ferrosmtp._core.Syncer``, ``src/syncer.rs``).

The event loop commits to SQLite itself (a commit without an fsync costs tens of
microseconds); what makes a commit durable, an ``fdatasync`` of the WAL file (and an
``fsync`` of the bodies folder when a body file was named), is asked of a syncer thread:
``request()`` returns a ticket, and the loop learns which tickets are durable by reading
``fileno()`` (one byte per sync done) and calling ``completed()``. Every request made while
a sync runs is covered by the next one: concurrent sessions share one fsync.

The Rust syncer's thread never needs the interpreter. This one, a Python thread, waits for
the GIL each time it wakes (up to the switch interval while the loop is busy), and every
sync costs the loop thread hand-offs: measured with the relay, 0.3 ms more CPU per
message. Same API and behaviour, for ``FERROSMTP_BACKEND=pure``.
"""

from __future__ import annotations

import os
import socket
import threading

__all__ = ["Syncer"]


class Syncer:
    """``fdatasync`` of one file (the spool's WAL), and ``fsync`` of one folder when asked,
    batched, in a thread of its own (``ferrosmtp.relay.sqlite``)."""

    def __init__(self, file: str | os.PathLike[str], folder: str | os.PathLike[str]) -> None:
        self._wal = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
        self._folder = folder
        self._lock = threading.Condition()
        self._requested = 0  # the last ticket handed out
        self._folder_upto = 0  # the last ticket that needs the folder synced
        self._done = 0  # every ticket up to this one is synced (or failed)
        self._failed_upto = 0  # every ticket up to this one failed (or was synced before)
        self._error: str | None = None
        self._closing = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="ferrosmtp-syncer", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        """Readable when a sync has finished since the last ``completed()``."""
        return self._wake_r.fileno()

    def request(self, folder: bool) -> int:
        """Ask for a sync of everything written so far; returns its ticket."""
        with self._lock:
            if self._closing:
                raise OSError("the syncer is closed")
            self._requested += 1
            if folder:
                self._folder_upto = self._requested
            self._lock.notify()
            return self._requested

    def completed(self) -> tuple[int, int, str | None]:
        """``(done, failed_upto, error)``: tickets up to ``done`` are finished, those up to
        ``failed_upto`` failed with ``error``.
        """
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            return self._done, self._failed_upto, self._error

    def close(self) -> None:
        """Finish the syncs asked for, then stop the thread. Idempotent."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join()
        if self._wal >= 0:
            os.close(self._wal)
            self._wal = -1
            self._wake_w.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._requested == self._done and not self._closing:
                    self._lock.wait()
                if self._requested == self._done:
                    return
                upto = self._requested
                folder = self._folder_upto > self._done
            error = None
            try:
                os.fdatasync(self._wal)
                if folder:
                    fd = os.open(self._folder, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            except OSError as failure:
                # Worded as the Rust syncer words it (std::io::Error's Display).
                error = f"{failure.strerror} (os error {failure.errno})"
            with self._lock:
                self._done = upto
                if error is not None:
                    self._failed_upto, self._error = upto, error
            try:
                self._wake_w.send(b"\0")
            except OSError:  # full: a wake-up is pending already; closed: nobody listens
                pass
