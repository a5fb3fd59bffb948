"""aiosmtplib's public API over ferrosmtp's client: switching is one import line.

::

    from ferrosmtp.compat import aiosmtplib     # was: import aiosmtplib

    async with aiosmtplib.SMTP(hostname="mx.example", port=587) as smtp:
        await smtp.send_message(message)

``SMTP`` and ``send`` take aiosmtplib 5.1's arguments and defaults (keyword-only
constructor, ``timeout=60`` for connecting and for every reply, data included, no BDAT),
and raise what aiosmtplib raises; the exception classes, ``SMTPResponse``, ``SMTPStatus``
and ``SMTPTokenGenerator`` are the ones ``ferrosmtp`` itself uses, under the same names.

It is a thin layer: ``SMTP`` is a ``ferrosmtp.Client`` (the Rust codec, the sans-IO
state machine, pipelining when the server offers it) with these aiosmtplib behaviours:

- ``starttls()`` does not send EHLO itself; it forgets the extensions (RFC 3207 §4.2),
  and the next command greets the server again;
- a failed STARTTLS handshake raises the ``ssl`` error itself, ``SMTPServerDisconnected``
  if the server hung up, ``SMTPTimeoutError`` on a timeout;
- a 421 reply raises the command's own error (``SMTPHeloError`` for EHLO,
  ``SMTPSenderRefused`` for MAIL, ``SMTPAuthenticationError`` for AUTH...;
  ``execute_command()`` returns it), and the connection is closed;
- ``mail()``/``rcpt()`` encode the address with ``encoding`` (``"ascii"`` by default), so
  a UTF-8 address without ``encoding="utf-8"`` raises ``UnicodeEncodeError``; a ``str``
  message must be ASCII (bytes are sent as they are);
- MAIL and RCPT options are sent even when the server did not advertise their extension
  (``NOTIFY=`` without DSN): the server decides;
- ``send_message()`` declares ``SMTPUTF8`` and ``BODY=8BITMIME`` as aiosmtplib does;
- ``protocol`` is the connection's asyncio protocol, ``None`` once it is closed.

What is never relaxed, here as in ``ferrosmtp.Client`` (README "Switching from aiosmtpd /
aiosmtplib", SECURITY.md): arguments that would inject commands or parameters raise
``ValueError`` (VRFY/EXPN included); a reply with a bare CR or LF, a reply nobody asked
for, or bytes after the 220 to STARTTLS close the connection (``SMTPProtocolError``, an
``SMTPServerDisconnected``); AUTH is not sent over cleartext to a peer that is not loopback
(aiosmtplib sends it); addresses follow the RFC 5321 path grammar.
"""

from __future__ import annotations

import asyncio
import email.message
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence

from ferrosmtp.client import SMTPResponse, SMTPStatus
from ferrosmtp.client.io import SMTPProtocol
from ferrosmtp.client.message import extract_recipients, extract_sender
from ferrosmtp.client.oneshot import send_one
from ferrosmtp.client.options import DEFAULT, SMTPTokenGenerator, SocketPathType, Timeout
from ferrosmtp.client.results import SendResult
from ferrosmtp.client.session import Client
from ferrosmtp.errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPServiceUnavailable,
    SMTPTimeoutError,
)

__all__ = [
    "SMTP",
    "SMTPAuthenticationError",
    "SMTPConnectError",
    "SMTPConnectResponseError",
    "SMTPConnectTimeoutError",
    "SMTPDataError",
    "SMTPException",
    "SMTPHeloError",
    "SMTPNotSupported",
    "SMTPReadTimeoutError",
    "SMTPRecipientRefused",
    "SMTPRecipientsRefused",
    "SMTPResponse",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPStatus",
    "SMTPTimeoutError",
    "SMTPTokenGenerator",
    "send",
]

DEFAULT_TIMEOUT = 60  # aiosmtplib's: connecting, and each reply (DATA's included)


