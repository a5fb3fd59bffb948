"""What every part of one connection shares: its state, its output, and how a hook is
called and its answer given to the ServerConnection."""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ferrosmtp import codec
from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import Response
from ferrosmtp.protocol.server import ServerConnection
from ferrosmtp.server.peers import peer_text
from ferrosmtp.server.status import INTERNAL_ERROR, parse_status
from ferrosmtp.server.values import Envelope, Session, is_missing

if TYPE_CHECKING:
    from ferrosmtp.server.listener import Server

__all__ = ["EVENTS_PER_TURN", "NO_PEER", "ConnectionBase"]

log: logging.Logger = logging.getLogger("ferrosmtp.server")

# Events one connection may handle before giving other connections a turn: one read can
# hold thousands of pipelined commands (checklist B10, fairness under a flood).
EVENTS_PER_TURN = 256

NO_PEER = object()


class ConnectionBase(asyncio.Protocol):
    """The state of one SMTP connection, its output, and the hook-calling primitives."""

    # Declared here for the subclasses that assign them (type checkers take a subclass's
    # assignment for a new, unannotated attribute otherwise).
    event_handler: Any
    hostname: str
    data_size_limit: int | None
    enable_SMTPUTF8: bool
    tls_context: ssl.SSLContext | None
    require_starttls: bool
    loop: asyncio.AbstractEventLoop
    transport: asyncio.BaseTransport | None
    session: Session | None
    envelope: Envelope | None
    conn: ServerConnection | None

    def __init__(self, server: Server) -> None:
        self._server = server
        self.event_handler = server.handler
        self.hostname = server.hostname
        self.data_size_limit = server.data_size_limit
        self.enable_SMTPUTF8 = server.enable_SMTPUTF8
        self.tls_context = server.tls_context
        self.require_starttls = server.require_starttls
        self.loop = server.loop
        self.transport = None
        self.session = None
        self.envelope = None
        self.conn = None
        self._hooks = server._hooks
        self._chunks: list[bytes] = []
        self._message_open = False  # Content was delivered for a message not yet ended
        self._data_started: float | None = None  # when this message's content began
        self._data_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._input_waiter: asyncio.Future[None] | None = None
        self._tls_buffer: list[bytes] | None = None  # app data that came during start_tls
        self._timer: asyncio.TimerHandle | None = None
        # When the client last completed something (a command, a line, message content).
        # Bytes alone do not count: a slowloris trickling a byte at a time must not keep
        # its connection (checklist B9's per-record deadline).
        self._last_progress = 0.0
        self._greeted = False
        self._write_paused = False
        self._admitted = False
        self._closing = False
        self._budget = EVENTS_PER_TURN  # events left before giving other connections a turn
        self._proxy_buffer: bytearray | None = None  # waiting for a PROXY header
        self._proxy_timer: asyncio.TimerHandle | None = None
        self._labelled_peer: Any = NO_PEER  # the peer _peer_label was made for
        self._peer_label = ""
        self._peer_key: str | None = None
        self._auth_methods_cache: dict[str, Callable[..., Awaitable[Any]]] | None = None

    # -- aiosmtpd's override points -----------------------------------------------------

    def _create_session(self) -> Session:
        return Session(self.loop)

    def _create_envelope(self) -> Envelope:
        return Envelope()

    # -- output ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)  # type: ignore[attr-defined]

    def _flush(self) -> None:
        if self.conn is not None:
            self._write(self.conn.data_to_send())

    def _finish(self) -> None:
        self._flush()
        self._close_transport()

    def _close_transport(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def _abort(self) -> None:
        """An internal error: tell the client, then close."""
        self._write(self._closing_reply("Error: internal server error", "4.3.0"))
        self._close_transport()

    def _closing_reply(self, text: str, enhanced: str) -> bytes:
        """A 421 the connection writes itself; no enhanced code where the server sends
        none (issue 9)."""
        conn = self.conn
        code: str | None = enhanced
        if conn is not None and not conn.config.enhanced_status_codes:
            code = None
        wire: bytes = codec.format_reply(421, f"{self.hostname} {text}", code)
        return wire

    def _shut_down(self) -> None:
        """The server is stopping: say so (RFC 5321 §3.8: 421, then close), whatever the
        session was doing. A message not yet answered is not kept; its client will retry."""
        if self._closing or self.transport is None:
            return
        if self._greeted:
            self._write(self._closing_reply("Service shutting down", "4.3.2"))
        self._close_transport()

    def _pause_reading(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def _peer(self) -> str:
        """The client's address for log lines, formatted once (a line per message)."""
        peer = self.session.peer if self.session else None
        if peer is not self._labelled_peer:
            self._labelled_peer, self._peer_label = peer, peer_text(peer)
        return self._peer_label

    # -- answering events --------------------------------------------------------------

    def _respond(self, status: Any, event: ev.Event | None = None) -> None:
        """Answer the waiting event with a hook's status (MISSING: the default)."""
        conn = self.conn
        assert conn is not None
        if is_missing(status) or status is None:
            conn.respond_default()
            return
        if isinstance(status, Response):
            conn.respond_with(status)
            return
        try:
            response = parse_status(status, conn.config.enhanced_status_codes)
        except ValueError:
            log.error("%s handler returned %r, not a reply; answering 451", self._peer(), status)
            response = INTERNAL_ERROR
        conn.respond_with(response)

    async def _call(self, hook: Callable[..., Any], *args: Any) -> Any:
        """Await a hook; an exception becomes handle_exception()'s reply, or a 451."""
        try:
            result = hook(self, self.session, self.envelope, *args)
            if inspect.isawaitable(result):
                result = await result
            return result
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return await self._handle_exception(error)

    async def _handle_exception(self, error: Exception) -> Any:
        hook = getattr(self.event_handler, "handle_exception", None)
        if hook is not None:
            try:
                status = hook(error)
                if inspect.isawaitable(status):
                    status = await status
                if status is not None:
                    return status
            except Exception:
                log.exception("%s handle_exception() failed", self._peer())
        else:
            log.error(
                "%s handler error: %s: %s",
                self._peer(),
                type(error).__name__,
                error,
                exc_info=error,
            )
        return "451 4.3.0 Error: internal server error"
