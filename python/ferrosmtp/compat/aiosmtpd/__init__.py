"""aiosmtpd's public names over ferrosmtp's server: ``from ferrosmtp.compat.aiosmtpd
import Controller, SMTP`` where ``from aiosmtpd.controller import Controller`` and
``from aiosmtpd.smtp import SMTP`` were.

Only defaults, reply texts and exception types differ from ``ferrosmtp.Server``; the
engine (Rust codec, the sans-IO state machine, pipelining, limits) is the same. The
replies are aiosmtpd 1.4.6's, byte for byte, through the state machine's reply table and
``dialect`` hook (``dialect.py``); ``SMTP`` is one connection, as in aiosmtpd
(``smtp.py``); the controllers are aiosmtpd's (``controller.py``). The deliberate
differences (security defences, the RFC 5321 path grammar) are listed in README and
SECURITY.md.
"""

from __future__ import annotations

from ferrosmtp.server import MISSING, AuthResult, Envelope, LoginPassword, Session, auth_mechanism

from .controller import (
    Controller,
    UnixSocketController,
    UnixSocketUnthreadedController,
    UnthreadedController,
    get_localhost,
)
from .dialect import AIOSMTPD_REPLIES, aiosmtpd_dialect
from .smtp import (
    BOGUS_LIMIT,
    CALL_LIMIT_DEFAULT,
    DATA_SIZE_DEFAULT,
    LMTP,
    SMTP,
    TLSSetupException,
    __ident__,
    __version__,
    syntax,
)

__all__ = [
    "AIOSMTPD_REPLIES",
    "BOGUS_LIMIT",
    "CALL_LIMIT_DEFAULT",
    "DATA_SIZE_DEFAULT",
    "LMTP",
    "MISSING",
    "SMTP",
    "AuthResult",
    "Controller",
    "Envelope",
    "LoginPassword",
    "Session",
    "TLSSetupException",
    "UnixSocketController",
    "UnixSocketUnthreadedController",
    "UnthreadedController",
    "__ident__",
    "__version__",
    "aiosmtpd_dialect",
    "auth_mechanism",
    "get_localhost",
    "syntax",
]
