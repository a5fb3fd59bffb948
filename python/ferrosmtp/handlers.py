"""Ready-made handlers: Sink, Debugging, Maildir, Mailbox (mbox).

They use the aiosmtpd hook convention, so they also run on aiosmtpd. The storage
handlers (Maildir, Mailbox) prepend an RFC 5321 §4.4 ``Received:`` header and answer
250 only once the message is durably on disk: Maildir streams the message into ``tmp/``
as it arrives (``handle_DATA_CHUNK``), fsyncs it and renames it into ``new/``; Mailbox
streams it into a temporary file in mbox form, then appends it under the mailbox's locks
(``ferrosmtp.mbox``). Debugging spools it too. None holds a whole message in memory.
"""

from __future__ import annotations

import asyncio
import codecs
import datetime
import email.utils
import errno
import io
import itertools
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, TextIO

from ferrosmtp import mbox

__all__ = ["Debugging", "Mailbox", "Maildir", "Sink", "received_header"]

log: logging.Logger = logging.getLogger("ferrosmtp.handlers")

STORAGE_FAILED = "451 4.3.0 Error: could not store the message"
TMP_MAX_AGE = 36 * 3600  # Maildir: files in tmp/ older than this were left by a crash
DISK_FULL = "452 4.3.1 Error: insufficient system storage"


class Sink:
    """Accept every message and drop it."""


# What stays in memory of a message being spooled; the rest goes to a temporary file.
SPOOL_IN_MEMORY = 1 << 20
# Terminal control characters (C0 but tab and line feed, DEL, C1) as visible escapes: a
# message must not drive the operator's terminal (issue 10, fault 15).
_TERMINAL_SAFE = {
    c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)] if c not in (0x09, 0x0A)
}


def terminal_safe(text: str) -> str:
    """``text`` with terminal control characters (escape sequences, bells, C1 codes...)
    written as ``\\xNN``; tabs and line feeds are kept."""
    return text.translate(_TERMINAL_SAFE)


class _Spool:
    """A message as it arrives, in memory up to SPOOL_IN_MEMORY, then in a temporary
    file; ``transform`` turns each piece into what is kept (the mbox form, say)."""

    def __init__(self, transform: Any = None) -> None:
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        self.transform = transform
        self.error: OSError | None = None

    def write(self, data: bytes) -> None:
        if self.error is None:
            try:
                self.file.write(self.transform.feed(data) if self.transform else data)
            except OSError as error:  # a full disk: answered at the end of the message
                self.error = error

    def finish(self) -> IO[bytes]:
        if self.transform is not None and self.error is None:
            self.write(self.transform.end())
        if self.error is not None:
            raise self.error
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


def _spool(envelope: Any, make: Any) -> _Spool:
    spool: _Spool | None = getattr(envelope, "_ferrosmtp_spool", None)
    if spool is None:
        spool = envelope._ferrosmtp_spool = make()
    return spool


def _take_spool(envelope: Any) -> _Spool | None:
    spool: _Spool | None = getattr(envelope, "_ferrosmtp_spool", None)
    envelope._ferrosmtp_spool = None
    return spool


class Debugging:
    """Print every message (the envelope, then the content) to ``stream`` (stdout), with
    terminal control characters escaped. The message is spooled as it arrives (no whole
    message in memory) and printed at its end, in one piece."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream: TextIO = stream or sys.stdout

    async def handle_DATA_CHUNK(
        self, server: Any, session: Any, envelope: Any, data: bytes
    ) -> None:
        """Spool a piece of the message."""
        _spool(envelope, _Spool).write(data)

    async def handle_DATA_ABORT(self, server: Any, session: Any, envelope: Any) -> None:
        """The message was refused: forget it."""
        spool = _take_spool(envelope)
        if spool is not None:
            spool.close()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Print the envelope and the message."""
        spool = _take_spool(envelope) or _Spool()
        out = self.stream
        try:
            content = spool.finish()
            print("---------- MESSAGE FOLLOWS ----------", file=out)
            print(terminal_safe(f"X-Peer: {session.peer!r}"), file=out)
            print(terminal_safe(f"X-MailFrom: {envelope.mail_from}"), file=out)
            print(terminal_safe(f"X-RcptTo: {', '.join(envelope.rcpt_tos)}"), file=out)
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            pending = ""  # line ends at the end of what was read: printed only if more follows
            while True:
                block = content.read(1 << 16)
                text = pending + decoder.decode(block, final=not block)
                body = text.rstrip("\r\n")
                pending = text[len(body) :]
                out.write(terminal_safe(body.replace("\r\n", "\n")))
                if not block:
                    break
            print(file=out)
            print("------------ END MESSAGE ------------", file=out)
            out.flush()
        except OSError as error:
            log.error("Debugging: %s", error)
            return _storage_reply(error)
        finally:
            spool.close()
        return "250 OK"


