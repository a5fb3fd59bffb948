"""Ready-made handlers: Sink, Debugging, Maildir, Mailbox (mbox).

They use the aiosmtpd hook convention, so they also run on aiosmtpd. The storage
handlers (Maildir, Mailbox) prepend an RFC 5321 §4.4 ``Received:`` header and answer
250 only once the message is durably on disk: Maildir streams the message into ``tmp/``
as it arrives (``handle_DATA_CHUNK``), fsyncs it and renames it into ``new/``.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import io
import itertools
import logging
import mailbox
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Debugging", "Mailbox", "Maildir", "Sink", "received_header"]

log: logging.Logger = logging.getLogger("ferrosmtp.handlers")

STORAGE_FAILED = "451 4.3.0 Error: could not store the message"
DISK_FULL = "452 4.3.1 Error: insufficient system storage"


class Sink:
    """Accept every message and drop it."""


class Debugging:
    """Print every message (the envelope, then the content) to ``stream`` (stdout)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream: TextIO = stream or sys.stdout

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Print the envelope and the message."""
        out = self.stream
        print("---------- MESSAGE FOLLOWS ----------", file=out)
        print(f"X-Peer: {session.peer!r}", file=out)
        print(f"X-MailFrom: {envelope.mail_from}", file=out)
        print(f"X-RcptTo: {', '.join(envelope.rcpt_tos)}", file=out)
        content = envelope.content
        if isinstance(content, bytes):
            content = content.decode("utf-8", "replace")
        print((content or "").rstrip("\r\n").replace("\r\n", "\n"), file=out)
        print("------------ END MESSAGE ------------", file=out)
        out.flush()
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
    stamp = email.utils.format_datetime(email.utils.localtime())
    return ("Received: " + "\r\n\t".join(parts) + ";\r\n\t" + stamp + "\r\n").encode("utf-8")


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
    """Append each message to an mbox file, locked (fcntl and dot-lock) while writing."""

    def __init__(self, path: str | os.PathLike[str], *, received: bool = True) -> None:
        self.path: Path = Path(path)
        self.received = received
        self.path.parent.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Append the message to the mbox, locked; then 250."""
        content = envelope.original_content or b""
        if self.received:
            content = received_header(server, session, envelope) + content
        sender = envelope.mail_from if envelope.mail_from not in (None, "<>") else "MAILER-DAEMON"
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._append, content, sender)
        except OSError as error:
            log.error("mbox %s: %s", self.path, error)
            return _storage_reply(error)
        return "250 2.0.0 OK"

    def _append(self, content: bytes, sender: str) -> None:
        box = mailbox.mbox(self.path, create=True)
        box.lock()
        try:
            message = mailbox.mboxMessage(content)
            message.set_from(sender, time.gmtime())
            box.add(message)
            box.flush()
        finally:
            box.unlock()
            box.close()
