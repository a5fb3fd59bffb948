"""``send()``: connect, send one message, QUIT (aiosmtplib's ``send``)."""

from __future__ import annotations

import email.message
import socket
import ssl
from collections.abc import Sequence

from ferrosmtp.client.options import (
    DEFAULT_DATA_TIMEOUT,
    DEFAULT_TIMEOUT,
    SMTPTokenGenerator,
    SocketPathType,
)
from ferrosmtp.client.results import SendResult
from ferrosmtp.client.session import Client

__all__ = ["send", "send_one"]


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
    data_timeout: float | None = DEFAULT_DATA_TIMEOUT,
    lmtp: bool = False,
    use_bdat: bool = False,
    pipeline_bdat: bool = False,
    allow_insecure_auth: bool = False,
) -> SendResult:
    """Connect, send one message, QUIT: aiosmtplib's ``send()``.

    An ``email.message.Message`` is sent with ``send_message`` (sender and recipients
    default to its headers); ``str``/``bytes`` need ``sender`` and ``recipients``."""
    if not isinstance(message, email.message.Message) and (sender is None or not recipients):
        raise ValueError("sender and recipients are required to send a raw str or bytes message")
    client = Client(
        hostname,
        port,
        username=username,
        password=password,
        oauth_token_generator=oauth_token_generator,
        local_hostname=local_hostname,
        source_address=source_address,
        timeout=timeout,
        data_timeout=data_timeout,
        use_tls=use_tls,
        start_tls=start_tls,
        validate_certs=validate_certs,
        client_cert=client_cert,
        client_key=client_key,
        tls_context=tls_context,
        cert_bundle=cert_bundle,
        socket_path=socket_path,
        sock=sock,
        lmtp=lmtp,
        use_bdat=use_bdat,
        pipeline_bdat=pipeline_bdat,
        allow_insecure_auth=allow_insecure_auth,
    )
    return await send_one(client, message, sender, recipients, mail_options, rcpt_options)


async def send_one(
    client: Client,
    message: email.message.Message | str | bytes,
    sender: str | None,
    recipients: str | Sequence[str] | None,
    mail_options: Sequence[str] | None,
    rcpt_options: Sequence[str] | None,
) -> SendResult:
    """Connect ``client``, send ``message`` (``send_message`` for a Message, whose
    headers give what ``sender`` and ``recipients`` leave out; ``sendmail`` otherwise),
    QUIT. The one-call ``send()`` of both namespaces."""
    async with client:
        if isinstance(message, email.message.Message):
            return await client.send_message(
                message,
                sender=sender,
                recipients=recipients,
                mail_options=mail_options,
                rcpt_options=rcpt_options,
            )
        assert sender is not None and recipients is not None
        return await client.sendmail(
            sender, recipients, message, mail_options=mail_options, rcpt_options=rcpt_options
        )
