"""ferrosmtp: fast, strict SMTP for asyncio.

A Rust codec (with a pure-Python twin) under an aiosmtpd-compatible server and an
aiosmtplib-style client. See README.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ferrosmtp._version import __version__

# The public names are imported on first use (PEP 562), not when the package is: then
# `ferrosmtp --help` starts fast, and a bad FERROSMTP_BACKEND reaches the command as an
# error it can print in one line instead of a traceback from `import ferrosmtp`.
if TYPE_CHECKING:
    from ferrosmtp import codec
    from ferrosmtp._errors import CodecError, ReplyError
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

_ERRORS = (
    "SMTPAuthenticationError SMTPConnectError SMTPConnectResponseError SMTPConnectTimeoutError "
    "SMTPDataError SMTPException SMTPHeloError SMTPNotSupported SMTPProtocolError "
    "SMTPReadTimeoutError SMTPRecipientRefused SMTPRecipientsRefused SMTPResponseException "
    "SMTPSenderRefused SMTPServerDisconnected SMTPServiceUnavailable SMTPTimeoutError"
).split()
_WHERE: dict[str, str] = {
    "CodecError": "ferrosmtp._errors",
    "ReplyError": "ferrosmtp._errors",
    **dict.fromkeys(
        ["Client", "Pool", "SendResult", "SMTPResponse", "SMTPStatus", "send"], "ferrosmtp.client"
    ),
    **dict.fromkeys(_ERRORS, "ferrosmtp.errors"),
    **dict.fromkeys(
        [
            "MISSING",
            "SMTP",
            "AuthResult",
            "Controller",
            "Envelope",
            "LoginPassword",
            "Server",
            "Session",
            "auth_mechanism",
        ],
        "ferrosmtp.server",
    ),
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name == "codec":
        value = importlib.import_module("ferrosmtp.codec")
    else:
        raise AttributeError(f"module 'ferrosmtp' has no attribute {name!r}")
    globals()[name] = value  # once: later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
