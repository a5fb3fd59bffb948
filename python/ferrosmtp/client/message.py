"""A message as the client sends it: its bytes (``flatten_message``), its size on the wire
(``wire_size``, for SIZE) and the envelope addresses its headers name."""

from __future__ import annotations

import copy
import email.generator
import email.message
import email.policy
import email.utils
import io
from collections.abc import Iterable

from ferrosmtp import codec as _codec
from ferrosmtp.client.options import CHUNK_SIZE

__all__ = ["extract_recipients", "extract_sender", "flatten_message", "wire_size"]


def wire_size(body: bytes) -> int:
    """The size of ``body`` as transmitted (RFC 1870): bare CR and LF counted as CRLF and
    a final CRLF added if missing, without the dot-stuffing.

    Counted by running the codec's line-end normalizer over the body, a piece at a time
    (memory stays bounded; in Rust this is several times faster than ``bytes.count``)."""
    if len(body) <= CHUNK_SIZE:
        return len(_codec.dot_stuff(body, dots=False))  # one codec call
    normalizer = _codec.DotStuffer(dots=False)
    size = 0
    for start in range(0, len(body), CHUNK_SIZE):
        size += len(normalizer.feed(body[start : start + CHUNK_SIZE]))
    return size + len(normalizer.finish())


def flatten_message(
    message: email.message.Message, *, utf8: bool = False, cte_type: str = "8bit"
) -> bytes:
    """The message as bytes with CRLF line ends, without its Bcc and Resent-Bcc headers."""
    message = copy.copy(message)
    del message["Bcc"]
    del message["Resent-Bcc"]
    policy: email.policy.Policy
    if isinstance(message, email.message.EmailMessage):
        policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    else:
        policy = email.policy.compat32.clone(linesep="\r\n")
    if cte_type != "8bit":
        policy = policy.clone(cte_type=cte_type)
    buffer = io.BytesIO()
    email.generator.BytesGenerator(buffer, policy=policy).flatten(message)
    return buffer.getvalue()


def _header_addresses(message: email.message.Message, names: Iterable[str]) -> list[str]:
    values = [str(v) for name in names for v in message.get_all(name, [])]
    return [address for _, address in email.utils.getaddresses(values) if address]


def extract_sender(message: email.message.Message) -> str | None:
    """The envelope sender from the headers: Sender, else From (Resent-* for a resent
    message, RFC 5322 §3.6.6)."""
    prefix = _resent_prefix(message)
    for name in (prefix + "Sender", prefix + "From"):
        if name in message:
            addresses = _header_addresses(message, [name])
            return addresses[0] if addresses else None
    return None


def extract_recipients(message: email.message.Message) -> list[str]:
    """The envelope recipients from To, Cc and Bcc (Resent-* for a resent message)."""
    prefix = _resent_prefix(message)
    return _header_addresses(message, [prefix + "To", prefix + "Cc", prefix + "Bcc"])


def _resent_prefix(message: email.message.Message) -> str:
    resent = message.get_all("Resent-Date")
    if resent is not None and len(resent) > 1:
        raise ValueError("Message has more than one 'Resent-' header block")
    return "Resent-" if resent else ""
