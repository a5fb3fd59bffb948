"""The values aiosmtpd handlers see and return: Session, Envelope, AuthResult,
LoginPassword, MISSING and the ``auth_mechanism`` decorator, with aiosmtpd's names and
meanings."""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Callable
from typing import Any, NamedTuple, TypeGuard

__all__ = [
    "MISSING",
    "AuthResult",
    "Envelope",
    "LoginPassword",
    "Session",
    "auth_mechanism",
    "is_auth_result",
    "is_missing",
]


class _Missing(enum.Enum):
    MISSING = object()


MISSING = _Missing.MISSING
"""What a hook returns to say "do what you would have done without me" (aiosmtpd)."""


def is_missing(value: object) -> bool:
    # aiosmtpd's own MISSING counts too: handlers written for it import theirs.
    """Whether a hook returned MISSING (ferrosmtp's or aiosmtpd's)."""
    return value is MISSING or type(value).__name__ == "_Missing"


class AuthResult:
    """What an authenticator or an ``auth_<MECH>`` method returns (aiosmtpd's shape).

    Only ``success=True`` authenticates (anything else, a truthy value included, fails
    closed). ``handled`` means the method already answered the client itself.
    ``authorization_id`` is the identity the client may act as when it asked, with AUTH
    PLAIN, for one other than its login (RFC 4616's authzid, ``auth_data.authzid``):
    without it, such a request is refused with 535.
    """

    def __init__(
        self,
        *,
        success: bool,
        handled: bool = True,
        message: str | None = None,
        auth_data: Any = None,
        authorization_id: bytes | str | None = None,
    ) -> None:
        self.success = success
        self.handled = handled
        self.message = message
        self.auth_data = auth_data
        self.authorization_id = authorization_id

    def __repr__(self) -> str:
        # auth_data (credentials, often) is never shown: aiosmtpd's form.
        return (
            f"AuthResult(success={self.success}, handled={self.handled}, "
            f"message={self.message!r}, auth_data=...)"
        )


def is_auth_result(value: object) -> TypeGuard[AuthResult]:
    # aiosmtpd's own AuthResult counts too (authenticators written for it import theirs);
    # it has the same four attributes, which is all that is read from either.
    """Whether ``value`` is an AuthResult (ferrosmtp's or aiosmtpd's)."""
    return isinstance(value, AuthResult) or type(value).__name__ == "AuthResult"


_MECHANISM_NAME = re.compile(r"[A-Z0-9_-]+", re.ASCII)


class _LoginPassword(NamedTuple):
    """The credentials an AUTH PLAIN or LOGIN exchange gave (aiosmtpd's type)."""

    login: bytes
    password: bytes

    def __str__(self) -> str:
        # Never the password: sessions and results get logged (aiosmtpd's form).
        return f"LoginPassword(login='{self.login.decode(errors='replace')}', password=...)"

    def __repr__(self) -> str:
        return str(self)


class LoginPassword(_LoginPassword):
    """The credentials of AUTH PLAIN or LOGIN, as the authenticator gets them: aiosmtpd's
    ``(login, password)`` pair (it unpacks and compares as one), plus ``authzid``, the
    identity an AUTH PLAIN client asks to act as (RFC 4616; ``b""``: its login's own)."""

    authzid: bytes

    def __new__(cls, login: bytes, password: bytes, authzid: bytes = b"") -> LoginPassword:
        self = super().__new__(cls, login, password)
        self.authzid = authzid
        return self


def auth_mechanism(actual_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Name an ``auth_...`` method's mechanism when the name is not a valid identifier.
    The name must be of ``[A-Z0-9_-]`` (any case) as in aiosmtpd; else ValueError."""
    actual_name = actual_name.upper()
    if not _MECHANISM_NAME.fullmatch(actual_name):
        raise ValueError(f"Invalid AUTH mechanism name: {actual_name}")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        func.__auth_mechanism_name__ = actual_name  # type: ignore[attr-defined]
        return func

    return decorator


class Session:
    """Per-connection state handlers see (aiosmtpd's attributes; add your own freely)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.peer: Any = None
        self.ssl: dict[str, Any] | None = None
        self.host_name: str | None = None
        self.extended_smtp = False
        self.loop = loop
        self.proxy_data: Any = None
        self.auth_data: Any = None
        self.authenticated: bool | None = None
        self.login_data: Any = None


class Envelope:
    """One mail transaction (aiosmtpd's attributes, plus the ESMTP parameters as sent)."""

    def __init__(self) -> None:
        self.mail_from: str | None = None
        self.mail_options: list[str] = []
        self.mail_params: dict[str, str | None] = {}
        self.smtp_utf8 = False
        self.content: bytes | str | None = None
        self.original_content: bytes | None = None
        self.rcpt_tos: list[str] = []
        self.rcpt_options: list[str] = []
        self.rcpt_params: dict[str, dict[str, str | None]] = {}
