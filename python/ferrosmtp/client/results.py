"""What the client returns: ``SMTPResponse`` for a reply, ``SendResult`` for a message
(aiosmtplib's shapes), and the conversions from the codec's replies."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from ferrosmtp.errors import SMTPRecipientRefused, SMTPRecipientsRefused

if TYPE_CHECKING:
    from ferrosmtp.codec import Reply

__all__ = [
    "SMTPResponse",
    "SMTPStatus",
    "SendResult",
    "all_refused",
    "send_result",
    "smtp_response",
]


class SMTPStatus(enum.IntEnum):
    """Reply codes by name, as aiosmtplib's ``SMTPStatus``."""

    invalid_response = -1
    system_status_ok = 211
    help_message = 214
    ready = 220
    closing = 221
    auth_successful = 235
    completed = 250
    will_forward = 251
    cannot_vrfy = 252
    auth_continue = 334
    start_input = 354
    domain_unavailable = 421
    mailbox_unavailable = 450
    error_processing = 451
    insufficient_storage = 452
    tls_not_available = 454
    unrecognized_command = 500
    unrecognized_parameters = 501
    command_not_implemented = 502
    bad_command_sequence = 503
    parameter_not_implemented = 504
    domain_does_not_accept_mail = 521
    access_denied = 530
    auth_failed = 535
    mailbox_does_not_exist = 550
    user_not_local = 551
    storage_exceeded = 552
    mailbox_name_invalid = 553
    transaction_failed = 554
    syntax_error = 555


class SMTPResponse(NamedTuple):
    """A server reply: ``code`` and ``message`` (the reply lines joined by newlines),
    as in aiosmtplib."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.message}"


class SendResult(tuple[dict[str, SMTPResponse], str]):
    """What ``sendmail``/``send_message`` return: aiosmtplib's ``(refused, message)``
    tuple, so ``errors, reply = await client.sendmail(...)`` works as before.

    ``refused`` maps each refused recipient to the server's reply (RCPT refusals, and
    for LMTP, per-recipient delivery failures); ``message`` is the text of the reply to
    the message content; ``delivered`` maps each recipient the message went to, to the
    final reply for it (the one reply to the content in SMTP, its own reply in LMTP).
    """

    delivered: dict[str, SMTPResponse]

    def __new__(
        cls,
        refused: dict[str, SMTPResponse],
        message: str,
        delivered: dict[str, SMTPResponse] | None = None,
    ) -> SendResult:
        self = super().__new__(cls, (refused, message))
        self.delivered = delivered if delivered is not None else {}
        return self

    @property
    def refused(self) -> dict[str, SMTPResponse]:
        return self[0]

    @property
    def message(self) -> str:
        return self[1]


_new_response = tuple.__new__  # an SMTPResponse without NamedTuple.__new__'s Python frame


def send_result(
    refused: dict[str, SMTPResponse], message: str, delivered: dict[str, SMTPResponse]
) -> SendResult:
    """``SendResult(refused, message, delivered)`` without the frames of its ``__new__``
    and ``super()``: one is made per message."""
    result: SendResult = _new_response(SendResult, (refused, message))
    result.delivered = delivered
    return result


def smtp_response(reply: Reply) -> SMTPResponse:
    """An SMTPResponse from a codec Reply."""
    return _new_response(SMTPResponse, (int(reply.code), str(reply.text)))


def all_refused(refused: Mapping[str, SMTPResponse]) -> SMTPRecipientsRefused:
    """The SMTPRecipientsRefused for a message whose every recipient was refused."""
    return SMTPRecipientsRefused(
        [SMTPRecipientRefused(r.code, r.message, rcpt) for rcpt, r in refused.items()]
    )
