"""The asyncio SMTP server: existing aiosmtpd handlers, unchanged, on the sans-IO
ServerConnection.

One ``SMTP`` protocol object per connection (it is the ``server`` argument handlers
receive, with aiosmtpd's attribute names). Bytes from the socket go to the connection
in whole chunks; its events are answered synchronously when the handler has no hook for
them, and through a task, with reading paused, when a hook has to be awaited. Replies
are batched: one ``transport.write`` per batch of events (RFC 2920).
"""

from __future__ import annotations

import asyncio
import base64
import enum
import functools
import inspect
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from types import ModuleType
from typing import Any, NamedTuple, TypeGuard, cast

from ferrosmtp import codec, proxy
from ferrosmtp.auth import SASLCancelled, SASLError, decode_response
from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import CLOSED, NEED_DATA, Response
from ferrosmtp.protocol.server import ServerConfig, ServerConnection

__all__ = [
    "MISSING",
    "SMTP",
    "AuthResult",
    "Controller",
    "Envelope",
    "LoginPassword",
    "Server",
    "Session",
    "auth_mechanism",
    "get_localhost",
]

log = logging.getLogger("ferrosmtp.server")

DATA_SIZE_DEFAULT = 32 << 20
# Events one connection may handle before giving other connections a turn: one read can
# hold thousands of pipelined commands (checklist B10, fairness under a flood).
EVENTS_PER_TURN = 256
INTERNAL_ERROR = Response.of(451, "Error: internal server error", "4.3.0")


class _Missing(enum.Enum):
    MISSING = object()


MISSING = _Missing.MISSING
"""What a hook returns to say "do what you would have done without me" (aiosmtpd)."""


def _is_missing(value: object) -> bool:
    # aiosmtpd's own MISSING counts too: handlers written for it import theirs.
    return value is MISSING or type(value).__name__ == "_Missing"


class AuthResult:
    """What an authenticator or an ``auth_<MECH>`` method returns (aiosmtpd's shape).

    ``handled`` means the method already answered the client itself.
    """

    def __init__(
        self,
        *,
        success: bool,
        handled: bool = True,
        message: str | None = None,
        auth_data: Any = None,
    ) -> None:
        self.success = success
        self.handled = handled
        self.message = message
        self.auth_data = auth_data

    def __repr__(self) -> str:
        return (
            f"AuthResult(success={self.success}, handled={self.handled}, message={self.message!r})"
        )


def _is_auth_result(value: object) -> TypeGuard[AuthResult]:
    # aiosmtpd's own AuthResult counts too (authenticators written for it import theirs);
    # it has the same four attributes, which is all that is read from either.
    return isinstance(value, AuthResult) or type(value).__name__ == "AuthResult"


class LoginPassword(NamedTuple):
    login: bytes
    password: bytes