class SMTP(Client):
    """aiosmtplib's ``SMTP``: the same constructor (keyword-only), methods and defaults."""

    _check_params = False
    _ehlo_after_starttls = False

    def __init__(
        self,
        *,
        hostname: str | None = None,
        port: int | None = None,
        username: str | bytes | None = None,
        password: str | bytes | None = None,
        oauth_token_generator: SMTPTokenGenerator | None = None,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        use_tls: bool = False,
        start_tls: bool | None = None,
        validate_certs: bool = True,
        client_cert: str | None = None,
        client_key: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        cert_bundle: str | None = None,
        socket_path: SocketPathType | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(
            hostname,
            port,
            username=username,
            password=password,
            oauth_token_generator=oauth_token_generator,
            local_hostname=local_hostname,
            source_address=source_address,
            timeout=timeout,
            data_timeout=None,  # aiosmtplib bounds each wait in DATA by ``timeout``
            use_tls=use_tls,
            start_tls=start_tls,
            validate_certs=validate_certs,
            client_cert=client_cert,
            client_key=client_key,
            tls_context=tls_context,
            cert_bundle=cert_bundle,
            socket_path=socket_path,
            sock=sock,
            bdat_threshold=None,  # aiosmtplib never sends BDAT
        )

    async def __aenter__(self) -> SMTP:
        await super().__aenter__()
        return self

    @property
    def protocol(self) -> SMTPProtocol | None:
        """The connection's asyncio protocol; None when not connected."""
        protocol = self._protocol
        return protocol if protocol is not None and protocol.error is None else None

    # A 421 closes the connection in both libraries; aiosmtplib then raises the
    # command's own error (the code was not the one expected), ferrosmtp.Client
    # SMTPServiceUnavailable. These methods raise aiosmtplib's.

    async def _hello(self, verb: str, hostname: str | None, timeout: Timeout) -> SMTPResponse:
        try:
            return await super()._hello(verb, hostname, timeout)
        except SMTPServiceUnavailable as exc:
            raise SMTPHeloError(exc.code, exc.message) from exc

    async def _sasl(
        self,
        mechanism: str,
        initial: str | None,
        respond: Callable[[str], str] | None,
        timeout: Timeout,
    ) -> SMTPResponse:
        try:
            return await super()._sasl(mechanism, initial, respond, timeout)
        except SMTPServiceUnavailable as exc:
            raise SMTPAuthenticationError(exc.code, exc.message) from exc

    async def execute_command(self, *args: bytes | str, timeout: Timeout = DEFAULT) -> SMTPResponse:
        """Send one command, as aiosmtplib: a 421 is returned (and the connection closed)."""
        try:
            return await super().execute_command(*args, timeout=timeout)
        except SMTPServiceUnavailable as exc:  # aiosmtplib returns the 421 (and closes)
            return SMTPResponse(exc.code, exc.message)

    def _handshake_failed(self, exc: BaseException) -> BaseException:
        # aiosmtplib's SMTPProtocol.start_tls: the ssl error itself, except for these.
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return SMTPTimeoutError("Timed out while upgrading transport")
        if isinstance(exc, ConnectionAbortedError):  # what asyncio raises on a timeout
            return SMTPTimeoutError("Connection aborted while upgrading transport")
        if isinstance(exc, ConnectionError):
            return SMTPServerDisconnected("Connection reset while upgrading transport")
        return exc

    async def mail(
        self,
        sender: str,
        /,
        *,
        options: Iterable[str] | None = None,
        encoding: str = "ascii",
        timeout: Timeout = DEFAULT,
    ) -> SMTPResponse:
        """MAIL FROM, as aiosmtplib: an address ``encoding`` cannot encode raises
        UnicodeEncodeError."""
        sender.encode(encoding)  # aiosmtplib encodes the address: UnicodeEncodeError
        try:
            return await super().mail(sender, options=options, encoding=encoding, timeout=timeout)
        except SMTPServiceUnavailable as exc:
            raise SMTPSenderRefused(exc.code, exc.message, sender) from exc

    async def rcpt(
        self,
        recipient: str,
        /,
        *,
        options: Iterable[str] | None = None,
        encoding: str = "ascii",
        timeout: Timeout = DEFAULT,
    ) -> SMTPResponse:
        """RCPT TO, as aiosmtplib: an address ``encoding`` cannot encode raises
        UnicodeEncodeError."""
        recipient.encode(encoding)
        try:
            return await super().rcpt(
                recipient, options=options, encoding=encoding, timeout=timeout
            )
        except SMTPServiceUnavailable as exc:
            raise SMTPRecipientRefused(exc.code, exc.message, recipient) from exc

    async def data(self, message: str | bytes, /, *, timeout: Timeout = DEFAULT) -> SMTPResponse:
        """DATA and the content, as aiosmtplib: a ``str`` message must be ASCII."""
        if isinstance(message, str):
            message = message.encode("ascii")  # as aiosmtplib: UnicodeEncodeError
        try:
            return await super().data(message, timeout=timeout)
        except SMTPServiceUnavailable as exc:
            raise SMTPDataError(exc.code, exc.message) from exc

    async def sendmail(  # type: ignore[override]  # aiosmtplib's arguments, no DSN or BDAT ones
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: str | bytes,
        /,
        *,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        timeout: Timeout = DEFAULT,
    ) -> SendResult:
        """``ferrosmtp.Client.sendmail`` with aiosmtplib's arguments only."""
        if isinstance(message, str):
            message = message.encode("ascii")  # as aiosmtplib: UnicodeEncodeError
        return await super().sendmail(
            sender,
            recipients,
            message,
            mail_options=mail_options,
            rcpt_options=rcpt_options,
            timeout=timeout,
        )

    async def send_message(  # type: ignore[override]  # aiosmtplib's arguments
        self,
        message: email.message.Message,
        /,
        *,
        sender: str | None = None,
        recipients: str | Sequence[str] | None = None,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        timeout: Timeout = DEFAULT,
    ) -> SendResult:
        """As aiosmtplib: SMTPUTF8 when an address needs it, then BODY=8BITMIME whenever
        the server offers 8BITMIME, after the caller's options."""
        if sender is None:
            sender = extract_sender(message)
        if sender is None:
            raise ValueError("No From header provided in message")
        if recipients is None:
            recipients = extract_recipients(message)
        elif isinstance(recipients, str):
            recipients = [recipients]
        if not recipients:
            raise ValueError("No recipient headers provided in message")
        options = list(mail_options) if mail_options is not None else []
        lowered = [option.lower() for option in options]
        await self._locked(self._ehlo_or_helo_if_needed)
        if not (sender.isascii() and all(r.isascii() for r in recipients)):
            if not self.supports_extension("smtputf8"):
                raise SMTPNotSupported(
                    "An address containing non-ASCII characters was provided, but "
                    "SMTPUTF8 is not supported by this server"
                )
            if "smtputf8" not in lowered:
                options.append("SMTPUTF8")
        if self.supports_extension("8bitmime") and "body=8bitmime" not in lowered:
            options.append("BODY=8BITMIME")
        return await super().send_message(
            message,
            sender=sender,
            recipients=recipients,
            mail_options=options,
            rcpt_options=rcpt_options,
            timeout=timeout,
        )


async def send(
    message: email.message.Message | str | bytes,
    /,
    *,
    sender: str | None = None,
    recipients: str | Sequence[str] | None = None,
    mail_options: Sequence[str] | None = None,
    rcpt_options: Sequence[str] | None = None,
    hostname: str | None = "localhost",
    port: int | None = None,
    username: str | bytes | None = None,
    password: str | bytes | None = None,
    oauth_token_generator: SMTPTokenGenerator | None = None,
    local_hostname: str | None = None,
    source_address: tuple[str, int] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    use_tls: bool = False,
    start_tls: bool | None = None,
    validate_certs: bool = True,
    client_cert: str | None = None,
    client_key: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    cert_bundle: str | None = None,
    socket_path: SocketPathType | None = None,
    sock: socket.socket | None = None,
) -> SendResult:
    """aiosmtplib's ``send()``: connect, send one message, QUIT."""
    if isinstance(message, (str, bytes)):
        if not recipients:
            raise ValueError("Recipients must be provided with raw messages.")
        if not sender:
            raise ValueError("Sender must be provided with raw messages.")
    client = SMTP(
        hostname=hostname,
        port=port,
        local_hostname=local_hostname,
        source_address=source_address,
        timeout=timeout,
        use_tls=use_tls,
        start_tls=start_tls,
        validate_certs=validate_certs,
        client_cert=client_cert,
        client_key=client_key,
        tls_context=tls_context,
        cert_bundle=cert_bundle,
        socket_path=socket_path,
        sock=sock,
        username=username,
        password=password,
        oauth_token_generator=oauth_token_generator,
    )
    return await send_one(client, message, sender, recipients, mail_options, rcpt_options)