_ids = itertools.count()


def _protocol_name(server: Any, session: Any) -> str:
    """The ``with`` clause of RFC 3848: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, LMTP..."""
    if getattr(server, "_server", None) is not None and getattr(server._server, "lmtp", False):
        name = "LMTP"
    else:
        name = "ESMTP" if getattr(session, "extended_smtp", False) else "SMTP"
    if getattr(session, "ssl", None):
        name += "S"
    if getattr(session, "authenticated", False):
        name += "A"
    return name


def received_header(
    server: Any, session: Any, envelope: Any, message_id: str | None = None
) -> bytes:
    """An RFC 5321 §4.4 trace header for this message, folded, ending in CRLF.

    Every piece comes from values the codec has validated (the HELO name is a domain or
    an address literal; addresses are parsed paths), so no CR/LF can get in; what is
    printed is still restricted to printable characters.
    """
    peer = session.peer
    ip = peer[0] if isinstance(peer, tuple) else str(peer or "unknown")
    proxied = getattr(session, "proxy_data", None)
    if proxied is not None and proxied.valid and proxied.src_addr is not None:
        ip = str(proxied.src_addr)  # behind a load balancer: the client it speaks for
    helo = session.host_name or "unknown"
    by = getattr(server, "hostname", None) or socket.getfqdn()
    parts = [
        f"from {_clean(helo)} ([{_clean(ip)}])",
        f"by {_clean(by)}",
        f"with {_protocol_name(server, session)}",
    ]
    if message_id:
        parts.append(f"id {_clean(message_id)}")
    if len(envelope.rcpt_tos) == 1:
        parts.append(f"for <{_clean(envelope.rcpt_tos[0])}>")
    return ("Received: " + "\r\n\t".join(parts) + ";\r\n\t" + _stamp() + "\r\n").encode("utf-8")


_stamp_cache: tuple[int, str] = (-1, "")


def _stamp() -> str:
    """The RFC 5322 date of this second (formatted once a second, not once a message)."""
    global _stamp_cache
    second = int(time.time())
    if _stamp_cache[0] != second:
        when = datetime.datetime.fromtimestamp(second).astimezone()  # local, with its offset
        _stamp_cache = (second, email.utils.format_datetime(when))
    return _stamp_cache[1]


def _clean(text: str) -> str:
    text = str(text)
    if text.isprintable():  # nearly always: one C call instead of a loop per character
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


