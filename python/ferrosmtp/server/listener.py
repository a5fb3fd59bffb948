"""The listener: admission and connection limits, the AUTH failures per address, and
the server's life (start, serve_forever, close)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from types import ModuleType
from typing import Any

from ferrosmtp.protocol.events import Event
from ferrosmtp.protocol.server import ServerConfig
from ferrosmtp.server.hooks import Hooks
from ferrosmtp.server.idle import IdleSweep
from ferrosmtp.server.peers import address_key, client_ip
from ferrosmtp.server.sasl import SASL
from ferrosmtp.server.smtp import SMTP, Refusal

__all__ = ["DATA_SIZE_DEFAULT", "Server"]

DATA_SIZE_DEFAULT = 32 << 20


class Server:
    """An SMTP listener: ``await server.start(host, port)``, or ``async with``.

    The keyword arguments mirror aiosmtpd's ``SMTP`` where they exist; the rest are
    ferrosmtp's limits and policies, each described with its default in SECURITY.md.
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
        max_errors: int = 20,
        soft_error_limit: int = 10,
        error_sleep: float = 1.0,
        recipient_overshoot_limit: int = 1000,
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
        self.hostname: str = hostname or socket.getfqdn()
        self.ident: str = ident or "ESMTP ferrosmtp"
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
        self.connection_limit_exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
            tuple(
                ipaddress.ip_network(network, strict=False) for network in connection_limit_exempt
            )
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
        self._hooks = Hooks(handler)
        self._at_once: tuple[tuple[bool, bool], frozenset[type[Event]]] | None = None
        # Without a DATA hook (or the legacy process_message) nobody reads the content:
        # do not keep it (aiosmtpd's Sink then needs no memory per message).
        self._reads_content = self._hooks.get("DATA") is not None or hasattr(
            handler, "process_message"
        )
        self._connections: set[SMTP] = set()
        # Every connection's idle and hook timeouts, on one timer (idle.py).
        self._idle: IdleSweep[SMTP] = IdleSweep(self._connections, SMTP._idle_check)
        # Open connections by address_key (a dict: Counter's __missing__ and __delitem__
        # are Python calls, made per connection).
        self._per_ip: dict[str, int] = {}
        self._server: asyncio.base_events.Server | None = None
        self._tls_config: tuple[ServerConfig, ServerConfig] | None = None
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
            soft_error_limit=soft_error_limit,
            error_sleep=error_sleep,
            recipient_overshoot_limit=recipient_overshoot_limit,
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
        if self._builtin_auth():
            names |= {"PLAIN", "LOGIN"}
        for attr in dir(self.handler):
            if attr.startswith("auth_") and callable(getattr(self.handler, attr, None)):
                func = getattr(self.handler, attr)
                names.add(
                    getattr(func, "__auth_mechanism_name__", attr[5:].replace("__", "-")).upper()
                )
        return sorted(names)

    def _builtin_auth(self) -> bool:
        """Whether PLAIN and LOGIN are offered: with a checker, or a handle_AUTH hook
        (aiosmtpd calls it first for its built-in mechanisms; issue 9)."""
        return (
            self.authenticator is not None
            or self.auth_callback is not None
            or self._hooks.get("AUTH") is not None
        )

    def _auth_methods_for(self, smtp: SASL) -> dict[str, Callable[..., Awaitable[Any]]]:
        methods: dict[str, Callable[..., Awaitable[Any]]] = {}
        if self._builtin_auth():
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
        base = self._base_config
        cached = self._tls_config
        if cached is None or cached[0] != base:  # made once (base may be changed after init)
            cached = (replace(base), replace(base, tls_active=True, starttls=False))
            self._tls_config = cached
        return cached[1]

    def _at_once_kinds(self, strict_ascii: bool) -> frozenset[type[Event]]:
        """The events the handler has no say in (Hooks.at_once), for these options."""
        key = (self.lmtp, strict_ascii)
        cached = self._at_once
        if cached is None or cached[0] != key:
            cached = self._at_once = (key, self._hooks.at_once(lmtp=key[0], strict_ascii=key[1]))
        return cached[1]

    def factory(self) -> SMTP:
        """Make the protocol for one connection (aiosmtpd's override point)."""
        return SMTP(self)

    # -- connection limits -------------------------------------------------------------------

    @staticmethod
    def _host(peer: Any) -> str:
        return str(peer[0] if isinstance(peer, tuple) and peer else peer)

    def _admit(self, smtp: SMTP, peer: Any) -> Refusal | None:
        """Admit a new connection, or say which refusal it gets (a ``Replies`` name).
        ``peer`` None: its client's address is not known yet (it comes with a PROXY
        header), and the per-address limit waits for ``_admit_address``."""
        if self.max_connections is not None and len(self._connections) >= self.max_connections:
            return "too_many_connections"
        if peer is not None:
            refusal = self._admit_address(smtp, peer)
            if refusal is not None:
                return refusal
        self._connections.add(smtp)
        return None

    def _admit_address(self, smtp: SMTP, peer: Any) -> Refusal | None:
        """Count a connection for its client's address (``max_connections_per_ip``)."""
        key = address_key(self._host(peer))
        count = self._per_ip.get(key, 0)
        if (
            self.max_connections_per_ip is not None
            and count >= self.max_connections_per_ip
            and not self._exempt(peer)
        ):
            return "too_many_connections_from_address"
        self._per_ip[key] = count + 1
        smtp._peer_key = key
        return None

    def _exempt(self, peer: Any) -> bool:
        """Whether the client's address is in ``connection_limit_exempt``."""
        if not self.connection_limit_exempt:
            return False
        ip = client_ip(self._host(peer))
        return ip is not None and any(ip in net for net in self.connection_limit_exempt)

    def _release(self, smtp: SMTP) -> None:
        self._connections.discard(smtp)
        key = smtp._peer_key
        if key is not None:
            count = self._per_ip.get(key, 0) - 1
            if count > 0:
                self._per_ip[key] = count
            else:
                self._per_ip.pop(key, None)

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

    def _auth_attempt(self, key: str | None) -> float | None:
        """An AUTH exchange starts: None if its address is locked out, else the time it
        is counted at, as a failure until ``_auth_forgive`` takes it back."""
        limit = self.max_auth_failures_per_ip
        now = time.monotonic()
        if key is None or limit is None:
            return now
        if len(self._auth_recent(key)) >= limit:
            return None
        if len(self._auth_failures) >= 100_000 and key not in self._auth_failures:
            self._auth_failures.pop(next(iter(self._auth_failures)))  # bounded: forget the oldest
        self._auth_failures.setdefault(key, []).append(now)
        return now

    def _auth_forgive(self, key: str | None, attempt: float) -> None:
        """The exchange counted at ``attempt`` succeeded: it is no failure."""
        recent = self._auth_failures.get(key or "")
        if recent is not None and attempt in recent:
            recent.remove(attempt)
            if not recent:
                del self._auth_failures[key or ""]

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(
        self,
        host: str | None = "127.0.0.1",
        port: int = 8025,
        *,
        sock: socket.socket | None = None,
        **kwargs: Any,
    ) -> None:
        """Listen on ``host``:``port`` (or on ``sock``); returns once listening. Port 0 picks a free
        port, then in ``server.port``. Other keywords go to ``loop.create_server``."""
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
        """Serve until cancelled (after ``start()``)."""
        assert self._server is not None, "call start() first"
        await self._server.serve_forever()

    def close(self) -> None:
        """Stop listening and end every connection (clients get 421 4.3.2)."""
        if self._server is not None:
            self._server.close()
        for smtp in list(self._connections):
            smtp._shut_down()
        self._idle.stop()

    async def wait_closed(self) -> None:
        """Wait until the listener and its connections are closed."""
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Server:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()
