"""Run a Server in a thread of its own (aiosmtpd's ``Controller``)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from typing import Any

from ferrosmtp._loops import LoopChoice, new_event_loop
from ferrosmtp.server.listener import Server

__all__ = ["Controller", "get_localhost"]


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


class Controller:
    """Run a Server in a thread of its own (aiosmtpd's ``Controller``), for tests and
    scripts: ``controller.start()`` ... ``controller.stop()``.

    It owns its thread and its loop, so it runs on uvloop when that is installed:
    ``loop="auto"`` (the default, None, except with implicit TLS: ``ssl_context``),
    ``"uvloop"`` (required) or ``"asyncio"`` (asyncio's own), as ``ferrosmtp serve
    --loop``; or an event loop to use."""

    def __init__(
        self,
        handler: Any,
        hostname: str | None = None,
        port: int = 8025,
        loop: asyncio.AbstractEventLoop | LoopChoice | None = None,
        *,
        ready_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        **SMTP_parameters: Any,
    ) -> None:
        self.handler = handler
        self.hostname: str = get_localhost() if hostname is None else hostname
        self.port: int = port
        if loop is None:
            # Implicit TLS stays on asyncio's loop unless uvloop is asked for: uvloop starts
            # reading a new connection after connection_made whatever it paused, so the
            # ClientHello can reach the SMTP protocol before start_tls takes the socket.
            loop = "asyncio" if ssl_context is not None else "auto"
        self.loop: asyncio.AbstractEventLoop = (
            loop if isinstance(loop, asyncio.AbstractEventLoop) else new_event_loop(loop)
        )
        self.ready_timeout = ready_timeout
        self.ssl_context = ssl_context
        self.SMTP_kwargs: dict[str, Any] = dict(SMTP_parameters)
        self.SMTP_kwargs.setdefault("enable_SMTPUTF8", True)
        if server_hostname is not None:
            self.SMTP_kwargs["hostname"] = server_hostname
        self.server: Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def factory(self) -> Server:
        """The Server the thread runs (override to customize it, as in aiosmtpd)."""
        return Server(
            self.handler, ssl_context=self.ssl_context, loop=self.loop, **self.SMTP_kwargs
        )

    def _listener(self) -> Server:
        """The Server to start (ferrosmtp.compat.aiosmtpd's Controller makes it from
        the SMTP its factory() returns)."""
        return self.factory()

    def _started(self, listener: Server) -> None:
        self.server = listener

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            listener = self._listener()
            self.loop.run_until_complete(listener.start(self.hostname, self.port))
            if self.port == 0:
                self.port = listener.port
            self._started(listener)
        except BaseException as error:  # reported to start()
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        listener.close()
        self.loop.run_until_complete(listener.wait_closed())
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def start(self) -> None:
        """Start the server in its thread; returns once it listens (``port`` then set)."""
        self._thread = threading.Thread(target=self._run, name="ferrosmtp-controller", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.ready_timeout):
            raise TimeoutError("SMTP server failed to start within the ready timeout")
        if self._error is not None:
            raise self._error

    def stop(self, no_assert: bool = False) -> None:
        """Stop the server and its thread."""
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
