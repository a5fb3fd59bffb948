"""The client's exceptions: aiosmtplib's names, hierarchy and constructor shapes.

Code written against aiosmtplib (``except SMTPRecipientsRefused``, ``exc.code``,
``exc.message``) works unchanged. Two additions sit inside that hierarchy, so catching
the aiosmtplib classes still catches them:

- ``SMTPProtocolError`` (an ``SMTPServerDisconnected``): the server broke the protocol (a
  malformed or unsolicited reply, data after the STARTTLS reply) and the connection was
  closed.
- ``SMTPServiceUnavailable`` (an ``SMTPResponseException`` and an
  ``SMTPServerDisconnected``): the server answered 421 and closed the session, so the
  message was not accepted and may be retried later.
"""

from __future__ import annotations

from asyncio import TimeoutError as _AsyncioTimeoutError
from typing import Any

__all__ = [
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
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPServiceUnavailable",
    "SMTPTimeoutError",
]


class SMTPException(Exception):
    """Base class of every exception the client raises (except ``ValueError`` for
    arguments it refuses before sending anything)."""

    message: str
    args: tuple[Any, ...]

    def __init__(self, message: str, /) -> None:
        self.message = message
        self.args = (message,)


class SMTPServerDisconnected(SMTPException, ConnectionError):
    """The connection was lost, or a command needs a connection and there is none."""


class SMTPProtocolError(SMTPServerDisconnected):
    """The server broke the SMTP protocol; the connection has been closed."""


class SMTPConnectError(SMTPException, ConnectionError):
    """Connecting to the server failed."""


class SMTPTimeoutError(SMTPException, _AsyncioTimeoutError):
    """A network operation timed out."""


class SMTPConnectTimeoutError(SMTPTimeoutError, SMTPConnectError):
    """Connecting, or waiting for the server's greeting, timed out."""


class SMTPReadTimeoutError(SMTPTimeoutError):
    """Waiting for a reply (or for the server to take data) timed out; the connection
    has been closed, since a late reply could otherwise pair with the next command."""


class SMTPNotSupported(SMTPException):
    """A command or parameter needs an extension the server does not offer."""


class SMTPResponseException(SMTPException):
    """The server answered with an error code: ``.code`` and ``.message``."""

    code: int
    args: tuple[Any, ...]

    def __init__(self, code: int, message: str, /) -> None:
        self.code = code
        self.message = message
        self.args = (code, message)


class SMTPServiceUnavailable(SMTPResponseException, SMTPServerDisconnected):
    """The server answered 421 (service not available) and closed the session."""


class SMTPConnectResponseError(SMTPResponseException, SMTPConnectError):
    """The server's greeting was not 220."""


class SMTPHeloError(SMTPResponseException):
    """The server refused EHLO/HELO/LHLO."""


class SMTPDataError(SMTPResponseException):
    """The server refused DATA or the message content."""


class SMTPAuthenticationError(SMTPResponseException):
    """The server refused authentication (often: wrong credentials)."""


class SMTPSenderRefused(SMTPResponseException):
    """The server refused the sender (MAIL FROM): ``.sender``."""

    sender: str
    args: tuple[Any, ...]

    def __init__(self, code: int, message: str, sender: str, /) -> None:
        self.code = code
        self.message = message
        self.sender = sender
        self.args = (code, message, sender)


class SMTPRecipientRefused(SMTPResponseException):
    """The server refused one recipient: ``.recipient``."""

    recipient: str
    args: tuple[Any, ...]

    def __init__(self, code: int, message: str, recipient: str, /) -> None:
        self.code = code
        self.message = message
        self.recipient = recipient
        self.args = (code, message, recipient)


class SMTPRecipientsRefused(SMTPException):
    """The server refused every recipient: ``.recipients`` lists the refusals."""

    recipients: list[SMTPRecipientRefused]
    args: tuple[Any, ...]

    def __init__(self, recipients: list[SMTPRecipientRefused], /) -> None:
        self.recipients = recipients
        self.args = (recipients,)
