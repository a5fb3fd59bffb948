"""aiosmtpd's public names over ferrosmtp's server: ``from ferrosmtp.compat.aiosmtpd
import Controller`` where ``from aiosmtpd.controller import Controller`` was."""

from __future__ import annotations

from ferrosmtp.server import (
    MISSING,
    AuthResult,
    Controller,
    Envelope,
    LoginPassword,
    Session,
    auth_mechanism,
)
from ferrosmtp.server import Server as SMTP

__all__ = [
    "MISSING",
    "SMTP",
    "AuthResult",
    "Controller",
    "Envelope",
    "LoginPassword",
    "Session",
    "auth_mechanism",
]
