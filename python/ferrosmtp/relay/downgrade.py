"""8-bit to 7-bit conversion for a next hop without 8BITMIME (RFC 6152 §3).

Every leaf MIME part whose content has 8-bit octets (or says ``8bit``/``binary``) is
re-encoded: quoted-printable for mostly-ASCII text, Base64 for the rest, with its
``Content-Transfer-Encoding`` set to match. Headers are kept as they came (no refolding).
A message that cannot be converted raises :class:`Unconvertible` (status 5.6.3): 8-bit
octets in a header (only SMTPUTF8 could carry them), or in a ``message/*`` part that
RFC 2046 forbids to re-encode.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import quopri
from email.generator import BytesGenerator
from email.message import Message
from io import BytesIO

__all__ = ["Unconvertible", "needs_downgrade", "to_7bit"]

_POLICY = email.policy.compat32.clone(linesep="\r\n")


class Unconvertible(Exception):
    """The message cannot be made 7-bit."""

    status = "5.6.3"


def needs_downgrade(body: bytes) -> bool:
    """Whether the body has 8-bit content (to be converted for a next hop without 8BITMIME)."""
    return not body.isascii()


def _header_section(body: bytes) -> bytes:
    end = body.find(b"\r\n\r\n")
    return body if end < 0 else body[:end]


def to_7bit(body: bytes) -> bytes:
    """The message in 7 bits. Raises Unconvertible."""
    if not _header_section(body).isascii():
        raise Unconvertible("8-bit octets in a header need SMTPUTF8, which the next hop lacks")
    message = email.parser.BytesParser(policy=_POLICY).parsebytes(body)
    for part in message.walk():
        if part.is_multipart():
            continue
        _encode_part(part)
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=_POLICY).flatten(message)
    result = out.getvalue()
    if not result.isascii():  # e.g. 8-bit octets in a MIME part's own headers
        raise Unconvertible("8-bit octets that cannot be re-encoded")
    return result


def _encode_part(part: Message) -> None:
    cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if cte in ("quoted-printable", "base64"):
        return  # already 7-bit
    data = part.get_payload(decode=True)  # for 7bit/8bit/binary: the octets as they came
    if not isinstance(data, bytes) or (data.isascii() and cte not in ("8bit", "binary")):
        return
    if part.get_content_maintype() == "message":
        raise Unconvertible(f"8-bit {part.get_content_type()} part cannot be re-encoded")
    text = part.get_content_maintype() == "text"
    eight_bit = sum(b >= 0x80 for b in data)
    del part["Content-Transfer-Encoding"]
    if text and eight_bit * 2 < max(len(data), 1):  # mostly ASCII text: readable QP
        lines = data.replace(b"\r\n", b"\n")
        encoded = quopri.encodestring(lines, quotetabs=False).replace(b"\n", b"\r\n")
        part["Content-Transfer-Encoding"] = "quoted-printable"
    else:
        encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
        part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(encoded.decode("ascii"))