def auth_mechanism(actual_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Name an ``auth_...`` method's mechanism when the name is not a valid identifier."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        func.__auth_mechanism_name__ = actual_name  # type: ignore[attr-defined]
        return func

    return decorator


class Session:
    """Per-connection state handlers see (aiosmtpd's attributes; add your own freely)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.peer: Any = None
        self.ssl: dict[str, Any] | None = None
        self.host_name: str | None = None
        self.extended_smtp = False
        self.loop = loop
        self.proxy_data: Any = None
        self.auth_data: Any = None
        self.authenticated: bool | None = None
        self.login_data: Any = None


class Envelope:
    """One mail transaction (aiosmtpd's attributes, plus the ESMTP parameters as sent)."""

    def __init__(self) -> None:
        self.mail_from: str | None = None
        self.mail_options: list[str] = []
        self.mail_params: dict[str, str | None] = {}
        self.smtp_utf8 = False
        self.content: bytes | str | None = None
        self.original_content: bytes | None = None
        self.rcpt_tos: list[str] = []
        self.rcpt_options: list[str] = []
        self.rcpt_params: dict[str, dict[str, str | None]] = {}


def get_localhost() -> str:
    """'::1' when this host can bind IPv6 loopback, else '127.0.0.1' (aiosmtpd)."""
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind(("::1", 0))
            return "::1"
        except OSError:
            pass
    return "127.0.0.1"


_STATUS_CODE = re.compile(r"[2-5][0-5][0-9]\Z", re.ASCII)
_ENHANCED_CODE = re.compile(r"([245])\.[0-9]{1,3}\.[0-9]{1,3}\Z", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_status(status: str | bytes) -> Response:
    """Turn a hook's reply string (``"250 OK"``, ``"550 5.1.1 No"``, multi-line with CRLF)
    into a Response. Raises ValueError for anything that is not a reply.

    Checklist B15: a CRLF inside makes a multi-line reply (all lines must carry the same
    code), never a second reply; other control characters are replaced by "?".
    """
    if isinstance(status, bytes):
        status = status.decode("utf-8", "replace")
    if not isinstance(status, str):
        raise ValueError(f"a hook returned {type(status).__name__}, not a reply string")
    status = status.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    raw = status.replace("\r\n", "\n").rstrip("\n").split("\n")
    code_text = raw[0][:3]
    if _STATUS_CODE.match(code_text) is None:
        raise ValueError(f"not an SMTP reply: {status!r}")
    lines = []
    for line in raw:
        if line[:3] != code_text or (len(line) > 3 and line[3] not in " -"):
            raise ValueError(f"not an SMTP reply: {status!r}")
        lines.append(_CONTROL.sub("?", line[4:]))
    enhanced = None
    first = lines[0].split(" ", 1)[0]
    m = _ENHANCED_CODE.match(first)
    if m is not None and m.group(1) == code_text[0]:
        enhanced = first
        lines = [
            (line[len(first) :].lstrip(" ") if line.startswith(first) else line) for line in lines
        ]
    return Response(int(code_text), tuple(lines), enhanced)


def _peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return repr(peer)


_NO_PEER = object()


@functools.lru_cache(maxsize=4096)
def _client_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client's address (an IPv4-mapped IPv6 address as the IPv4 one), None if the
    peer is not an IP address. Cached: clients come back, and parsing is most of the cost
    of admitting a connection."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return getattr(ip, "ipv4_mapped", None) or ip


def _address_key(host: str) -> str:
    """The key under which a client address is counted: the address, or its /64 for
    IPv6 (one client per /64)."""
    ip = _client_ip(host)
    if ip is None:
        return host
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _printable(text: str, limit: int = 200) -> str:
    """Text safe to log: control characters escaped, length capped."""
    if len(text) <= limit and text.isprintable():
        return text
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


class _Hooks:
    """The hooks of one handler, found once by name (aiosmtpd's discovery rules)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.by_name: dict[str, Callable[..., Any]] = {}
        for name in dir(handler):
            if name.startswith("handle_"):
                value = getattr(handler, name, None)
                if callable(value):
                    self.by_name[name[len("handle_") :]] = value
        self.ehlo_form: str | None = None
        ehlo = self.by_name.get("EHLO")
        if ehlo is not None:
            arity = len(inspect.signature(ehlo).parameters)
            if arity == 4:
                self.ehlo_form = "old"
            elif arity == 5:
                self.ehlo_form = "new"
            else:
                raise RuntimeError("Unsupported EHLO Hook")

    def get(self, name: str) -> Callable[..., Any] | None:
        return self.by_name.get(name)


class SMTP(asyncio.Protocol):
    """One SMTP connection; what aiosmtpd handlers receive as ``server``."""

    AuthLoginUsernameChallenge = "User Name\x00"
    AuthLoginPasswordChallenge = "Password\x00"

    def __init__(self, server: Server) -> None:
        self._server = server
        self.event_handler = server.handler
        self.hostname = server.hostname
        self.data_size_limit = server.data_size_limit
        self.enable_SMTPUTF8 = server.enable_SMTPUTF8
        self.tls_context = server.tls_context
        self.require_starttls = server.require_starttls
        self.loop = server.loop
        self.transport: asyncio.BaseTransport | None = None
        self.session: Session | None = None
        self.envelope: Envelope | None = None
        self.conn: ServerConnection | None = None
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
        self._labelled_peer: Any = _NO_PEER  # the peer _peer_label was made for
        self._peer_label = ""
        self._peer_key: str | None = None
        self._auth_methods_cache: dict[str, Callable[..., Awaitable[Any]]] | None = None

    @property
    def _auth_methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        """Mechanism name -> method, found on first use (most connections never AUTH)."""
        if self._auth_methods_cache is None:
            self._auth_methods_cache = self._server._auth_methods_for(self)
        return self._auth_methods_cache

    # -- aiosmtpd's override points -----------------------------------------------------

    def _create_session(self) -> Session:
        return Session(self.loop)

    def _create_envelope(self) -> Envelope:
        return Envelope()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        refusal = self._server._admit(self, peer)
        if refusal is not None:
            # INFO, not WARNING: a connection flood must not become a log flood.
            log.info("%s refused: %s", _peer_text(peer), refusal)
            transport.write(codec.format_reply(421, f"{self.hostname} {refusal}", "4.7.0"))  # type: ignore[attr-defined]
            transport.close()
            self._closing = True
            return
        self._admitted = True
        self.session = self._create_session()
        self.session.peer = peer
        self.envelope = self._create_envelope()
        self.conn = ServerConnection(
            self._server._config(implicit_tls=self._server.ssl_context is not None),
            codec=self._server.codec,
        )
        self._last_progress = self.loop.time()
        self._timer = self.loop.call_later(self._server.timeout, self._on_timer)
        if log.isEnabledFor(logging.INFO):
            log.info("%s connected", _peer_text(peer))
        if self._server.proxy_protocol_timeout is not None:
            # The load balancer's header first; the greeting once it has been accepted.
            self._proxy_buffer = bytearray()
            self._proxy_timer = self.loop.call_later(
                self._server.proxy_protocol_timeout, self._proxy_refused, "PROXY header timeout"
            )
            return
        if self._server.ssl_context is not None:
            # Implicit TLS (RFC 8314): the connection was admitted (and counted) above, in
            # plaintext, so a flood of silent handshakes cannot pass max_connections.
            self._tls_buffer = []
            self._task = self.loop.create_task(self._implicit_tls())
        else:
            self._greet_soon()

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
        if len(buffer) > used:
            # Bytes after the header, before our greeting: an early talker (checklist B3).
            self._greeted = True
            self._write(codec.format_reply(554, "Error: SMTP protocol synchronization", "5.5.0"))
            self._close_transport()
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
        transport = self.transport
        assert transport is not None and self._server.ssl_context is not None
        try:
            new_transport = await self.loop.start_tls(
                # A stream socket's transport, so a WriteTransport, which 3.11+'s
                # start_tls asks for; the attribute is typed with the base class.
                cast(asyncio.WriteTransport, transport),
                self,
                self._server.ssl_context,
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
        self._last_progress = self.loop.time()
        buffered, self._tls_buffer = self._tls_buffer or [], None
        self._greet_soon()
        for data in buffered:  # a client that spoke before the banner is refused there
            self.data_received(data)

    def _greet(self) -> None:
        if self._closing or self.conn is None:
            return
        self._greeted = True
        self.conn.start()
        self._flush()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or self._closing:
            return
        if not self._greeted:  # the rare cases before the banner, off the hot path
            if self._proxy_buffer is not None:
                self._proxy_received(data)
            elif self._tls_buffer is not None:
                self._tls_buffer.append(data)  # decrypted data read before start_tls returned
            else:
                # Checklist B3: a client that talks before the banner is not a real MTA.
                self._write(
                    codec.format_reply(554, "Error: SMTP protocol synchronization", "5.5.0")
                )
                self._close_transport()
            return
        if self._tls_buffer is not None:
            self._tls_buffer.append(data)  # encrypted-channel data, read before start_tls returned
            return
        conn.receive_data(data)
        waiter = self._input_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._task is None:
            self._process()

    def eof_received(self) -> bool | None:
        if self.conn is not None:
            self.conn.receive_eof()
            if self._task is None and not self._closing:
                self._process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
        waiter = self._input_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        aborted = self._abort_message()  # a client that vanished mid-DATA: store nothing
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
        self._write_paused = True
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
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
        try:
            step = self._advance()
        except Exception:
            log.exception("%s internal error", self._peer())
            self._abort()
            return
        if step is not None:
            self._pause_reading()  # no new input until the hook has answered
            self._task = self.loop.create_task(self._process_async(step))
            limit = self._server.hook_timeout
            if limit is not None and limit < self._server.timeout and self._timer is not None:
                self._timer.cancel()  # the hook's deadline comes before the idle one
                self._timer = self.loop.call_later(limit, self._on_timer)

    async def _process_async(self, first: Awaitable[None]) -> None:
        step: Awaitable[None] | None = first
        try:
            while step is not None:
                await step
                step = self._advance()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s internal error", self._peer())
            self._abort()
        finally:
            self._task = None
            self._resume_reading()

    def _advance(self) -> Awaitable[None] | None:
        """Answer events until the connection needs data or closes (None), or until one
        must be awaited: a hook, or ``asyncio.sleep(0)`` once this turn's budget of events
        is spent (checklist B10: a read of thousands of pipelined commands must not keep
        the loop from other connections, and a hook that does not suspend never gives it
        back by itself). The replies written so far go out before any wait."""
        conn = self.conn
        assert conn is not None
        while True:
            if self._budget <= 0:
                self._budget = EVENTS_PER_TURN
                self._flush()
                return asyncio.sleep(0)
            event = conn.next_event()
            if event is NEED_DATA:
                self._flush()
                return None
            if event is CLOSED:
                self._finish()
                return None
            self._budget -= 1
            step = self._dispatch(event)
            if step is not None:
                self._flush()
                return step

    def _dispatch(self, event: ev.Event) -> Awaitable[None] | None:
        self._last_progress = self.loop.time()
        return _HANDLERS[type(event)](self, event)

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
        self._write(
            codec.format_reply(421, f"{self.hostname} Error: internal server error", "4.3.0")
        )
        self._close_transport()

    def _shut_down(self) -> None:
        """The server is stopping: say so (RFC 5321 §3.8: 421, then close), whatever the
        session was doing. A message not yet answered is not kept; its client will retry."""
        if self._closing or self.transport is None:
            return
        if self._greeted:
            self._write(codec.format_reply(421, f"{self.hostname} Service shutting down", "4.3.2"))
        self._close_transport()

    def _pause_reading(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def _peer(self) -> str:
        """The client's address for log lines, formatted once (a line per message)."""
        peer = self.session.peer if self.session else None
        if peer is not self._labelled_peer:
            self._labelled_peer, self._peer_label = peer, _peer_text(peer)
        return self._peer_label

    def _on_timer(self) -> None:
        if self._closing or self.conn is None:
            return
        # While a hook runs (a task, not waiting for input), the time since its event was
        # dispatched is the hook's time, held to hook_timeout instead of the idle timeout.
        busy = self._task is not None and self._input_waiter is None
        limit = self._server.hook_timeout if busy else self._server.timeout
        idle = self.loop.time() - self._last_progress
        if limit is None or idle < limit:
            wait = self._server.timeout if limit is None else max(limit - idle, 0.01)
            self._timer = self.loop.call_later(wait, self._on_timer)
            return
        if busy:
            log.warning("%s handler did not answer in %.0f s; closing", self._peer(), limit)
            self._write(
                codec.format_reply(421, f"{self.hostname} Error: handler timed out", "4.3.0")
            )
            self._close_transport()  # connection_lost() cancels the hook's task
            return
        log.info("%s idle timeout", self._peer())
        self.conn.timeout()
        self._finish()

    # -- answering events --------------------------------------------------------------

    def _respond(self, status: Any, event: ev.Event | None = None) -> None:
        """Answer the waiting event with a hook's status (MISSING: the default)."""
        conn = self.conn
        assert conn is not None
        if _is_missing(status) or status is None:
            conn.respond_default()
            return
        if isinstance(status, Response):
            conn.respond_with(status)
            return
        try:
            response = parse_status(status)
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

    def _simple(self, name: str, *args: Any) -> Awaitable[None] | None:
        hook = self._hooks.get(name)
        if hook is None:
            self.conn.respond_default()  # type: ignore[union-attr]
            return None
        return self._hooked(hook, *args)

    async def _hooked(self, hook: Callable[..., Any], *args: Any) -> None:
        self._respond(await self._call(hook, *args))

    def _on_hello(self, event: ev.Hello) -> Awaitable[None] | None:
        aborted = self._abort_message()
        if aborted is not None:
            return self._sequence(aborted, self._on_hello(event))
        self.envelope = self._create_envelope()
        session = self.session
        assert session is not None
        extended = event.verb != "HELO"
        hook = self._hooks.get("EHLO" if extended else "HELO")
        if hook is None:
            session.host_name = event.hostname
            session.extended_smtp = extended
            self.conn.respond_default()  # type: ignore[union-attr]
            return None
        return self._hello_hook(hook, event)

    async def _hello_hook(self, hook: Callable[..., Any], event: ev.Hello) -> None:
        session = self.session
        assert session is not None and self.conn is not None
        if event.verb == "HELO":
            status = await self._call(hook, event.hostname)
            if _is_missing(status):
                session.host_name = event.hostname
                status = f"250 {self.hostname}"
        else:
            session.extended_smtp = True
            lines = [self.hostname, *event.extensions]
            if self._hooks.ehlo_form == "new":
                responses = [
                    f"250{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines)
                ]
                status = await self._call(hook, event.hostname, responses)
                if isinstance(status, (list, tuple)):
                    status = "\r\n".join(str(s) for s in status)
            else:  # the deprecated form: our lines, then whatever the hook says
                said = await self._call(hook, event.hostname)
                said_response = parse_status(said) if isinstance(said, (str, bytes)) else None
                if said_response is not None and said_response.code == 250:
                    status = "\r\n".join(
                        [f"250-{line}" for line in lines[:-1]]
                        + [f"250-{x}" for x in said_response.lines[:-1]]
                        + [f"250 {said_response.lines[-1]}"]
                    )
                else:
                    status = said
        self._respond(status)
        if self.conn.hello is not None and session.host_name is None:
            session.host_name = event.hostname

    def _on_mail(self, event: ev.MailFrom) -> Awaitable[None] | None:
        envelope = self.envelope
        assert envelope is not None
        address = "<>" if event.path.is_null else event.address
        options = [(k if v is None else f"{k}={v}").upper() for k, v in event.params.items()]
        envelope.smtp_utf8 = "SMTPUTF8" in event.params
        envelope.mail_params = dict(event.params)
        hook = self._hooks.get("MAIL")
        if hook is None:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            self.conn.respond_default()  # type: ignore[union-attr]
            return None
        return self._hooked(hook, address, options)

    def _on_rcpt(self, event: ev.RcptTo) -> Awaitable[None] | None:
        envelope = self.envelope
        assert envelope is not None
        address = event.address
        options = [(k if v is None else f"{k}={v}").upper() for k, v in event.params.items()]
        envelope.rcpt_params[address] = dict(event.params)
        hook = self._hooks.get("RCPT")
        if hook is None:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
            self.conn.respond_default()  # type: ignore[union-attr]
            return None
        return self._hooked(hook, address, options)

    def _on_content(self, event: ev.Content) -> Awaitable[None] | None:
        self._message_open = True
        rate = self._server.data_min_rate
        if rate:
            # Checklist B9: message content counts as progress only at the minimum rate,
            # so a DATA trickled slower than that is cut off by the idle timeout.
            now = self.loop.time()
            if self._data_started is None:
                self._data_started, self._data_bytes = now, 0
            self._data_bytes += len(event.data)
            self._last_progress = min(now, self._data_started + self._data_bytes / rate)
        hook = self._hooks.get("DATA_CHUNK")
        if hook is None:
            if self._server._reads_content:
                self._chunks.append(event.data)
            return None
        return self._chunk_hook(hook, event.data)

    def _abort_message(self) -> Awaitable[None] | None:
        """Drop a message that will not complete; a streaming handler cleans up."""
        self._chunks = []
        self._data_started = None
        self.__dict__.pop("_chunk_error", None)
        if not self._message_open:
            return None
        self._message_open = False
        hook = self._hooks.get("DATA_ABORT")
        if hook is None or self._hooks.get("DATA_CHUNK") is None:
            return None
        return self._abort_hook(hook, self.envelope)

    async def _abort_hook(self, hook: Callable[..., Any], envelope: Envelope | None) -> None:
        try:
            result = hook(self, self.session, envelope)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%s handle_DATA_ABORT failed", self._peer())

    async def _chunk_hook(self, hook: Callable[..., Any], data: bytes) -> None:
        try:
            result = hook(self, self.session, self.envelope, data)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # Remembered and answered at the end of the message; the handler cleans up
            # what it stored so far now (a half-written file, say).
            self._chunk_error = error
            abort = self._hooks.get("DATA_ABORT")
            if abort is not None:
                await self._abort_hook(abort, self.envelope)

    def _on_message_end(self, event: ev.MessageEnd) -> Awaitable[None] | None:
        envelope = self.envelope
        assert envelope is not None and self.conn is not None
        self._message_open = False
        self._data_started = None
        streamed = self._hooks.get("DATA_CHUNK") is not None
        content = b"".join(self._chunks)
        self._chunks = []
        envelope.original_content = None if streamed else content
        envelope.content = None if streamed else content
        if self._server.decode_data and not streamed:
            if self.enable_SMTPUTF8:
                envelope.content = content.decode("utf-8", errors="surrogateescape")
            else:
                try:
                    envelope.content = content.decode("ascii")
                except UnicodeDecodeError:
                    self._end_message(Response.of(500, "Error: strict ASCII mode", "5.6.0"), event)
                    return None
        hook = self._hooks.get("DATA")
        legacy = getattr(self.event_handler, "process_message", None) if hook is None else None
        if hook is None and legacy is None and not hasattr(self, "_chunk_error"):
            self._end_message(None, event)
            return None
        return self._message_hook(hook, legacy, event)

    async def _message_hook(
        self, hook: Callable[..., Any] | None, legacy: Any, event: ev.MessageEnd
    ) -> None:
        chunk_error = self.__dict__.pop("_chunk_error", None)
        if chunk_error is not None:
            status: Any = await self._handle_exception(chunk_error)
        elif hook is not None:
            status = await self._call(hook)
        else:
            session, envelope = self.session, self.envelope
            assert session is not None and envelope is not None
            try:
                status = legacy(
                    session.peer, envelope.mail_from, envelope.rcpt_tos, envelope.content
                )
                if inspect.isawaitable(status):
                    status = await status
            except Exception as error:
                status = await self._handle_exception(error)
        self._end_message(status, event)

    def _end_message(self, status: Any, event: ev.MessageEnd) -> None:
        conn, envelope = self.conn, self.envelope
        assert conn is not None and envelope is not None
        if self._server.lmtp and isinstance(status, (list, tuple)):
            conn.respond_lmtp([self._lmtp_response(s, event) for s in status])
        elif self._server.lmtp:
            if _is_missing(status) or status is None:
                response = conn.default_response(event)
            else:
                try:
                    response = parse_status(status)
                except ValueError:
                    response = INTERNAL_ERROR
            conn.respond_lmtp([response] * len(conn.recipients))
        else:
            self._respond(status)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s message from=<%s> rcpts=%d size=%d",
                self._peer(),
                _printable(envelope.mail_from or ""),
                len(envelope.rcpt_tos),
                event.size,
            )
        self.envelope = self._create_envelope()

    def _lmtp_response(self, status: Any, event: ev.MessageEnd) -> Response:
        assert self.conn is not None
        if _is_missing(status) or status is None:
            return self.conn.default_response(event)
        try:
            return parse_status(status)
        except ValueError:
            log.error("%s handler returned %r, not a reply; answering 451", self._peer(), status)
            return INTERNAL_ERROR

    def _on_message_aborted(self, event: ev.MessageAborted) -> Awaitable[None] | None:
        log.info("%s message refused: %s", self._peer(), event.response)
        step = self._abort_message()
        self.envelope = self._create_envelope()
        return step

    def _on_reset(self, event: ev.Reset) -> Awaitable[None] | None:
        aborted = self._abort_message()
        self.envelope = self._create_envelope()
        step = self._simple("RSET")
        if aborted is None:
            return step
        return self._sequence(aborted, step)

    async def _sequence(self, *steps: Awaitable[None] | None) -> None:
        for step in steps:
            if step is not None:
                await step

    def _on_noop(self, event: ev.Noop) -> Awaitable[None] | None:
        return self._simple("NOOP", event.arg)

    def _on_verify(self, event: ev.Verify) -> Awaitable[None] | None:
        return self._simple("VRFY", event.arg)

    def _on_expand(self, event: ev.Expand) -> Awaitable[None] | None:
        return self._simple("EXPN", event.arg)

    def _on_help(self, event: ev.Help) -> Awaitable[None] | None:
        return self._simple("HELP", event.arg)

    def _on_quit(self, event: ev.Quit) -> Awaitable[None] | None:
        return self._simple("QUIT")

    def _on_unknown(self, event: ev.Unknown) -> Awaitable[None] | None:
        self.conn.respond_default()  # type: ignore[union-attr]
        return None

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
            return
        if new_transport is None:
            self._close_transport()
            return
        self.transport = new_transport
        conn.tls_established()
        peer = self.session.peer if self.session else None
        # RFC 3207 §4.2: nothing learned before TLS survives it.
        self.session = self._create_session()
        self.session.peer = peer
        self.session.ssl = self._ssl_info(new_transport)
        self.envelope = self._create_envelope()
        hook = self._hooks.get("STARTTLS")
        accepted = True if hook is None else hook(self, self.session, self.envelope)
        if inspect.isawaitable(accepted):
            accepted = await accepted
        if not accepted:
            log.info("%s handle_STARTTLS refused the TLS session", self._peer())
            conn.close()
            self._close_transport()
            return
        buffered, self._tls_buffer = self._tls_buffer, None
        for data in buffered:
            conn.receive_data(data)

    @staticmethod
    def _ssl_info(transport: asyncio.BaseTransport) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for key in ("ssl_object", "cipher", "peercert", "compression"):
            info[key] = transport.get_extra_info(key)
        return info

    # -- AUTH --------------------------------------------------------------------------------

    def _on_auth(self, event: ev.Auth) -> Awaitable[None] | None:
        return self._auth(event)

    async def _auth(self, event: ev.Auth) -> None:
        conn, session = self.conn, self.session
        assert conn is not None and session is not None
        if self._server._auth_blocked(self._peer_key):
            conn.auth_failed(
                Response.of(454, "Error: too many authentication failures, try later", "4.7.0")
            )
            return
        failures = conn.auth_failures
        await self._run_auth(event)
        if conn.auth_failures > failures:
            # Checklist B13: every failure costs the guesser time, and counts for its address.
            self._server._auth_failed(self._peer_key)
            log.warning("%s failed AUTH %s", self._peer(), event.mechanism)
            if self._server.auth_failure_delay > 0 and not self._closing:
                await asyncio.sleep(self._server.auth_failure_delay)

    async def _run_auth(self, event: ev.Auth) -> None:
        conn, session = self.conn, self.session
        assert conn is not None and session is not None
        args = [event.mechanism] + ([event.initial] if event.initial is not None else [])
        hook = self._hooks.get("AUTH")
        if hook is not None:
            status = await self._call(hook, args)
            if conn.auth_in_progress:
                if _is_missing(status) or status is None:
                    status = "535 5.7.8 Authentication credentials invalid"
                await self.push(status)
            return
        method = self._auth_methods[event.mechanism]
        try:
            result = method(self, args)
            while inspect.isawaitable(result):  # an async method, or one returning a coroutine
                result = await result
        except asyncio.CancelledError:
            raise
        except Exception as error:
            result = None
            await self.push(await self._handle_exception(error))
        if not conn.auth_in_progress:
            return
        success = "235 2.7.0 Authentication successful"
        invalid = "535 5.7.8 Authentication credentials invalid"
        if _is_auth_result(result):
            if result.success:
                session.authenticated = True
                session.auth_data = result.auth_data
                session.login_data = getattr(result.auth_data, "login", None)
                await self.push(result.message or success)
            elif not result.handled or result.message:
                await self.push(result.message or invalid)
            else:
                conn.auth_failed()
        elif result is None:
            conn.auth_failed()
        elif _is_missing(result) or result is False:
            await self.push(invalid)
        else:
            # aiosmtpd's legacy convention: any other value is the authenticated identity.
            # (Awaitables were awaited above: a coroutine object can never land here.)
            session.authenticated = True
            session.login_data = result
            await self.push(success)

    async def push(self, status: str | bytes) -> None:
        """Send a reply now (aiosmtpd's ``push``). Inside an AUTH exchange a 235 ends it
        with success, a 334 is a challenge, anything else ends it with failure."""
        conn = self.conn
        if conn is None or self._closing:
            return
        response = parse_status(status)
        if conn.auth_in_progress:
            if response.code == 334:
                conn.auth_challenge(" ".join(response.lines))
                self._flush()
            elif response.code == 235:
                if self.session is not None:
                    self.session.authenticated = True
                conn.auth_succeeded(response)
            else:
                conn.auth_failed(response)
            return
        self._flush()  # replies queued before this one go first
        self._write(codec.format_reply(response.code, list(response.lines), response.enhanced))

    async def challenge_auth(
        self, challenge: str | bytes, encode_to_b64: bool = True, log_client_response: bool = False
    ) -> bytes | Any:
        """Send ``334 challenge`` and return the client's decoded answer, or MISSING if it
        cancelled with "*" or sent invalid base64 (the client has then been answered)."""
        conn = self.conn
        assert conn is not None
        if isinstance(challenge, str):
            challenge = challenge.encode()
        text = (base64.b64encode(challenge) if encode_to_b64 else challenge).decode(
            "ascii", "replace"
        )
        conn.auth_challenge(text)
        self._flush()
        line = await self._next_auth_line()
        if line is None:
            return MISSING
        if log_client_response:
            log.debug("%s AUTH response %r", self._peer(), line)
        try:
            return decode_response(line)
        except SASLCancelled:
            conn.auth_failed(Response.of(501, "Auth aborted", "5.7.0"))
        except SASLError:
            conn.auth_failed(Response.of(501, "Can't decode base64", "5.5.2"))
        self._flush()
        return MISSING

    async def _next_auth_line(self) -> bytes | None:
        """Read events until the client's AUTH line; None if the exchange ended."""
        conn = self.conn
        assert conn is not None and self.transport is not None
        self.transport.resume_reading()  # type: ignore[attr-defined]
        try:
            while True:
                if not conn.auth_in_progress:
                    return None
                event = conn.next_event()
                if isinstance(event, ev.AuthLine):
                    self._last_progress = self.loop.time()
                    return event.data
                if isinstance(event, ev.AuthAborted) or event is CLOSED:
                    self._flush()
                    return None
                if event is NEED_DATA:
                    if self._closing:
                        return None
                    self._input_waiter = self.loop.create_future()
                    try:
                        await self._input_waiter
                    finally:
                        self._input_waiter = None
                    continue
                raise RuntimeError(f"unexpected {event!r} during AUTH")
        finally:
            self._pause_reading()

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            answer = await self.challenge_auth("")
            if _is_missing(answer):
                return AuthResult(success=False)
        else:
            try:
                answer = decode_response(args[1], initial=True)
            except SASLError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        try:
            _, login, password = answer.split(b"\x00")
        except ValueError:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._authenticate("PLAIN", LoginPassword(login, password))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if _is_missing(login):
                return AuthResult(success=False)
        else:
            try:
                login = decode_response(args[1], initial=True)
            except SASLError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if _is_missing(password):
            return AuthResult(success=False)
        return await self._authenticate("LOGIN", LoginPassword(login, password))

    async def _authenticate(self, mechanism: str, auth_data: LoginPassword) -> AuthResult:
        """Ask the authenticator (or the legacy auth_callback); either may be async."""
        server = self._server
        if server.authenticator is not None:
            result = server.authenticator(self, self.session, self.envelope, mechanism, auth_data)
            if inspect.isawaitable(result):
                result = await result
            # An authenticator returns an AuthResult, ferrosmtp's or aiosmtpd's (same
            # attributes). It is passed on unchecked; _run_auth checks what it got.
            return cast(AuthResult, result)
        if server.auth_callback is not None:
            ok = server.auth_callback(mechanism, *auth_data)
            if inspect.isawaitable(ok):
                ok = await ok
            if ok is True:
                return AuthResult(success=True, handled=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


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
    ev.Unknown: SMTP._on_unknown,
}


class Server:
    """An SMTP listener: ``await server.start(host, port)``, or ``async with``.

    The keyword arguments mirror aiosmtpd's ``SMTP`` where they exist; the rest are the
    limits and policies of DESIGN.md §4 and §7.
    """

    def __init__(
        self,
        handler: Any,
        *,
        hostname: str | None = None,
        ident: str | None = None,
        data_size_limit: int | None = DATA_SIZE_DEFAULT,
        enable_SMTPUTF8: bool = True,
        decode_data: bool = False,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 300,
        hook_timeout: float | None = 300,
        tls_handshake_timeout: float = 30,
        auth_required: bool = False,
        auth_require_tls: bool = True,
        auth_exclude_mechanism: Iterable[str] | None = None,
        auth_callback: Callable[[str, bytes, bytes], bool] | None = None,
        authenticator: Callable[..., Any] | None = None,
        lmtp: bool = False,
        max_recipients: int = 1000,
        max_errors: int = 10,
        max_auth_failures: int = 3,
        auth_failure_delay: float = 1.0,
        max_auth_failures_per_ip: int | None = 10,
        auth_failure_window: float = 600.0,
        max_connections: int | None = 2000,
        max_connections_per_ip: int | None = None,
        connection_limit_exempt: Iterable[str] = (),
        proxy_protocol_timeout: float | None = None,
        max_line_length: int | None = None,
        command_size_limit: int = 512,
        bare_newline: str = "reject",
        strict_pipelining: bool = True,
        enhanced_status_codes: bool = True,
        chunking: bool = True,
        dsn: bool = True,
        greeting_delay: float = 0.0,
        max_junk_commands: int = 100,
        data_min_rate: float | None = 500.0,
        backlog: int = 1024,
        loop: asyncio.AbstractEventLoop | None = None,
        codec: ModuleType | None = None,
    ) -> None:
        self.handler = handler
        self.hostname = hostname or socket.getfqdn()
        self.ident = ident or "ESMTP ferrosmtp"
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self.decode_data = decode_data
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.ssl_context = ssl_context
        self.timeout = timeout
        # A handler hook that has not answered after this long (a hung database, a stuck
        # milter-like check) ends the connection with 421 4.3.0, as Postfix does for a
        # policy service or milter that times out; None waits for ever.
        if hook_timeout is not None and hook_timeout <= 0:
            raise ValueError("hook_timeout must be > 0")
        self.hook_timeout = hook_timeout
        self.tls_handshake_timeout = tls_handshake_timeout
        self.auth_required = auth_required
        self.auth_require_tls = auth_require_tls
        self.auth_callback = auth_callback
        self.authenticator = authenticator
        self.lmtp = lmtp
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        # Networks whose clients max_connections_per_ip does not count (Postfix exempts
        # $mynetworks the same way): a local relay feeding many connections at once.
        self.connection_limit_exempt = tuple(
            ipaddress.ip_network(network, strict=False) for network in connection_limit_exempt
        )
        # aiosmtpd's option: expect a PROXY protocol header (proxy.py) before the greeting.
        if proxy_protocol_timeout is not None and proxy_protocol_timeout <= 0:
            raise ValueError("proxy_protocol_timeout must be > 0")
        if proxy_protocol_timeout is not None and ssl_context is not None:
            raise ValueError("the PROXY protocol with implicit TLS is not supported")
        self.proxy_protocol_timeout = proxy_protocol_timeout
        self.auth_failure_delay = auth_failure_delay
        self.max_auth_failures_per_ip = max_auth_failures_per_ip
        self.auth_failure_window = auth_failure_window
        self._auth_failures: dict[str, list[float]] = {}
        self.greeting_delay = greeting_delay
        self.data_min_rate = data_min_rate
        self.backlog = backlog
        self._loop = loop
        self.codec = codec
        self._hooks = _Hooks(handler)
        # Without a DATA hook (or the legacy process_message) nobody reads the content:
        # do not keep it (aiosmtpd's Sink then needs no memory per message).
        self._reads_content = self._hooks.get("DATA") is not None or hasattr(
            handler, "process_message"
        )
        self._connections: set[SMTP] = set()
        self._per_ip: Counter[str] = Counter()
        self._server: asyncio.base_events.Server | None = None
        self._base_config = ServerConfig(
            hostname=self.hostname,
            greeting=self.ident,
            lmtp=lmtp,
            max_message_size=data_size_limit or None,
            max_command_line=command_size_limit,
            max_text_line=max_line_length,
            bare_newline=bare_newline,
            max_recipients=max_recipients,
            max_errors=max_errors,
            max_auth_failures=max_auth_failures,
            max_junk_commands=max_junk_commands,
            smtputf8=enable_SMTPUTF8,
            eightbitmime=not decode_data,
            chunking=chunking,
            dsn=dsn,
            enhanced_status_codes=enhanced_status_codes,
            starttls=tls_context is not None,
            require_starttls=require_starttls,
            auth_required=auth_required,
            auth_require_tls=auth_require_tls,
            strict_pipelining=strict_pipelining,
        )
        excluded = {m.upper() for m in (auth_exclude_mechanism or ())}
        self._auth_names = [name for name in self._find_auth_mechanisms() if name not in excluded]
        self._base_config.auth_mechanisms = tuple(self._auth_names)

    # -- configuration ---------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _find_auth_mechanisms(self) -> list[str]:
        names: set[str] = set()
        if self.authenticator is not None or self.auth_callback is not None:
            names |= {"PLAIN", "LOGIN"}
        for attr in dir(self.handler):
            if attr.startswith("auth_") and callable(getattr(self.handler, attr, None)):
                func = getattr(self.handler, attr)
                names.add(
                    getattr(func, "__auth_mechanism_name__", attr[5:].replace("__", "-")).upper()
                )
        if names or self._hooks.get("AUTH") is not None:
            names |= set()
        return sorted(names)

    def _auth_methods_for(self, smtp: SMTP) -> dict[str, Callable[..., Awaitable[Any]]]:
        methods: dict[str, Callable[..., Awaitable[Any]]] = {}
        if self.authenticator is not None or self.auth_callback is not None:
            methods["PLAIN"] = smtp.auth_PLAIN
            methods["LOGIN"] = smtp.auth_LOGIN
        for attr in dir(self.handler):
            if attr.startswith("auth_"):
                func = getattr(self.handler, attr, None)
                if callable(func):
                    name = getattr(
                        func, "__auth_mechanism_name__", attr[5:].replace("__", "-")
                    ).upper()
                    methods[name] = func
        return methods

    def _config(self, *, implicit_tls: bool) -> ServerConfig:
        if not implicit_tls:
            return self._base_config
        from dataclasses import replace

        return replace(self._base_config, tls_active=True, starttls=False)

    def factory(self) -> SMTP:
        """Make the protocol for one connection (aiosmtpd's override point)."""
        return SMTP(self)

    # -- connection limits -------------------------------------------------------------------

    @staticmethod
    def _host(peer: Any) -> str:
        return str(peer[0] if isinstance(peer, tuple) and peer else peer)

    @classmethod
    def _ip_key(cls, peer: Any) -> str:
        return _address_key(cls._host(peer))

    def _admit(self, smtp: SMTP, peer: Any) -> str | None:
        if self.max_connections is not None and len(self._connections) >= self.max_connections:
            return "Error: too many connections"
        key = self._ip_key(peer)
        if (
            self.max_connections_per_ip is not None
            and self._per_ip[key] >= self.max_connections_per_ip
            and not self._exempt(peer)
        ):
            return "Error: too many connections from your address"
        self._connections.add(smtp)
        self._per_ip[key] += 1
        smtp._peer_key = key
        return None

    def _exempt(self, peer: Any) -> bool:
        """Whether the client's address is in ``connection_limit_exempt``."""
        if not self.connection_limit_exempt:
            return False
        ip = _client_ip(self._host(peer))
        return ip is not None and any(ip in net for net in self.connection_limit_exempt)

    def _release(self, smtp: SMTP) -> None:
        self._connections.discard(smtp)
        key = smtp._peer_key
        if key is not None:
            self._per_ip[key] -= 1
            if self._per_ip[key] <= 0:
                del self._per_ip[key]

    @property
    def connections(self) -> int:
        return len(self._connections)

    # -- AUTH failures per address (checklist B13) -------------------------------------------

    def _auth_recent(self, key: str | None) -> list[float]:
        if key is None:
            return []
        now = time.monotonic()
        recent = [t for t in self._auth_failures.get(key, ()) if now - t < self.auth_failure_window]
        if recent:
            self._auth_failures[key] = recent
        else:
            self._auth_failures.pop(key, None)
        return recent

    def _auth_blocked(self, key: str | None) -> bool:
        limit = self.max_auth_failures_per_ip
        return limit is not None and len(self._auth_recent(key)) >= limit

    def _auth_failed(self, key: str | None) -> None:
        if key is None or self.max_auth_failures_per_ip is None:
            return
        if len(self._auth_failures) >= 100_000 and key not in self._auth_failures:
            self._auth_failures.pop(next(iter(self._auth_failures)))  # bounded: forget the oldest
        self._auth_recent(key)
        self._auth_failures.setdefault(key, []).append(time.monotonic())

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(
        self,
        host: str | None = "127.0.0.1",
        port: int = 8025,
        *,
        sock: socket.socket | None = None,
        **kwargs: Any,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        # asyncio's default backlog of 100 makes a burst of connections wait for SYN retries.
        kwargs.setdefault("backlog", self.backlog)
        if sock is not None:
            self._server = await self._loop.create_server(
                self.factory,
                sock=sock,
                **kwargs,
            )
        else:
            self._server = await self._loop.create_server(
                self.factory,
                host=host,
                port=port,
                **kwargs,
            )

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    async def serve_forever(self) -> None:
        assert self._server is not None, "call start() first"
        await self._server.serve_forever()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for smtp in list(self._connections):
            smtp._shut_down()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Server:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


class Controller:
    """Run a Server in a thread of its own (aiosmtpd's ``Controller``), for tests and
    scripts: ``controller.start()`` ... ``controller.stop()``."""

    def __init__(
        self,
        handler: Any,
        hostname: str | None = None,
        port: int = 8025,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        ready_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        **SMTP_parameters: Any,
    ) -> None:
        self.handler = handler
        self.hostname = get_localhost() if hostname is None else hostname
        self.port = port
        self.loop = loop or asyncio.new_event_loop()
        self.ready_timeout = ready_timeout
        self.ssl_context = ssl_context
        self.SMTP_kwargs = dict(SMTP_parameters)
        self.SMTP_kwargs.setdefault("enable_SMTPUTF8", True)
        if server_hostname is not None:
            self.SMTP_kwargs["hostname"] = server_hostname
        self.server: Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def factory(self) -> Server:
        return Server(
            self.handler, ssl_context=self.ssl_context, loop=self.loop, **self.SMTP_kwargs
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server = self.factory()
            self.loop.run_until_complete(self.server.start(self.hostname, self.port))
            if self.port == 0:
                self.port = self.server.port
        except BaseException as error:  # reported to start()
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ferrosmtp-controller", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.ready_timeout):
            raise TimeoutError("SMTP server failed to start within the ready timeout")
        if self._error is not None:
            raise self._error

    def stop(self, no_assert: bool = False) -> None:
        assert no_assert or self._thread is not None, "SMTP daemon not running"
        if self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Controller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
