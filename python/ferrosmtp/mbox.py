"""Delivery into an mbox file the way Postfix's local(8) does it, for ``handlers.Mailbox``.

- The message is written in mbox form as it arrives (``FromQuoting``: line ends as LF,
  ``>`` before every line that begins with "From ", the mboxo convention Postfix and
  mutt use), so no delivery holds a whole message in memory.
- The mailbox is locked with both a dot-lock (``box.lock``) and a kernel lock (``lockf``)
  (``locked``). A busy lock is waited for, within a bound (Postfix tries for 20 s); a
  dot-lock older than ``stale`` seconds was left by a writer that died (a ``kill -9``)
  and is removed, as Postfix's ``stale_lock_time`` (500 s) does.
- A delivery that fails half-way truncates the mailbox back to its length before it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

__all__ = ["LOCK_TIMEOUT", "STALE_LOCK_TIME", "FromQuoting", "append", "locked"]

log: logging.Logger = logging.getLogger("ferrosmtp.handlers")

LOCK_TIMEOUT = 20.0  # seconds a delivery waits for a busy mailbox (Postfix: 20 tries, 1 s)
STALE_LOCK_TIME = 500.0  # a dot-lock older than this is broken (Postfix's stale_lock_time)
_POLL = 0.05  # seconds between two tries of a busy lock, doubled up to _POLL_MAX
_POLL_MAX = 1.0
_FROM = b"From "


class FromQuoting:
    """Message content in mbox form, fed in pieces of any size: CRLF becomes LF, and a
    line that begins with "From " gets a ``>`` (it would start a new message). Holds at
    most the first four octets of a line and a CR, whatever the input."""

    def __init__(self) -> None:
        self._tail = b""  # undecided: a CR that may start CRLF, or a prefix of "From "
        self._mid = False  # inside a line whose start has been written

    def feed(self, data: bytes) -> bytes:
        """The mbox form of ``data``, as far as it is decided."""
        parts = (self._tail + data).split(b"\n")
        tail = parts.pop()
        out = bytearray()
        for part in parts:
            self._line(part[:-1] if part.endswith(b"\r") else part, out)
            out += b"\n"
            self._mid = False
        keep = b""
        if tail.endswith(b"\r"):
            tail, keep = tail[:-1], b"\r"
        if not self._mid and len(tail) < len(_FROM) and _FROM.startswith(tail):
            tail, keep = b"", tail + keep
        if tail:
            self._line(tail, out)
            self._mid = True
        self._tail = keep
        return bytes(out)

    def end(self) -> bytes:
        """The rest, with the line end the last line may lack, and the empty line that
        ends a message in an mbox."""
        out = bytearray()
        if self._tail:
            self._line(self._tail, out)
            self._mid = True
        self._tail = b""
        if self._mid:
            out += b"\n"
        self._mid = False
        return bytes(out + b"\n")

    def _line(self, piece: bytes, out: bytearray) -> None:
        if not self._mid and piece.startswith(_FROM):
            out += b">"
        out += piece


@contextlib.contextmanager
def locked(
    path: Path, *, timeout: float = LOCK_TIMEOUT, stale: float = STALE_LOCK_TIME
) -> Iterator[BinaryIO]:
    """The mailbox ``path`` opened for appending, dot-locked and kernel-locked. Waits at
    most ``timeout`` seconds for a busy lock (then BlockingIOError, EAGAIN)."""
    deadline = time.monotonic() + timeout
    dotlock = path.with_name(path.name + ".lock")
    _dotlock(dotlock, deadline, stale)
    try:
        with open(path, "ab") as box:
            _kernel_lock(box, deadline)
            yield box
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dotlock)


def _dotlock(lock: Path, deadline: float, stale: float) -> None:
    poll = _POLL
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            pass
        else:
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            return
        try:
            age = time.time() - os.stat(lock).st_mtime
        except FileNotFoundError:
            continue  # released meanwhile: try again at once
        if age > stale:
            # Left by a writer that died: nobody alive holds a lock for this long.
            log.warning("mbox: removing stale lock %s (%.0f s old)", lock, age)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            continue
        poll = _wait(deadline, poll, f"{lock} is held by another delivery")


def _kernel_lock(box: IO[bytes], deadline: float) -> None:
    if sys.platform == "win32":  # no lockf: the dot-lock is the lock
        return
    import fcntl

    poll = _POLL
    while True:
        try:
            fcntl.lockf(box.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
        poll = _wait(deadline, poll, f"{box.name} is locked by another process")


def _wait(deadline: float, poll: float, why: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise BlockingIOError(errno.EAGAIN, why)
    time.sleep(min(poll, left))
    return min(poll * 2, _POLL_MAX)


def append(
    path: Path,
    sender: str,
    content: IO[bytes],
    *,
    timeout: float = LOCK_TIMEOUT,
    stale: float = STALE_LOCK_TIME,
    fsync: bool = True,
) -> None:
    """Append one message (``content``: already in mbox form, ``FromQuoting``) to the
    mailbox, after its ``From sender date`` line; durable (fsynced) when this returns.
    On failure the mailbox is truncated back to what it was."""
    stamp = time.asctime(time.gmtime())
    sender = "".join(c if c.isprintable() and not c.isspace() else "_" for c in sender)
    with locked(path, timeout=timeout, stale=stale) as box:
        start = box.seek(0, os.SEEK_END)
        try:
            box.write(f"From {sender} {stamp}\n".encode())
            content.seek(0)
            shutil.copyfileobj(content, box, 1 << 20)
            box.flush()
            if fsync:
                os.fsync(box.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                box.truncate(start)
            raise
