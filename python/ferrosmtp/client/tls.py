"""TLS for a client session: the context (verification, client certificates) used for
implicit TLS and STARTTLS, and the STARTTLS upgrade (RFC 3207)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Literal

from ferrosmtp.client.commands import Commands
from ferrosmtp.client.options import DEFAULT, WRITE_BUFFER_HIGH, Default, Timeout
from ferrosmtp.client.results import SMTPResponse
from ferrosmtp.errors import (
    SMTPConnectError,
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from ferrosmtp.protocol.client import Command

__all__ = ["StartTLS"]


class StartTLS(Commands):
    """The TLS context and the STARTTLS upgrade."""

    # Whether starttls() greets the server again once TLS is up. Everything learned
    # before TLS is forgotten either way (RFC 3207 §4.2); aiosmtplib leaves the new EHLO to
    # the next command, and so does its drop-in, ferrosmtp.compat.aiosmtplib.
    _ehlo_after_starttls = True

    def _build_tls_context(self) -> ssl.SSLContext:
        if self.tls_context is not None:
            return self.tls_context
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cert_bundle)
        if not self.validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None:
            context.load_cert_chain(self.client_cert, keyfile=self.client_key)
        return context

    async def starttls(
        self,
        *,
        server_hostname: str | None = None,
        validate_certs: bool | None = None,
        client_cert: str | Literal[Default.token] | None = DEFAULT,
        client_key: str | Literal[Default.token] | None = DEFAULT,
        cert_bundle: str | Literal[Default.token] | None = DEFAULT,
        tls_context: ssl.SSLContext | Literal[Default.token] | None = DEFAULT,
        timeout: Timeout = DEFAULT,
    ) -> SMTPResponse:
        """Upgrade the connection with STARTTLS (RFC 3207), then EHLO again.

        Raises SMTPException if TLS is already on or the server does not offer STARTTLS,
        and SMTPProtocolError (closing the connection) if the server sends anything after
        its 220 before the handshake: such bytes would be read as if they came from the
        encrypted server (SECURITY.md, B6)."""
        for name, value in (
            ("client_cert", client_cert),
            ("client_key", client_key),
            ("cert_bundle", cert_bundle),
            ("tls_context", tls_context),
        ):
            if value is not DEFAULT:
                setattr(self, name, value)
        if validate_certs is not None:
            self.validate_certs = validate_certs
        self._validate_config()
        return await self._locked(lambda: self._starttls(server_hostname, timeout))

    async def _starttls(self, server_hostname: str | None, timeout: Timeout) -> SMTPResponse:
        conn, protocol = self._session()
        if conn.tls:
            raise SMTPException("Connection already using TLS")
        await self._ehlo_or_helo_if_needed()
        if not conn.supports("STARTTLS"):
            raise SMTPException("SMTP STARTTLS extension not supported by server.")
        context = self._build_tls_context()
        response = await self._command(Command.simple("STARTTLS"), timeout)
        if response.code != 220:
            raise SMTPResponseException(response.code, response.message)
        assert protocol.transport is not None
        loop = asyncio.get_running_loop()
        seconds = self._timeout(timeout)
        try:
            transport = await loop.start_tls(
                protocol.transport,
                protocol,
                context,
                server_hostname=server_hostname or self.hostname or "localhost",
                ssl_handshake_timeout=seconds,
            )
        except (asyncio.TimeoutError, OSError) as exc:  # ssl.SSLError is an OSError
            self.close()  # never go on over a connection whose TLS state is unknown
            error = self._handshake_failed(exc)
            if error is exc:
                raise
            raise error from exc
        if transport is None:
            self.close()
            raise SMTPServerDisconnected("Connection lost during the TLS handshake")
        protocol.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        conn.tls_started()
        self._forget_greeting()
        if self._ehlo_after_starttls:
            await self._ehlo_or_helo_if_needed()
        return response

    def _handshake_failed(self, exc: BaseException) -> BaseException:
        """What a failed STARTTLS handshake raises (the connection is closed by then):
        SMTPTimeoutError for a timeout, SMTPConnectError otherwise, the ``ssl`` or
        socket error kept as ``__cause__``. Returning ``exc`` itself re-raises it."""
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionAbortedError)):
            return SMTPTimeoutError("Timed out during the TLS handshake")
        return SMTPConnectError(f"TLS handshake failed: {exc}")
