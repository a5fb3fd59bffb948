"""ferrosmtp: fast, strict SMTP for asyncio.

A Rust codec (with a pure-Python twin) under an aiosmtpd-compatible server and an
aiosmtplib-style client. See README.md.
"""

from __future__ import annotations

from ferrosmtp import codec
from ferrosmtp._errors import CodecError, ReplyError
from ferrosmtp._version import __version__
from ferrosmtp.client import Client, Pool, SendResult, SMTPResponse, SMTPStatus, send
from ferrosmtp.errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPServiceUnavailable,
    SMTPTimeoutError,
)
from ferrosmtp.server import (
    MISSING,
    SMTP,
    AuthResult,
    Controller,
    Envelope,
    LoginPassword,
    Server,
    Session,
    auth_mechanism,
)

__all__ = [
    "MISSING",
    "SMTP",
    "AuthResult",
    "Client",
    "CodecError",
    "Controller",
    "Envelope",
    "LoginPassword",
    "Pool",
    "ReplyError",
    "SMTPAuthenticationError",
    "SMTPConnectError",
    "SMTPConnectResponseError",
    "SMTPConnectTimeoutError",
    "SMTPDataError",
    "SMTPException",
    "SMTPHeloError",
    "SMTPNotSupported",
    "SMTPProtocolError",
    "SMTPReadTimeoutError",
    "SMTPRecipientRefused",
    "SMTPRecipientsRefused",
    "SMTPResponse",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPServiceUnavailable",
    "SMTPStatus",
    "SMTPTimeoutError",
    "SendResult",
    "Server",
    "Session",
    "__version__",
    "auth_mechanism",
    "codec",
    "send",
]
