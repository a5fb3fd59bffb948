"""The asyncio protocol of one SMTP connection: existing aiosmtpd handlers, unchanged, on
the sans-IO ServerConnection.

One ``SMTP`` protocol object per connection (it is the ``server`` argument handlers
receive, with aiosmtpd's attribute names). Bytes from the socket go to the connection
in whole chunks; its events are answered synchronously when the handler has no hook for
them, and through a task, with reading paused, when a hook has to be awaited. Replies
are batched: one ``transport.write`` per batch of events (RFC 2920).

This module holds the transport's life (PROXY header, implicit TLS, STARTTLS, timers) and
the event loop; the hooks are called by ``HookCalls`` (hooks.py) and AUTH runs in
``SASL`` (sasl.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
from collections.abc import Awaitable, Callable
from math import inf
from time import monotonic
from typing import Any, Literal, cast

from ferrosmtp import proxy
from ferrosmtp._loops import prime_read_buffers
from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import CLOSED, NEED_DATA, Response
from ferrosmtp.protocol.server import ServerConnection
from ferrosmtp.server.base import EVENTS_PER_TURN
from ferrosmtp.server.hooks import FAST_KINDS, SEEN, HookCalls
from ferrosmtp.server.idle import SLACK
from ferrosmtp.server.peers import client_peer, peer_text
from ferrosmtp.server.reads import READ_SIZE, limit_reads, small_reads
from ferrosmtp.server.sasl import SASL
from ferrosmtp.server.values import Envelope, Session

# Big reads (TLS transports' 256 KiB) and message copies from the heap: prime_read_buffers.
prime_read_buffers()

__all__ = ["EVENTS_PER_TURN", "SMTP", "Refusal"]

# Why a session is refused before it starts: the name of its reply in ``Replies``.
Refusal = Literal["too_many_connections", "too_many_connections_from_address"]

log: logging.Logger = logging.getLogger("ferrosmtp.server")


class SMTP(HookCalls, SASL):
    """One SMTP connection; what aiosmtpd handlers receive as ``server``."""

    transport: asyncio.BaseTransport | None
    session: Session | None
    envelope: Envelope | None
    conn: ServerConnection | None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio: a client connected (admitted under the limits, or refused with 421)."""
        self.transport = transport
        limit_reads(transport)
        self._peername = peer = transport.get_extra_info("peername")
        server = self._server
        self._at_once = at_once = self._at_once_kinds()
        proxy_timeout = server.proxy_protocol_timeout
        proxied = proxy_timeout is not None
        # Behind a load balancer the client's address comes with the PROXY header: the
        # per-address limit waits for it (issue 10, fault 4).
        refusal = server._admit(self, None if proxied else peer)
        if refusal is not None:
            self.conn = self._state_machine()
            self._refuse_session(peer, refusal)
            return
        self._admitted = True
        self._last_progress = now = monotonic()
        server._idle.arm(self.loop, now + server.timeout * (1 + 1 / SLACK))
        if (
            not proxied
            and self._tls_on_connect is None
            and server.greeting_delay <= 0
            and FAST_KINDS <= at_once
            and not log.isEnabledFor(logging.INFO)
            and type(self)._create_session is SMTP._create_session
            and type(self)._create_envelope is SMTP._create_envelope
        ):
            # The handler has no hook for any of the transaction's events and nothing is
            # logged per message: the session runs in the codec until something else
            # comes, and its state machine, session and envelope are made only then
            # (_take_over): most sessions of a busy sink never need them. (Not when a
            # subclass makes its own session or envelope: it may count on when.)
            started = ServerConnection.fast_start(
                server._config(implicit_tls=False),
                codec=server.codec,
                data_min_rate=server.data_min_rate,
                now=now,
            )
            if started is not None:
                self._fast, greeting = started
                self._greeted = True
                transport.write(greeting)  # type: ignore[attr-defined]
                return
        self._begin()
        if proxy_timeout is not None:
            # The load balancer's header first; the greeting once it has been accepted.
            self._proxy_buffer = bytearray()
            self._proxy_timer = self.loop.call_later(
                proxy_timeout, self._proxy_refused, "PROXY header timeout"
            )
            return
        if log.isEnabledFor(logging.INFO):
            log.info("%s connected", peer_text(peer))
        if self._tls_on_connect is not None:
            # Implicit TLS (RFC 8314): the connection was admitted (and counted) above, in
            # plaintext, so a flood of silent handshakes cannot pass max_connections.
            self._tls_buffer = []
            # Read nothing in plaintext: the client's first bytes (its ClientHello) are
            # the handshake's, which start_tls runs from the task; read here, they would
            # be lost to it and the handshake would hang. (uvloop starts reading after
            # connection_made returns whatever was paused in it: on uvloop this race
            # remains, see Controller.)
            self._pause_reading()
            self._task = self.loop.create_task(self._implicit_tls())
        else:
            self._greet_soon()

    def _refuse_session(self, client: Any, refusal: Refusal) -> None:
        """Refuse the session before it starts (a connection limit): 421, then close."""
        conn = self.conn
        assert conn is not None
        response: Response = getattr(conn.replies, refusal)
        # INFO, not WARNING: a connection flood must not become a log flood.
        log.info("%s refused: %s", peer_text(client), response)
        conn.refuse_connection(response)
        self._finish()

    # -- the PROXY protocol header (proxy.py), before the greeting ---------------------------

    def _proxy_received(self, data: bytes) -> None:
        buffer = self._proxy_buffer
        assert buffer is not None and self.session is not None
        buffer += data
        found = proxy.read_header(bytes(buffer))
        if found is None:
            return  # incomplete; read_header bounds how long a header may grow
        header, used = found
        self._proxy_buffer = None
        if self._proxy_timer is not None:
            self._proxy_timer.cancel()
        self.session.proxy_data = header
        if not header.valid:
            self._proxy_refused(header.error)
            return
        assert self.conn is not None
        client = client_peer(self.session.peer, header)
        refusal = self._server._admit_address(self, client)
        if refusal is not None:
            self._refuse_session(client, refusal)
            return
        if log.isEnabledFor(logging.INFO):
            log.info("%s connected via %s", self._peer(), peer_text(self.session.peer))
        if len(buffer) > used:
            # Bytes after the header, before our greeting: an early talker (checklist B3),
            # which the connection refuses.
            self.conn.receive_data(bytes(buffer[used:]))
            self._finish()
            return
        hook = self._hooks.get("PROXY")
        if hook is None:
            self._greet_soon()
        else:
            self._pause_reading()
            self._task = self.loop.create_task(self._proxy_hook(hook, header))

    async def _proxy_hook(self, hook: Callable[..., Any], header: proxy.ProxyData) -> None:
        """aiosmtpd's rule: a true value accepts the connection. A hook that raises
        refuses it (never an accident that lets an unchecked client in)."""
        try:
            result = hook(self, self.session, self.envelope, header)
            if inspect.isawaitable(result):
                result = await result
            accepted = bool(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s handle_PROXY failed", self._peer())
            accepted = False
        finally:
            self._task = None
        if self._closing:
            return
        if accepted:
            self._resume_reading()
            self._greet_soon()
        else:
            self._proxy_refused("refused by handle_PROXY")

    def _proxy_refused(self, why: str) -> None:
        """No greeting and no reply: whoever sent this is not the load balancer."""
        if self._closing:
            return
        log.info("%s PROXY: %s", self._peer(), why)
        self._close_transport()

    def _greet_soon(self) -> None:
        if self._server.greeting_delay > 0:
            self.loop.call_later(self._server.greeting_delay, self._greet)
        else:
            self._greet()

    async def _implicit_tls(self) -> None:
        transport, context = self.transport, self._tls_on_connect
        assert transport is not None and context is not None
        try:
            new_transport = await self.loop.start_tls(
                # A stream socket's transport, so a WriteTransport, which 3.11+'s
                # start_tls asks for; the attribute is typed with the base class.
                cast(asyncio.WriteTransport, transport),
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._server.tls_handshake_timeout,
            )
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as error:
            log.info("%s TLS handshake failed: %s", self._peer(), error)
            self._tls_buffer = None
            self._close_transport()
            self._task = None
            return
        self._task = None
        if new_transport is None or self._closing:
            self._close_transport()
            return
        self.transport = new_transport
        if self.session is not None:
            self.session.ssl = self._ssl_info(new_transport)
        self._last_progress = monotonic()
        buffered, self._tls_buffer = self._tls_buffer or [], None
        self._greet_soon()
        for data in buffered:  # a client that spoke before the banner is refused there
            self.data_received(data)

    def _greet(self) -> None:
        if self._closing or self.conn is None:
            return
        self._greeted = True
        self.conn.start()
        if FAST_KINDS <= self._at_once and not log.isEnabledFor(logging.INFO):
            # The handler has no hook for any of the transaction's events and nothing is
            # logged per message: the connection runs them in the codec until something
            # else comes (ServerConnection.fast_path), with no event for this layer.
            self._fast = self.conn.fast_path(
                data_min_rate=self._server.data_min_rate, now=self._last_progress
            )
        self._flush()

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from the client, fed to the connection's state machine."""
        if self._closing:
            return
        if len(data) > READ_SIZE:  # message content, on a transport that reads big: reads.py
            small_reads(self.transport, self)  # type: ignore[arg-type]
        fast = self._fast
        if fast is not None:
            out = fast.receive(data, EVENTS_PER_TURN, monotonic())
            if out is not None:
                if out:  # not closing (above): the transport is there and open
                    self.transport.write(out)  # type: ignore[union-attr]
                return
            if fast.closed:
                # It answered QUIT: the session is over, with nothing for the state
                # machine to go on with. Its last replies, then close.
                self._fast = None
                replies = fast.take_over()[7]  # (hello, .., closed, replies, ..)
                self.transport.write(replies)  # type: ignore[union-attr]
                self._close_transport()
                return
            # It stopped (its input is fed already): the state machine goes on from there,
            # from the next turn (this one may have had all its events: checklist B10).
            self._take_over()
            self._budget = 0
            step = self._advance()
            if step is not None:
                self._await(step)
            return
        conn = self.conn
        if conn is None:
            return
        if not self._greeted:  # the rare cases before the banner, off the hot path
            if self._proxy_buffer is not None:
                self._proxy_received(data)
                return
            if self._tls_buffer is not None:
                self._tls_buffer.append(data)  # decrypted data read before start_tls returned
                return
            # Otherwise a client that talks before the banner: the connection refuses it.
        if self._tls_buffer is not None:
            self._tls_buffer.append(data)  # encrypted-channel data, read before start_tls returned
            return
        if self._task is None:  # _process(), with the data: one call per read
            self._budget = EVENTS_PER_TURN
            step = self._advance(data)
            if step is not None:
                self._await(step)
            return
        conn.receive_data(data)  # for the task: a hook runs, or AUTH waits for a line
        waiter = self._input_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool | None:
        """asyncio: the client closed its side."""
        self._take_over()
        if self.conn is not None:
            self.conn.receive_eof()
            if self._task is None and not self._closing:
                self._process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection is gone; a message still arriving is not kept."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        waiter = self._input_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._message_open:  # a client that vanished mid-DATA: store nothing
            aborted = self._abort_message()
            if aborted is not None:
                self.loop.create_task(aborted)  # type: ignore[arg-type]
        if self._admitted:
            self._server._release(self)
            self._admitted = False
            if log.isEnabledFor(logging.INFO):
                log.info("%s disconnected", self._peer())
        self.transport = None

    def pause_writing(self) -> None:
        # A client that pipelines and does not read: stop reading until it catches up.
        """asyncio: the client is not reading its replies; stop reading its commands."""
        self._write_paused = True
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        """asyncio: the client caught up; read again."""
        self._write_paused = False
        self._resume_reading()

    def _resume_reading(self) -> None:
        """Read again, unless a hook is running or the client is not reading our replies."""
        if (
            self.transport is not None
            and not self._closing
            and self._task is None
            and not self._write_paused
        ):
            self.transport.resume_reading()  # type: ignore[attr-defined]

    # -- the event loop of one connection -------------------------------------------------

    def _process(self) -> None:
        """Answer the events that have arrived; hand over to a task when a hook must be
        awaited (until then, no task and no coroutine: the fast path)."""
        self._budget = EVENTS_PER_TURN  # called from the event loop: a new turn
        step = self._advance()
        if step is not None:
            self._await(step)

    def _await(self, step: Awaitable[None]) -> None:
        """Go on in a task, from ``step`` (a hook to await)."""
        self._pause_reading()  # no new input until the hook has answered
        self._task = self.loop.create_task(self._process_async(step))
        limit = self._server.hook_timeout
        if limit is not None:  # the hook's deadline may come before any idle one
            self._server._idle.arm(self.loop, monotonic() + limit * (1 + 1 / SLACK))

    async def _process_async(self, first: Awaitable[None]) -> None:
        step: Awaitable[None] | None = first
        try:
            while step is not None:
                await step
                step = self._advance()
        except asyncio.CancelledError:
            raise
        except ConnectionResetError:
            # A hook says the client is gone: drop the connection, no reply, no
            # handle_exception (aiosmtpd's rule).
            log.info("%s connection reset during a hook", self._peer())
            if self.conn is not None:
                self.conn.close()
            self._close_transport()
        except Exception:
            log.exception("%s internal error", self._peer())
            self._abort()
        finally:
            self._task = None
            self._resume_reading()

    def _advance(self, data: bytes | None = None) -> Awaitable[None] | None:
        """Answer events until the connection needs data or closes (None), or until one
        must be awaited: a hook, or ``asyncio.sleep(0)`` once this turn's budget of events
        is spent (checklist B10: a read of thousands of pipelined commands must not keep
        the loop from other connections, and a hook that does not suspend never gives it
        back by itself). The replies written so far go out before any wait. Events the
        handler has no hook for come answered already, several at a time (at_once).
        ``data``: a read to feed the connection first."""
        conn = self.conn
        assert conn is not None
        at_once = self._at_once
        try:
            while True:
                if self._budget <= 0:
                    self._budget = EVENTS_PER_TURN
                    self._flush()
                    return asyncio.sleep(0)
                events = conn.receive(data, self._budget)
                data = None
                if events[0] is not NEED_DATA:
                    self._last_progress = monotonic()
                for event in events:
                    kind = type(event)
                    if kind in at_once:
                        self._budget -= 1
                        SEEN[kind](self, event)
                        continue
                    if event is NEED_DATA:  # _flush(), one call less per read
                        data = conn.data_to_send()
                        transport = self.transport
                        if data and transport is not None and not transport.is_closing():
                            transport.write(data)  # type: ignore[attr-defined]
                        return None
                    if event is CLOSED:
                        self._finish()
                        return None
                    self._budget -= 1
                    step = self._dispatch(event)  # type: ignore[arg-type]
                    if step is not None:
                        self._flush()
                        return step
        except Exception:
            log.exception("%s internal error", self._peer())
            self._abort()
            return None

    def _dispatch(self, event: ev.Event) -> Awaitable[None] | None:
        self._last_progress = monotonic()
        return _HANDLERS[type(event)](self, event)

    def _at_once_kinds(self) -> frozenset[type[ev.Event]]:
        """The events answered as they come (``ServerConnection.answer_at_once``): those
        the handler has no hook for; decided once per connection."""
        server = self._server
        return server._at_once_kinds(server.decode_data and not self.enable_SMTPUTF8)

    def _idle_check(self, now: float) -> float:
        """The idle and hook timeouts (``Server._idle`` calls it): end this session if
        its deadline has passed; otherwise say when to check it next."""
        if self._closing:
            return inf
        if self._fast is not None:
            self._last_progress = self._fast.last_progress
        # While a hook runs (a task, not waiting for input), the time since its event was
        # dispatched is the hook's time, held to hook_timeout instead of the idle timeout.
        busy = self._task is not None and self._input_waiter is None
        limit = self._server.hook_timeout if busy else self._server.timeout
        if limit is None:  # no limit on hooks: look again once an idle timeout has passed
            return now + self._server.timeout
        deadline = self._last_progress + limit
        if now < deadline:
            return deadline + limit / SLACK
        if busy:
            log.warning("%s handler did not answer in %.0f s; closing", self._peer(), limit)
            self._end(ServerConnection.hook_timed_out)  # connection_lost() cancels the hook
        else:
            log.info("%s idle timeout", self._peer())
            self._end(ServerConnection.timeout)
        return inf

    def _on_delay(self, event: ev.Delay) -> Awaitable[None] | None:
        # The replies so far are written before this is awaited (_advance), and input is
        # not read meanwhile: a client making error after error gets them one a second.
        return asyncio.sleep(event.seconds)

    # -- STARTTLS ----------------------------------------------------------------------------

    def _on_starttls(self, event: ev.StartTLS) -> Awaitable[None] | None:
        return self._starttls()

    async def _starttls(self) -> None:
        conn, transport = self.conn, self.transport
        assert conn is not None and transport is not None and self.tls_context is not None
        conn.respond_default()  # 220
        self._flush()
        self._tls_buffer = []
        try:
            new_transport = await self.loop.start_tls(
                # A stream socket's transport, so a WriteTransport, which 3.11+'s
                # start_tls asks for; the attribute is typed with the base class.
                cast(asyncio.WriteTransport, transport),
                self,
                self.tls_context,
                server_side=True,
                ssl_handshake_timeout=self._server.tls_handshake_timeout,
            )
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as error:
            log.info("%s TLS handshake failed: %s", self._peer(), error)
            self._tls_buffer = None
            conn.close()
            self._close_transport()
            # The handler hears of it (aiosmtpd's TLSSetupException); no reply can go out.
            await self._handle_exception(self._tls_setup_error(error))
            return
        if new_transport is None:
            self._close_transport()
            return
        self.transport = new_transport
        conn.tls_established()
        old = self.session
        # RFC 3207 §4.2: nothing learned before TLS survives it; the client's address
        # does, the one its load balancer's PROXY header gave included (fault 5).
        self.session = self._create_session()
        if old is not None:
            self.session.peer = old.peer
            self.session.proxy_data = old.proxy_data
        self.session.ssl = self._ssl_info(new_transport)
        self.envelope = self._create_envelope()
        hook = self._hooks.get("STARTTLS")
        accepted = True if hook is None else hook(self, self.session, self.envelope)
        if inspect.isawaitable(accepted):
            accepted = await accepted
        if not accepted:
            # The session stays, but refuses mail (aiosmtpd): 554 to all but QUIT.
            log.info("%s handle_STARTTLS refused the TLS session", self._peer())
            conn.tls_refused()
        buffered, self._tls_buffer = self._tls_buffer, None
        for data in buffered:
            conn.receive_data(data)

    @staticmethod
    def _ssl_info(transport: asyncio.BaseTransport) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for key in ("ssl_object", "cipher", "peercert", "compression"):
            info[key] = transport.get_extra_info(key)
        return info


_HANDLERS: dict[type, Callable[[SMTP, Any], Awaitable[None] | None]] = {
    ev.Hello: SMTP._on_hello,
    ev.MailFrom: SMTP._on_mail,
    ev.RcptTo: SMTP._on_rcpt,
    ev.Content: SMTP._on_content,
    ev.MessageEnd: SMTP._on_message_end,
    ev.MessageAborted: SMTP._on_message_aborted,
    ev.Reset: SMTP._on_reset,
    ev.Noop: SMTP._on_noop,
    ev.Verify: SMTP._on_verify,
    ev.Expand: SMTP._on_expand,
    ev.Help: SMTP._on_help,
    ev.Quit: SMTP._on_quit,
    ev.StartTLS: SMTP._on_starttls,
    ev.Auth: SMTP._on_auth,
    ev.Delay: SMTP._on_delay,
    ev.Unknown: SMTP._on_unknown,
}
