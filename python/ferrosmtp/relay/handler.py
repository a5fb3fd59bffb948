"""The accepting side of the relay: a server handler that applies the relay policy at
RCPT, streams each message into the queue as it arrives (a Received header first), and
answers ``250 2.0.0 Ok: queued as ID`` only once the queue says it is durable."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ferrosmtp import codec
from ferrosmtp.handlers import received_header
from ferrosmtp.protocol.events import Response
from ferrosmtp.relay.policy import (
    RELAY_DENIED,
    TOO_MANY_HOPS,
    HopCounter,
    RelayPolicy,
    client_address,
)
from ferrosmtp.relay.queue import (
    WRITTEN,
    BodyWriter,
    Envelope,
    Queue,
    QueueEntry,
    QueueError,
    QueueFull,
    Recipient,
)

__all__ = ["DISK_FULL", "STORAGE_FAILED", "QueueHandler"]

log: logging.Logger = logging.getLogger("ferrosmtp.relay")

DISK_FULL = "452 4.3.1 Error: insufficient system storage"
STORAGE_FAILED = "451 4.3.0 Error: queue file write error"

# Where a message being received keeps its state on the server's Envelope.
_BODY = "_relay_body"
_HOPS = "_relay_hops"
_ERROR = "_relay_error"


def _xtext(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(codec.xtext_decode(value))
    except Exception:  # the server checked the syntax; keep the text if decoding fails
        return value


class QueueHandler:
    """Accept mail for relaying into ``queue``.

    ``on_queued(entry)`` is called with each message just stored; with ``lease`` set
    (seconds), messages are stored already leased so that the caller (the scheduler)
    can deliver them at once without reading them back.
    """

    def __init__(
        self,
        queue: Queue,
        policy: RelayPolicy,
        *,
        on_queued: Callable[[QueueEntry], bool] | None = None,
        lease: Callable[[], float | None] | None = None,
    ) -> None:
        self.queue = queue
        self.policy = policy
        self.on_queued = on_queued
        self.lease = lease

    def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        """Accept the recipient if the relay policy allows it, else refuse: relay denied.
        A plain function: the server answers it without a task."""
        if not self.policy.may_relay(session, address):
            log.info(
                "%s reject RCPT <%s>: Relay access denied", _peer(session), _printable(address)
            )
            return RELAY_DENIED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    def _start(self, server: Any, session: Any, envelope: Any) -> BodyWriter:
        body = self.queue.new_body()
        setattr(envelope, _BODY, body)
        setattr(envelope, _HOPS, HopCounter())
        return body

    def handle_DATA_CHUNK(
        self, server: Any, session: Any, envelope: Any, data: bytes
    ) -> Awaitable[None] | None:
        """Stream a piece of the message into the queue (after a Received header).
        Returns what must be awaited, if anything: a piece the queue took at once (into
        memory, the usual case) is answered by the server without a task."""
        if getattr(envelope, _ERROR, None) is not None:
            return None  # already failed: the rest of the message is dropped
        body: BodyWriter | None = getattr(envelope, _BODY, None)
        try:
            if body is None:
                body = self._start(server, session, envelope)
                header = body.write(received_header(server, session, envelope, body.id))
                if header is not WRITTEN:
                    return self._write_later(server, session, envelope, header, data)
            written = self._write(envelope, body, data)
        except QueueError as error:
            return self._chunk_failed(server, session, envelope, error)
        if written is WRITTEN:
            return None
        return self._write_later(server, session, envelope, written, None)

    async def _write_later(
        self, server: Any, session: Any, envelope: Any, pending: Awaitable[None], data: bytes | None
    ) -> None:
        """Await a write, then write ``data`` (the chunk after the Received header)."""
        try:
            await pending
            if data is not None:
                await self._write(envelope, getattr(envelope, _BODY), data)
        except QueueError as error:
            await self._chunk_failed(server, session, envelope, error)

    @staticmethod
    def _write(envelope: Any, body: BodyWriter, data: bytes) -> Awaitable[None]:
        """A piece of the message: its Received headers counted, then into the body."""
        getattr(envelope, _HOPS).feed(data)
        return body.write(data)

    async def _chunk_failed(
        self, server: Any, session: Any, envelope: Any, error: QueueError
    ) -> None:
        setattr(envelope, _ERROR, error)
        await self.handle_DATA_ABORT(server, session, envelope)

    async def handle_DATA_ABORT(self, server: Any, session: Any, envelope: Any) -> None:
        """The message was refused or its client vanished: forget its body."""
        body: BodyWriter | None = getattr(envelope, _BODY, None)
        setattr(envelope, _BODY, None)
        if body is not None:
            await body.abort()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str | Response:
        """Store the message durably in the queue, then 250 with its queue id (451 or 452 if it
        cannot)."""
        error = getattr(envelope, _ERROR, None)
        setattr(envelope, _ERROR, None)
        if error is None and getattr(envelope, _BODY, None) is None:
            pending = self.handle_DATA_CHUNK(server, session, envelope, b"")  # an empty message
            if pending is not None:
                await pending
            error = getattr(envelope, _ERROR, None)
            setattr(envelope, _ERROR, None)
        if error is not None:
            return self._failed(error)
        body: BodyWriter = getattr(envelope, _BODY)
        setattr(envelope, _BODY, None)
        if getattr(envelope, _HOPS).too_many:
            await body.abort()
            log.info("%s reject: %s", _peer(session), TOO_MANY_HOPS)
            return TOO_MANY_HOPS
        lease = self.lease() if self.lease is not None else None
        try:
            entry = await self.queue.put(self._envelope(session, envelope), body, lease=lease)
        except QueueError as failure:
            return self._failed(failure)
        if self.on_queued is not None and not self.on_queued(entry) and lease:
            await self.queue.release(entry)
        # A Response, not a string: this reply is new for every message, so the server's
        # cache of parsed hook replies cannot spare it the parsing.
        return Response(250, (f"Ok: queued as {entry.id}",), "2.0.0")

    def _failed(self, error: QueueError) -> str:
        log.error("queue: %s", error)
        return DISK_FULL if isinstance(error, QueueFull) else STORAGE_FAILED

    def _envelope(self, session: Any, envelope: Any) -> Envelope:
        params: dict[str, str | None] = envelope.mail_params
        recipients = []
        for address in envelope.rcpt_tos:
            rcpt = envelope.rcpt_params.get(address, {})
            notify = rcpt.get("NOTIFY")
            recipients.append(
                Recipient(
                    address,
                    notify=tuple(notify.upper().split(",")) if notify else None,
                    orcpt=_xtext(rcpt.get("ORCPT")),
                )
            )
        sender = envelope.mail_from or ""
        ret = params.get("RET")
        return Envelope(
            sender="" if sender == "<>" else sender,
            recipients=recipients,
            smtputf8=bool(envelope.smtp_utf8),
            body_8bit=(params.get("BODY") or "").upper() == "8BITMIME",
            ret=ret.upper() if ret else None,
            envid=_xtext(params.get("ENVID")),
            client=_peer(session),
        )


def _peer(session: Any) -> str:
    return f"{session.host_name or 'unknown'}[{client_address(session) or 'unknown'}]"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)
