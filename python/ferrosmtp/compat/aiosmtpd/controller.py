"""aiosmtpd's controllers: ``Controller`` (a thread of its own, on host:port),
``UnixSocketController`` (on a Unix socket), and their unthreaded forms, which run on a
loop the caller runs (``begin()`` ... ``end()``).

As in aiosmtpd, the listener calls ``factory()`` for each connection (the last ``SMTP``
made is ``controller.smtpd``), and ``start()`` opens a connection of its own to make the
first one, so that an error in ``factory()`` is raised by ``start()``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
import warnings
import weakref
from collections.abc import Coroutine
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ferrosmtp.server.controller import get_localhost

from .smtp import SMTP

__all__ = [
    "Controller",
    "UnixSocketController",
    "UnixSocketUnthreadedController",
    "UnthreadedController",
    "get_localhost",
]

DEFAULT_READY_TIMEOUT = 5.0
# asyncio's default backlog of 100 makes a burst of connections wait for SYN retries.
_BACKLOG = 1024


def _client_context() -> ssl.SSLContext:
    """A context to reach our own listener with (start()'s first connection only)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # our own socket, on this host
    return context


class _Refused(asyncio.Protocol):
    """The protocol of a connection whose ``factory()`` failed: closed at once (the
    failure is raised by ``start()``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _BaseController:
    """What every controller shares: the SMTP arguments, ``factory()``, and the
    connections it made (ended when the controller stops)."""

    smtpd: SMTP | None = None
    server: asyncio.base_events.Server | None = None
    server_coro: Coroutine[Any, Any, asyncio.base_events.Server] | None = None
    _thread_exception: BaseException | None = None

    def __init__(
        self,
        handler: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        server_kwargs: dict[str, Any] | None = None,
        **SMTP_parameters: Any,
    ) -> None:
        self.handler = handler
        self.loop: asyncio.AbstractEventLoop = asyncio.new_event_loop() if loop is None else loop
        self.ssl_context = ssl_context
        self.SMTP_kwargs: dict[str, Any] = {}
        if server_kwargs is not None:
            warnings.warn(
                "server_kwargs will be removed in version 2.0. "
                "Just specify the keyword arguments to forward to SMTP "
                "as kwargs to this __init__ method.",
                DeprecationWarning,
                stacklevel=3,
            )
            self.SMTP_kwargs = dict(server_kwargs)
        self.SMTP_kwargs.update(SMTP_parameters)
        if server_hostname:
            self.SMTP_kwargs["hostname"] = server_hostname
        # aiosmtpd's Controller offers SMTPUTF8 unless told otherwise (SMTP does not).
        self.SMTP_kwargs.setdefault("enable_SMTPUTF8", True)
        self._factory_invoked = threading.Event()
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def factory(self) -> SMTP:
        """The SMTP of one connection (override it, as in aiosmtpd)."""
        return SMTP(self.handler, **self.SMTP_kwargs)

    def _factory_invoker(self) -> asyncio.Protocol:
        """The listener's protocol factory: ``factory()``, its failure kept for start()."""
        try:
            smtpd = self.factory()
            if smtpd is None:
                raise RuntimeError("factory() returned None")
            if self.ssl_context is not None and smtpd._server.proxy_protocol_timeout is not None:
                raise ValueError("the PROXY protocol with implicit TLS is not supported")
            # Implicit TLS is the connection's own work (it is admitted under the
            # connection limits before the handshake), not the listener's.
            smtpd._tls_on_connect = self.ssl_context
            self.smtpd = smtpd
            self._connections.add(smtpd)
            return smtpd
        except Exception as error:
            self._thread_exception = error
            return _Refused()
        finally:
            if not self._factory_invoked.is_set():  # set() takes a lock and notifies
                self._factory_invoked.set()

    async def _create_server(self) -> asyncio.base_events.Server:
        raise NotImplementedError

    def _trigger_server(self) -> None:
        raise NotImplementedError

    def _listen(self) -> None:
        """Listen (the loop must not be running)."""
        self.server_coro = self._create_server()
        self.server = self.loop.run_until_complete(self.server_coro)

    def _shut_down(self) -> None:
        """End the connections this controller made (aiosmtpd closes them silently)."""
        for smtpd in list(self._connections):
            smtpd._shut_down()

    def _cleanup(self) -> None:
        self._thread_exception = None
        self._factory_invoked.clear()
        self.server_coro = None
        self.server = None
        self.smtpd = None

    def cancel_tasks(self, stop_loop: bool = True) -> None:
        """Stop the loop (unless told not to) and cancel its tasks; call it on the loop's
        thread (``loop.call_soon_threadsafe``)."""
        if stop_loop:
            self.loop.stop()
        for task in asyncio.all_tasks(self.loop):
            task.cancel()


class _Inet(_BaseController):
    """Listens on host:port."""

    def __init__(
        self,
        handler: Any,
        hostname: str | None = None,
        port: int = 8025,
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, loop, **kwargs)
        self._localhost = get_localhost()
        self.hostname: str = self._localhost if hostname is None else hostname
        self.port: int = port

    async def _create_server(self) -> asyncio.base_events.Server:
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=self.port, backlog=_BACKLOG
        )
        if self.port == 0:  # ferrosmtp's addition: a free port, known once listening
            self.port = int(server.sockets[0].getsockname()[1])
        return server

    def _trigger_server(self) -> None:
        # An empty hostname listens everywhere: reach it on this host.
        with ExitStack() as stack:
            sock = stack.enter_context(
                socket.create_connection((self.hostname or self._localhost, self.port), 1.0)
            )
            if self.ssl_context is not None:
                sock = stack.enter_context(_client_context().wrap_socket(sock))
            sock.recv(1024)


