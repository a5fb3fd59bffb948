"""What every part of one connection shares: its state, its output, and how a hook is
called and its answer given to the ServerConnection."""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ferrosmtp.protocol.events import Response
from ferrosmtp.protocol.server import ServerConnection
from ferrosmtp.server.peers import client_peer, peer_text
from ferrosmtp.server.status import parse_status
from ferrosmtp.server.values import Envelope, Session, is_missing

if TYPE_CHECKING:
    from ferrosmtp.codec import ServerFastPath
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

    # The state every connection starts with, as class attributes: an instance holds only
    # what it has changed. Past 30 attributes an instance's __dict__ loses CPython's
    # shared-key layout (every attribute read then goes through a full dict), and a
    # session that stays on the fast path changes a dozen of these at most. Immutable
    # values only: a list or dict here would be shared by every connection.
    transport = None
    session = None
    envelope = None
    conn = None  # made at once, or when a session that began fast leaves it
    _fast: ServerFastPath | None = None  # ServerConnection.fast_path, while it runs
    _peername: Any = None  # the transport's
    _at_once: frozenset[type] = frozenset()  # events answered as they come
    _message_open = False  # Content was delivered for a message not yet ended
    _data_started: float | None = None  # when this message's content began
    _data_bytes = 0
    _task: asyncio.Task[None] | None = None
    _input_waiter: asyncio.Future[None] | None = None
    _tls_buffer: list[bytes] | None = None  # app data that came during start_tls
    # When the client last completed something (a command, a line, message content).
    # Bytes alone do not count: a slowloris trickling a byte at a time must not keep
    # its connection (checklist B9's per-record deadline).
    _last_progress = 0.0
    _greeted = False
    _write_paused = False
    _admitted = False
    _closing = False
    _budget = EVENTS_PER_TURN  # events left before giving other connections a turn
    _proxy_buffer: bytearray | None = None  # waiting for a PROXY header
    _proxy_timer: asyncio.TimerHandle | None = None
    _labelled_peer: tuple[Any, Any] = (NO_PEER, None)  # what _peer_label shows
    _peer_label = ""
    _peer_key: str | None = None
    _auth_methods_cache: dict[str, Callable[..., Awaitable[Any]]] | None = None

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._server = server
        self.event_handler = server.handler
        self.hostname = server.hostname
        self.data_size_limit = server.data_size_limit
        self.enable_SMTPUTF8 = server.enable_SMTPUTF8
        self.tls_context = server.tls_context
        self.require_starttls = server.require_starttls
        self.loop = server.loop if loop is None else loop
        # Implicit TLS (RFC 8314): the context the handshake is made with, before the
        # greeting (ferrosmtp.compat.aiosmtpd's controllers set it per connection).
        self._tls_on_connect: ssl.SSLContext | None = server.ssl_context
        self._hooks = server._hooks
        self._chunks: list[bytes] = []

    # -- aiosmtpd's override points -----------------------------------------------------

    def _create_session(self) -> Session:
        return Session(self.loop)

    def _create_envelope(self) -> Envelope:
        return Envelope()

    # -- output ------------------------------------------------------------------------------

    def _flush(self) -> None:
        conn, transport = self.conn, self.transport
        if conn is not None:
            data = conn.data_to_send()
            if data and transport is not None and not transport.is_closing():
                transport.write(data)  # type: ignore[attr-defined]

    def _finish(self) -> None:
        self._flush()
        self._close_transport()

    def _close_transport(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def _end(self, end: Callable[[ServerConnection], None]) -> None:
        """End the session the way ``end`` (a ServerConnection method: ``internal_error``,
        ``shutdown``, ``timeout``, ``hook_timed_out``) says, then close."""
        self._take_over()
        if self.conn is not None:
            end(self.conn)
            self._flush()
        self._close_transport()

    def _abort(self) -> None:
        """An internal error: tell the client, then close."""
        self._end(ServerConnection.internal_error)

    def _shut_down(self) -> None:
        """The server is stopping: say so, whatever the session was doing. A message not
        yet answered is not kept; its client will retry."""
        if not self._closing and self.transport is not None:
            self._end(ServerConnection.shutdown)

    def _state_machine(self, fast: ServerFastPath | None = None) -> ServerConnection:
        """A new ServerConnection for this session, answering at once what the handler
        has no hook for; ``fast``: the one a session that began on it goes on with
        (``ServerConnection.resume``)."""
        config = self._server._config(implicit_tls=self._tls_on_connect is not None)
        codec = self._server.codec
        if fast is None:
            conn = ServerConnection(config, codec=codec)
        else:
            conn = ServerConnection.resume(fast, config, codec=codec)
        conn.answer_at_once(self._at_once)
        return conn

    def _begin(self, fast: ServerFastPath | None = None) -> None:
        """The session's state machine, session and envelope: when the connection is
        made, or (``fast``) when a session that began on the fast path leaves it."""
        self.conn = self._state_machine(fast)
        self.session = session = self._create_session()
        session.peer = self._peername
        self.envelope = self._create_envelope()

    def _take_over(self) -> None:
        """The state machine goes on from where the fast path stopped (if it ran), and
        this layer's records become what the events it did not see would have made them
        (HookCalls' _hello_seen, _mail_seen, _rcpt_seen, _content_seen); before
        anything but a read of the fast path's. A session that began on the fast path
        (ServerConnection.fast_start) gets its state machine, session and envelope now."""
        fast = self._fast
        if fast is None:
            return
        self._fast = None
        if self.conn is None:
            self._begin(fast)
        conn = self.conn
        assert conn is not None
        hello, name, mail, recipients, in_data, *_, progress, started, size = conn.take_over(fast)
        self._last_progress, self._data_started, self._data_bytes = progress, started, size
        self._message_open = in_data
        session, envelope = self.session, self.envelope
        if hello is not None and session is not None:
            session.host_name = name
            session.extended_smtp = hello != "HELO"
        if mail is not None and envelope is not None:
            envelope.mail_from = "<>" if mail.is_null else mail.address
            envelope.smtp_utf8 = False
            envelope.mail_params = {}
            for path in recipients:
                envelope.rcpt_tos.append(path.address)
                envelope.rcpt_params[path.address] = {}

    def _pause_reading(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def _peer(self) -> str:
        """The client's address for log lines (the one a PROXY header names, behind a
        load balancer), formatted once (a line per message)."""
        session = self.session
        peer, proxied = (session.peer, session.proxy_data) if session else (None, None)
        labelled = self._labelled_peer
        if peer is not labelled[0] or proxied is not labelled[1]:
            self._labelled_peer = (peer, proxied)
            self._peer_label = peer_text(client_peer(peer, proxied))
        return self._peer_label

    # -- answering events --------------------------------------------------------------

    def _respond(self, status: Any) -> None:
        """Answer the waiting event with a hook's status (MISSING: the default)."""
        conn = self.conn
        assert conn is not None
        if is_missing(status) or status is None:
            conn.respond_default()
        else:
            conn.respond_with(self._response(status))

    def _response(self, status: Any) -> Response:
        """A hook's status (a reply string, or a Response) as a Response; anything else
        is the handler's bug, answered with ``replies.hook_error``."""
        if isinstance(status, Response):
            return status
        assert self.conn is not None
        try:
            config = self.conn.config
            return parse_status(
                status, config.enhanced_status_codes, any_code=config.any_reply_code
            )
        except ValueError:
            log.error("%s handler returned %r, not a reply; answering 451", self._peer(), status)
            return self.conn.replies.hook_error

    def _invoke(self, hook: Callable[..., Any], *args: Any) -> tuple[Any, Exception | None]:
        """Call a hook: what it returned, or the exception it raised (for ``_outcome``).
        Every hook is called here, so each caller decides only what to await."""
        try:
            return hook(self, self.session, self.envelope, *args), None
        except Exception as error:
            return None, error

    async def _call(self, hook: Callable[..., Any], *args: Any) -> Any:
        """Await a hook; an exception becomes handle_exception()'s reply, or a 451."""
        return await self._outcome(*self._invoke(hook, *args))

    async def _outcome(self, result: Any, error: Exception | None) -> Any:
        """What a hook that was called said: ``result`` (awaited if it is awaitable), or
        for the exception it raised (``error``) handle_exception()'s reply, or a 451."""
        try:
            if error is not None:
                raise error
            if inspect.isawaitable(result):
                result = await result
            return result
        except (asyncio.CancelledError, ConnectionResetError):
            # A reset connection is dropped, not reported to handle_exception (aiosmtpd).
            raise
        except Exception as failure:
            return await self._handle_exception(failure)

    def _tls_setup_error(self, error: Exception) -> Exception:
        """What handle_exception() hears of a failed STARTTLS handshake."""
        return error

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
        assert self.conn is not None
        return self.conn.replies.hook_error
