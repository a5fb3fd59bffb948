"""What the client returns: ``SMTPResponse`` for a reply, ``SendResult`` for a message
(aiosmtplib's shapes), and the conversions from the codec's replies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ferrosmtp.errors import SMTPRecipientRefused, SMTPRecipientsRefused

__all__ = ["SMTPResponse", "SendResult", "all_refused", "smtp_response"]


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


def smtp_response(reply: Any) -> SMTPResponse:
    return SMTPResponse(int(reply.code), str(reply.text))


def all_refused(refused: Mapping[str, SMTPResponse]) -> SMTPRecipientsRefused:
    return SMTPRecipientsRefused(
        [SMTPRecipientRefused(r.code, r.message, rcpt) for rcpt, r in refused.items()]
    )
