"""Delivery status notifications (RFC 3464, RFC 6522): a ``multipart/report`` with a
human explanation, a ``message/delivery-status`` part (per message, then one group of
fields per recipient) and the original message (``message/rfc822``) or its header
section (``text/rfc822-headers``, for RET=HDRS or when the message is big)."""

from __future__ import annotations

import dataclasses
import email.utils
import secrets
from collections.abc import Sequence

from ferrosmtp.relay.queue import QueueEntry, Recipient

__all__ = ["Notice", "build_dsn", "wants_notice"]

# Whole messages are returned up to this size (Postfix's bounce_size_limit), else their
# header section only; so is a message that failed for its size (5.3.4).
RETURN_LIMIT = 50000

_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "relayed": "Successful Mail Delivery Report",
    "delivered": "Successful Mail Delivery Report",
}

_EXPLANATIONS = {
    "failed": "I'm sorry to have to inform you that your message could not\r\n"
    "be delivered to one or more recipients. It's attached below.",
    "delayed": "Your message could not be delivered yet to one or more recipients.\r\n"
    "Delivery will be tried again; you do not need to resend it.",
    "relayed": "Your message was successfully relayed to the recipients below.\r\n"
    "The next system does not report delivery status, so no further notices\r\n"
    "will come from it.",
    "delivered": "Your message was successfully delivered to the recipients below.",
}


@dataclasses.dataclass
class Notice:
    """One recipient's line in a DSN."""

    recipient: Recipient
    action: str  # failed | delayed | relayed | delivered
    status: str
    diagnostic: str | None = None
    remote_mta: str | None = None


def wants_notice(recipient: Recipient, action: str) -> bool:
    """NOTIFY (RFC 3461 §4.1): failures are reported unless NOTIFY says otherwise;
    delays and successes only when asked for."""
    notify = recipient.notify
    if notify is None:
        return action == "failed"
    if "NEVER" in notify:
        return False
    wanted = {"failed": "FAILURE", "delayed": "DELAY"}.get(action, "SUCCESS")
    return wanted in notify


def _date(when: float) -> str:
    return email.utils.formatdate(when, localtime=True)


def _header_section(body: bytes) -> bytes:
    end = body.find(b"\r\n\r\n")
    return body if end < 0 else body[: end + 2]


def _clean(text: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def build_dsn(
    entry: QueueEntry,
    body: bytes | None,
    notices: Sequence[Notice],
    *,
    hostname: str,
    now: float,
) -> bytes:
    """The DSN message (CRLF line ends) for ``entry`` about ``notices`` (one action)."""
    action = notices[0].action
    boundary = f"{entry.id}.{secrets.token_hex(8)}/{hostname}"
    envelope = entry.envelope
    lines = [
        f"From: MAILER-DAEMON@{hostname} (Mail Delivery System)",
        f"To: <{envelope.sender}>",
        f"Subject: {_SUBJECTS[action]}",
        f"Date: {_date(now)}",
        f"Message-ID: <{entry.id}.{secrets.token_hex(6)}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This is the mail system at host {hostname}.",
        "",
        _EXPLANATIONS[action],
        "",
    ]
    for notice in notices:
        reason = _clean(notice.diagnostic or notice.status)
        lines.append(f"<{_clean(notice.recipient.address)}>: {reason}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {hostname}",
        f"X-Ferrosmtp-Queue-ID: {entry.id}",
    ]
    if envelope.envid:
        lines.append(f"Original-Envelope-Id: {_clean(envelope.envid)}")
    lines.append(f"Arrival-Date: {_date(entry.arrival)}")
    for notice in notices:
        rcpt = notice.recipient
        kind = "utf-8" if not rcpt.address.isascii() else "rfc822"
        lines += ["", f"Final-Recipient: {kind}; {_clean(rcpt.address)}"]
        if rcpt.orcpt:
            lines.append(f"Original-Recipient: {_clean(rcpt.orcpt)}")
        lines += [f"Action: {notice.action}", f"Status: {notice.status}"]
        if notice.remote_mta:
            lines.append(f"Remote-MTA: dns; {_clean(notice.remote_mta)}")
        if notice.diagnostic:
            lines.append(f"Diagnostic-Code: smtp; {_clean(notice.diagnostic)}")
        lines.append(f"Last-Attempt-Date: {_date(now)}")
        if action == "delayed":
            lines.append(f"Will-Retry-Until: {_date(entry.next_attempt)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    original = b""
    if body is not None:
        full = (
            envelope.ret != "HDRS"
            and len(body) <= RETURN_LIMIT
            and action == "failed"
            and not any(n.status == "5.3.4" for n in notices)
        )
        if full:
            part_type, original = "message/rfc822", body
        else:
            part_type, original = "text/rfc822-headers", _header_section(body)
        if not original.endswith(b"\r\n"):
            original += b"\r\n"
        head += (
            f"--{boundary}\r\nContent-Description: Undelivered Message\r\n"
            f"Content-Type: {part_type}\r\n\r\n"
        ).encode()
    return head + original + f"\r\n--{boundary}--\r\n".encode()
