"""The asyncio SMTP server: existing aiosmtpd handlers, unchanged, on the sans-IO
ServerConnection. One job a module:

- ``values``: what handlers see and return (Session, Envelope, AuthResult, ...);
- ``status``: a hook's reply string as a Response;
- ``peers``: a client's address, for log lines and per-address limits;
- ``base``, ``hooks``, ``sasl``, ``smtp``: one connection (its state and output, the
  handler's hooks, AUTH, and the asyncio protocol that drives them);
- ``listener``: ``Server``, with admission and limits;
- ``controller``: ``Controller``, a Server in a thread.
"""

from __future__ import annotations

from ferrosmtp.server.controller import Controller, get_localhost
from ferrosmtp.server.listener import DATA_SIZE_DEFAULT, Server
from ferrosmtp.server.smtp import EVENTS_PER_TURN, SMTP
from ferrosmtp.server.status import INTERNAL_ERROR, parse_status
from ferrosmtp.server.values import (
    MISSING,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    auth_mechanism,
)

__all__ = [
    "DATA_SIZE_DEFAULT",
    "EVENTS_PER_TURN",
    "INTERNAL_ERROR",
    "MISSING",
    "SMTP",
    "AuthResult",
    "Controller",
    "Envelope",
    "LoginPassword",
    "Server",
    "Session",
    "auth_mechanism",
    "get_localhost",
    "parse_status",
]