class Maildir:
    """Store each message as one file of a Maildir (readable by any mail client).

    The message is streamed into ``tmp/`` while it arrives, then fsynced, renamed into
    ``new/`` and the directory fsynced, all before the 250: an acknowledged message
    survives a crash. Refused or interrupted messages leave no file behind.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, received: bool = True, fsync: bool = True
    ) -> None:
        self.path: Path = Path(path)
        self.received = received
        self.fsync = fsync
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.clean_tmp()

    def clean_tmp(self, older_than: float = TMP_MAX_AGE) -> int:
        """Remove the files in ``tmp/`` not modified for ``older_than`` seconds (36 hours:
        the Maildir convention), left there by a delivery that crashed; the count."""
        removed = 0
        limit = time.time() - older_than
        with os.scandir(self.path / "tmp") as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < limit:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    pass  # another process cleaned it first
        if removed:
            log.info("Maildir %s: removed %d stale file(s) from tmp/", self.path, removed)
        return removed

    def _unique(self) -> str:
        # The Maildir naming convention: time.unique.host
        now = time.time()
        host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_ids)}.{host}"

    def _open(
        self, server: Any, session: Any, envelope: Any
    ) -> tuple[io.BufferedWriter, Path, str]:
        name = self._unique()
        tmp = self.path / "tmp" / name
        f = open(tmp, "xb")
        if self.received:
            f.write(received_header(server, session, envelope, name.split(".")[1]))
        return f, tmp, name

    async def handle_DATA_CHUNK(
        self, server: Any, session: Any, envelope: Any, data: bytes
    ) -> None:
        """Write a piece of the message into its file in ``tmp/``."""
        if getattr(envelope, "_maildir_error", None) is not None:
            return  # already failed: the rest of the message is dropped
        try:
            state = getattr(envelope, "_maildir", None)
            if state is None:
                state = self._open(server, session, envelope)
                envelope._maildir = state
            state[0].write(data)
        except OSError as error:
            # A full disk, a quota, a file too big: forget the partial file now and say
            # so at the end of the message (the client is still sending it).
            envelope._maildir_error = error
            await self.handle_DATA_ABORT(server, session, envelope)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Fsync the message and rename it into ``new/``; then 250."""
        error = getattr(envelope, "_maildir_error", None)
        state = getattr(envelope, "_maildir", None)
        envelope._maildir = None
        if error is None:
            try:
                if state is None:  # an empty message: no chunk came
                    state = self._open(server, session, envelope)
                await asyncio.get_running_loop().run_in_executor(None, self._commit, *state)
                return f"250 2.0.0 OK: queued as {state[2].split('.')[1]}"
            except OSError as failure:
                error = failure
                if state is not None:
                    _remove(state[1])
        log.error("Maildir %s: %s", self.path, error)
        return _storage_reply(error)

    def _commit(self, f: io.BufferedWriter, tmp: Path, name: str) -> None:
        try:
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        finally:
            f.close()
        os.rename(tmp, self.path / "new" / name)
        if self.fsync and os.name != "nt":  # Windows cannot open (nor fsync) a directory
            fd = os.open(self.path / "new", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    async def handle_DATA_ABORT(self, server: Any, session: Any, envelope: Any) -> None:
        """The message was refused or its client vanished: remove its file."""
        state = getattr(envelope, "_maildir", None)
        envelope._maildir = None
        if state is not None:
            state[0].close()
            _remove(state[1])


def _storage_reply(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DISK_FULL
    return STORAGE_FAILED


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class Mailbox:
    """Append each message to an mbox file, as Postfix's local delivery does
    (``ferrosmtp.mbox``): streamed into a temporary file in mbox form while it arrives,
    then appended under a dot-lock and a kernel lock, fsynced before the 250.

    A busy mailbox is waited for up to ``lock_timeout`` seconds (then 451, and the client
    retries); a dot-lock older than ``stale_lock_time`` seconds, left by a writer that
    died, is removed. Deliveries of one server are queued, not raced.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        received: bool = True,
        lock_timeout: float = mbox.LOCK_TIMEOUT,
        stale_lock_time: float = mbox.STALE_LOCK_TIME,
        fsync: bool = True,
    ) -> None:
        self.path: Path = Path(path)
        self.received = received
        self.lock_timeout = lock_timeout
        self.stale_lock_time = stale_lock_time
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._turn: asyncio.Lock | None = None  # one delivery at a time from this server

    def _new_spool(self, server: Any, session: Any, envelope: Any) -> _Spool:
        spool = _Spool(mbox.FromQuoting())
        if self.received:
            spool.write(received_header(server, session, envelope))
        return spool

    async def handle_DATA_CHUNK(
        self, server: Any, session: Any, envelope: Any, data: bytes
    ) -> None:
        """Spool a piece of the message, in mbox form."""
        _spool(envelope, lambda: self._new_spool(server, session, envelope)).write(data)

    async def handle_DATA_ABORT(self, server: Any, session: Any, envelope: Any) -> None:
        """The message was refused or its client vanished: forget it."""
        spool = _take_spool(envelope)
        if spool is not None:
            spool.close()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Append the message to the mbox, locked; then 250."""
        spool = _take_spool(envelope) or self._new_spool(server, session, envelope)
        sender = (
            envelope.mail_from if envelope.mail_from not in (None, "", "<>") else "MAILER-DAEMON"
        )
        if self._turn is None:
            self._turn = asyncio.Lock()
        try:
            content = spool.finish()
            await asyncio.wait_for(self._turn.acquire(), self.lock_timeout)
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, self._append, sender, content
                )
            finally:
                self._turn.release()
        except asyncio.TimeoutError:
            log.error("mbox %s: busy for %.0f s", self.path, self.lock_timeout)
            return STORAGE_FAILED
        except OSError as error:
            log.error("mbox %s: %s", self.path, error)
            return _storage_reply(error)
        finally:
            spool.close()
        return "250 2.0.0 OK"

    def _append(self, sender: str, content: IO[bytes]) -> None:
        mbox.append(
            self.path,
            sender,
            content,
            timeout=self.lock_timeout,
            stale=self.stale_lock_time,
            fsync=self.fsync,
        )