class _UnixSocket(_BaseController):
    """Listens on a Unix socket."""

    def __init__(
        self,
        handler: Any,
        unix_socket: str | Path,
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, loop, **kwargs)
        self.unix_socket: str = str(unix_socket)

    async def _create_server(self) -> asyncio.base_events.Server:
        return await self.loop.create_unix_server(
            self._factory_invoker, path=self.unix_socket, backlog=_BACKLOG
        )

    def _trigger_server(self) -> None:
        with ExitStack() as stack:
            sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            sock.connect(self.unix_socket)
            if self.ssl_context is not None:
                sock = stack.enter_context(_client_context().wrap_socket(sock))
            sock.recv(1024)


class _Threaded(_BaseController):
    """The loop runs in a thread of its own: ``start()`` ... ``stop()``."""

    _thread: threading.Thread | None = None

    def __init__(
        self,
        *args: Any,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ready_timeout: float = float(os.getenv("AIOSMTPD_CONTROLLER_TIMEOUT", ready_timeout))

    def _run(self, ready_event: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._listen()
        except Exception as error:  # cannot listen (the port is taken, say)
            self._thread_exception = error
            ready_event.set()  # start() raises it now, not after ready_timeout
            return
        self.loop.call_soon(ready_event.set)
        self.loop.run_forever()
        # stop() stopped the loop: stop listening, let the connections close, and close.
        server = self.server
        assert server is not None
        server.close()
        self.loop.run_until_complete(server.wait_closed())
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(asyncio.sleep(0))  # closed transports' callbacks
        self.loop.close()

    def start(self) -> None:
        """Run the server in its thread; returns once it has answered a first connection
        (``factory()``'s errors are raised here)."""
        assert self._thread is None, "SMTP daemon already running"
        self._factory_invoked.clear()
        ready_event = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready_event,), daemon=True)
        self._thread.start()
        started = time.monotonic()
        if not ready_event.wait(self.ready_timeout):
            if self._thread_exception is not None:
                raise self._thread_exception
            raise TimeoutError(
                "SMTP server failed to start within allotted time. "
                "This might happen if the system is too busy. "
                "Try increasing the `ready_timeout` parameter."
            )
        if self._thread_exception is not None:
            raise self._thread_exception
        respond_timeout = self.ready_timeout - (time.monotonic() - started)
        # The listener calls factory() for each connection: a first one makes it run now.
        try:
            self._trigger_server()
        except TimeoutError:
            pass  # a server that does not greet (PROXY protocol, say) was still reached
        if not self._factory_invoked.wait(respond_timeout):
            raise TimeoutError(
                "SMTP server started, but not responding within allotted time. "
                "This might happen if the system is too busy. "
                "Try increasing the `ready_timeout` parameter."
            )
        if self._thread_exception is not None:
            raise self._thread_exception
        if self.smtpd is None:
            raise RuntimeError("Unknown Error, failed to init SMTP server")

    def _stop_in_loop(self) -> None:
        self._shut_down()
        self.cancel_tasks()

    def stop(self, no_assert: bool = False) -> None:
        """Stop the server, its connections and its thread; ``server`` and ``smtpd``
        become None."""
        assert no_assert or self._thread is not None, "SMTP daemon not running"
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop_in_loop)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._cleanup()

    def __enter__(self) -> _Threaded:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Unthreaded(_BaseController):
    """The caller runs the loop: ``begin()`` listens, ``end()`` stops listening."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ended: threading.Event = threading.Event()

    def begin(self) -> None:
        """Listen (the caller then runs the loop)."""
        asyncio.set_event_loop(self.loop)
        self._listen()

    async def finalize(self) -> None:
        """Stop listening (await it on the loop); ``ended`` is set when done."""
        self.ended.clear()
        server = self.server
        assert server is not None
        server.close()
        await server.wait_closed()
        self._cleanup()
        self.ended.set()

    def end(self) -> None:
        """``finalize()``, on the loop if it runs, else now."""
        self.ended.clear()
        if self.loop.is_running():
            self._finalizing: asyncio.Task[None] = self.loop.create_task(self.finalize())
        else:
            self.loop.run_until_complete(self.finalize())


class Controller(_Inet, _Threaded):
    """aiosmtpd's threaded ``Controller``, on an INET host:port."""


class UnixSocketController(_UnixSocket, _Threaded):
    """aiosmtpd's threaded controller on a Unix socket (``unix_socket=path``)."""


class UnthreadedController(_Inet, _Unthreaded):
    """aiosmtpd's unthreaded controller on an INET host:port."""


class UnixSocketUnthreadedController(_UnixSocket, _Unthreaded):
    """aiosmtpd's unthreaded controller on a Unix socket."""
