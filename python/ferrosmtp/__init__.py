"""ferrosmtp: fast, strict SMTP for asyncio.

A Rust codec (with a pure-Python twin) under an aiosmtpd-compatible server and an
aiosmtplib-style client. See README.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ferrosmtp import codec
from ferrosmtp._errors import CodecError, ReplyError
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
    "CodecError",
    "Controller",
    "Envelope",
    "LoginPassword",
    "ReplyError",
    "Server",
    "Session",
    "__version__",
    "auth_mechanism",
    "codec",
]
