"""``Client``: one SMTP or LMTP session over asyncio, with aiosmtplib's API.

The class is made of layers, one job a module (``core`` -> ``commands`` -> ``tls`` ->
``auth`` -> ``transaction`` -> ``messages``); this module adds connecting: opening the
socket (plain, implicit TLS, a Unix socket or a given socket), reading the greeting,
then STARTTLS and logging in as configured."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Awaitable
from typing import Any, Literal

from ferrosmtp.client.io import SMTPProtocol
from ferrosmtp.client.messages import Messages
from ferrosmtp.client.options import (
    DEFAULT,
    LMTP_PORT,
    SMTP_PORT,
    SUBMISSION_PORT,
    SUBMISSIONS_PORT,
    Default,
    SMTPTokenGenerator,
    SocketPathType,
    Timeout,
)
from ferrosmtp.client.results import SendResult, SMTPResponse, smtp_response
from ferrosmtp.errors import (
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPReadTimeoutError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPServiceUnavailable,
    SMTPTimeoutError,
)
from ferrosmtp.protocol.client import ClientConnection

__all__ = ["Client"]


class Client(Messages):
    """An SMTP (or LMTP) client connection, used like aiosmtplib's ``SMTP``::

        async with ferrosmtp.Client("mx.example", 587, username="u", password="p") as c:
            refused, reply = await c.send_message(message)

    Connecting reads the greeting, upgrades with STARTTLS if the server offers it
    (``start_tls=None``; ``True`` requires it, ``False`` never) and logs in when
    ``username`` is given. Implicit TLS with ``use_tls=True``. Certificates are verified
    against the system's trust store (or ``cert_bundle``) unless ``validate_certs=False``.

    Beyond aiosmtplib: ``lmtp=True`` speaks LMTP (LHLO, one reply per recipient);
    ``use_bdat=True`` sends messages with BDAT when the server offers CHUNKING (always
    done for messages of ``bdat_threshold`` octets or more); ``pipeline_bdat=True`` sends a
    message of up to 1 MiB as ``BDAT n LAST`` in the same write as MAIL and RCPT when the
    server offers PIPELINING and CHUNKING, one round trip per message (RFC 3030 allows it,
    but a server that mishandles it could read the content of a refused message as
    commands: opt-in, for servers you know); ``data_timeout`` bounds the
    sending of the message content until its final reply; ``allow_insecure_auth=True``
    allows AUTH (any mechanism) over an unencrypted connection to a non-loopback peer.
    """

    # MAIL/RCPT parameters are checked before sending (an extension the server did not
    # advertise: SMTPNotSupported; an invalid value: ValueError); the aiosmtplib drop-in
    # sends them as given and lets the server answer, as aiosmtplib does.
    _check_params = True

    async def __aenter__(self) -> Client:
        if not self.is_connected:
            await self.connect()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, (ConnectionError, TimeoutError)) or not self.is_connected:
            self.close()
            return
        try:
            await self.quit()
        except (SMTPServerDisconnected, SMTPResponseException, SMTPTimeoutError):
            self.close()

    async def connect(
        self,
        *,
        hostname: str | Literal[Default.token] | None = DEFAULT,
        port: int | Literal[Default.token] | None = DEFAULT,
        username: str | bytes | Literal[Default.token] | None = DEFAULT,
        password: str | bytes | Literal[Default.token] | None = DEFAULT,
        oauth_token_generator: SMTPTokenGenerator | Literal[Default.token] | None = DEFAULT,
        local_hostname: str | Literal[Default.token] | None = DEFAULT,
        source_address: tuple[str, int] | Literal[Default.token] | None = DEFAULT,
        timeout: Timeout = DEFAULT,
        use_tls: bool | None = None,
        start_tls: bool | Literal[Default.token] | None = DEFAULT,
        validate_certs: bool | None = None,
        client_cert: str | Literal[Default.token] | None = DEFAULT,
        client_key: str | Literal[Default.token] | None = DEFAULT,
        tls_context: ssl.SSLContext | Literal[Default.token] | None = DEFAULT,
        cert_bundle: str | Literal[Default.token] | None = DEFAULT,
        socket_path: SocketPathType | Literal[Default.token] | None = DEFAULT,
        sock: socket.socket | Literal[Default.token] | None = DEFAULT,
    ) -> SMTPResponse:
        """Connect, read the greeting, then STARTTLS and log in as configured.

        Keyword arguments override (and replace) the constructor's. Returns the greeting.
        Any failure closes the connection before the exception propagates."""
        overrides: dict[str, Any] = {
            "hostname": hostname,
            "port": port,
            "username": username,
            "password": password,
            "oauth_token_generator": oauth_token_generator,
            "local_hostname": local_hostname,
            "source_address": source_address,
            "start_tls": start_tls,
            "client_cert": client_cert,
            "client_key": client_key,
            "tls_context": tls_context,
            "cert_bundle": cert_bundle,
            "socket_path": socket_path,
            "sock": sock,
        }
        for name, value in overrides.items():
            if value is not DEFAULT:
                setattr(self, name, value)
        if use_tls is not None:
            self.use_tls = use_tls
        if validate_certs is not None:
            self.validate_certs = validate_certs
        self._validate_config()
        if self.is_connected:
            raise SMTPException("SMTP instance is already connected")
        while self._occupied is not None:  # another connect() holds the client
            if self._protocol is not None and not self.is_connected:
                self.close()  # its connection died: release it
                break
            await asyncio.wait([self._occupied])
        self._occupied = asyncio.get_running_loop().create_future()
        connect_timeout = self.timeout if timeout is DEFAULT else timeout
        try:
            greeting = await self._open(connect_timeout)
            await self._maybe_starttls_on_connect()
            await self._maybe_login_on_connect()
        except BaseException:
            self.close()
            raise
        return greeting

    def _default_port(self) -> int:
        if self.lmtp:
            return LMTP_PORT
        if self.use_tls:
            return SUBMISSIONS_PORT
        if self.start_tls:
            return SUBMISSION_PORT
        return SMTP_PORT

    async def _open(self, timeout: float | None) -> SMTPResponse:
        loop = asyncio.get_running_loop()
        conn = ClientConnection(lmtp=self.lmtp, check_params=self._check_params)
        conn.tls = self.use_tls
        protocol = SMTPProtocol(conn, loop, timeout)
        context = self._build_tls_context() if self.use_tls else None
        hostname = self.hostname or "localhost"
        port = self.port or self._default_port()
        where = f"{hostname} on port {port}"
        server_hostname = hostname if context is not None else None
        handshake_timeout = timeout if context is not None else None
        coro: Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]
        if self.sock is not None:
            where = "the given socket"
            coro = loop.create_connection(
                lambda: protocol,
                sock=self.sock,
                ssl=context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=handshake_timeout,
            )
        elif self.socket_path is not None:
            path = os.fsdecode(self.socket_path)
            where = f"socket {path}"
            coro = loop.create_unix_connection(
                lambda: protocol,
                path,
                ssl=context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=handshake_timeout,
            )
        else:
            coro = loop.create_connection(
                lambda: protocol,
                host=hostname,
                port=port,
                ssl=context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=handshake_timeout,
                local_addr=self.source_address,
            )
        try:
            await asyncio.wait_for(coro, timeout)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise SMTPConnectTimeoutError(f"Timed out connecting to {where}") from exc
        except OSError as exc:
            raise SMTPConnectError(f"Error connecting to {where}: {exc}") from exc
        self._conn = conn
        self._protocol = protocol
        try:
            assert protocol.greeting is not None
            (response,) = await protocol.greeting
        except SMTPServiceUnavailable as exc:
            raise SMTPConnectResponseError(exc.code, exc.message) from exc
        except SMTPReadTimeoutError as exc:
            raise SMTPConnectTimeoutError("Timed out waiting for server ready message") from exc
        except SMTPServerDisconnected as exc:
            raise SMTPConnectError(f"Error connecting to {where}: {exc.message}") from exc
        greeting = smtp_response(response.reply)
        if greeting.code != 220:
            raise SMTPConnectResponseError(greeting.code, greeting.message)
        if protocol.error is not None:  # the greeting came with something unasked for
            raise SMTPConnectError(f"Error connecting to {where}: {protocol.error.message}")
        return greeting

    async def _maybe_starttls_on_connect(self) -> None:
        if self.use_tls or self.start_tls is False:
            return
        await self._ehlo_or_helo_if_needed()
        if self.start_tls is True or self.supports_extension("starttls"):
            await self.starttls()

    async def _maybe_login_on_connect(self) -> None:
        if self.oauth_token_generator is not None:
            if self.username is None:
                raise SMTPException("username is required when using oauth_token_generator")
            await self._ehlo_or_helo_if_needed()
            if "xoauth2" not in self.server_auth_methods:
                raise SMTPException(
                    "oauth_token_generator provided but server does not support XOAUTH2"
                )
            token = await self.oauth_token_generator()
            await self.auth_xoauth2(self.username, token)
        elif self.username is not None:
            await self.login(self.username, self.password if self.password is not None else "")

    def sendmail_sync(self, *args: Any, **kwargs: Any) -> SendResult:
        """``sendmail`` in a new event loop: connect, send, QUIT."""

        async def run() -> SendResult:
            async with self:
                return await self.sendmail(*args, **kwargs)

        return asyncio.run(run())

    def send_message_sync(self, *args: Any, **kwargs: Any) -> SendResult:
        """``send_message`` in a new event loop: connect, send, QUIT."""

        async def run() -> SendResult:
            async with self:
                return await self.send_message(*args, **kwargs)

        return asyncio.run(run())
