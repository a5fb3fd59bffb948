"""SASL for SMTP AUTH (RFC 4954): pure functions for both sides.

Client side: the base64 responses for PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195) and
XOAUTH2. Server side: strict decoding of what a client sends (RFC 4954 §4) and parsing of
a PLAIN message. Nothing here does I/O; the client and the server call these.

Strings are encoded as UTF-8 (no SASLprep: user names and passwords are sent as given).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from typing import NamedTuple

__all__ = [
    "LOGIN_PASSWORD_CHALLENGE",
    "LOGIN_USERNAME_CHALLENGE",
    "PlainCredentials",
    "SASLCancelled",
    "SASLError",
    "b64",
    "cram_md5_response",
    "decode_challenge",
    "decode_response",
    "login_response",
    "parse_plain",
    "plain_response",
    "xoauth2_response",
]

MAX_PLAIN_FIELD = 255  # octets: RFC 4616 §2 limits authzid, authcid and passwd to 255

# The LOGIN mechanism's conventional challenges ("Username:", "Password:").
LOGIN_USERNAME_CHALLENGE = "VXNlcm5hbWU6"
LOGIN_PASSWORD_CHALLENGE = "UGFzc3dvcmQ6"

_STRICT_BASE64 = re.compile(
    rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?", re.ASCII
)


class SASLError(ValueError):
    """A SASL exchange the server must refuse, with the reply to send.

    ``code``/``enhanced``/``text`` follow RFC 4954 §6 (501 5.5.2 for a response that is
    not valid base64, 535 5.7.8 for malformed credentials).
    """

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(code, enhanced, text)
        self.code = code
        self.enhanced = enhanced
        self.text = text

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


class SASLCancelled(SASLError):
    """The client answered ``*``: it abandons the exchange (RFC 4954 §4)."""

    def __init__(self) -> None:
        super().__init__(501, "5.7.0", "Authentication cancelled")


def _utf8(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def b64(data: bytes) -> str:
    """Base64 without line breaks, as SASL sends it."""
    return base64.b64encode(data).decode("ascii")


# --- Client side ----------------------------------------------------------------------------


def plain_response(username: str | bytes, password: str | bytes, authzid: str | bytes = "") -> str:
    """The PLAIN initial response: base64 of ``authzid NUL authcid NUL passwd``.

    Raises ValueError if a part contains NUL (it would change the message's fields)."""
    parts = [_utf8(authzid, "authzid"), _utf8(username, "username"), _utf8(password, "password")]
    if any(b"\x00" in part for part in parts):
        raise ValueError("PLAIN credentials must not contain NUL")
    return b64(b"\x00".join(parts))


def login_response(challenge: str, username: str | bytes, password: str | bytes) -> str:
    """The LOGIN response to a server challenge: the user name to "Username:", the
    password to "Password:" (decoded, case-insensitive). Raises ValueError on any other
    challenge."""
    prompt = decode_challenge(challenge).decode("utf-8", "replace").strip().lower()
    if prompt.startswith("username") or prompt.startswith("user name"):
        return b64(_utf8(username, "username"))
    if prompt.startswith("password"):
        return b64(_utf8(password, "password"))
    raise ValueError(f"unexpected LOGIN challenge: {prompt!r}")


def cram_md5_response(challenge: str, username: str | bytes, password: str | bytes) -> str:
    """The CRAM-MD5 response (RFC 2195): ``user SP hex(HMAC-MD5(password, challenge))``."""
    digest = hmac.new(_utf8(password, "password"), decode_challenge(challenge), "md5").hexdigest()
    return b64(_utf8(username, "username") + b" " + digest.encode("ascii"))


def xoauth2_response(username: str | bytes, access_token: str | bytes) -> str:
    """The XOAUTH2 initial response: ``user=U ^A auth=Bearer T ^A ^A`` in base64."""
    user = _utf8(username, "username")
    token = _utf8(access_token, "access token")
    if any(c in part for part in (user, token) for c in (b"\x01", b"\r", b"\n")):
        raise ValueError("XOAUTH2 user name and token must not contain ^A, CR or LF")
    return b64(b"user=" + user + b"\x01auth=Bearer " + token + b"\x01\x01")


def decode_challenge(challenge: str) -> bytes:
    """A server's 334 challenge text, decoded. Lenient about surrounding spaces (the
    server's business), strict about the alphabet."""
    text = challenge.strip().encode("ascii", "replace")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"the server's SASL challenge is not base64: {challenge!r}") from None


# --- Server side ----------------------------------------------------------------------------


def decode_response(line: str | bytes, *, initial: bool = False) -> bytes:
    """Decode a client's SASL response strictly (RFC 4954 §4).

    Accepts only the base64 alphabet with padding at the end and canonical trailing bits;
    no whitespace, no line breaks. ``*`` raises SASLCancelled. With ``initial=True`` (the
    argument of ``AUTH mech <initial-response>``) a lone ``=`` is the empty response; a
    response line that is empty is the empty response too. Anything else raises SASLError
    (501 5.5.2).
    """
    data = line.encode("ascii", "replace") if isinstance(line, str) else bytes(line)
    if data == b"*":
        raise SASLCancelled()
    if data == b"=" and initial:
        return b""
    if data == b"" and not initial:
        return b""
    if not data or _STRICT_BASE64.fullmatch(data) is None:
        raise SASLError(501, "5.5.2", "Cannot decode response")
    decoded = base64.b64decode(data, validate=True)
    if base64.b64encode(decoded) != data:  # non-zero padding bits: not canonical
        raise SASLError(501, "5.5.2", "Cannot decode response")
    return decoded


class PlainCredentials(NamedTuple):
    """The three fields of a PLAIN message (RFC 4616). ``authzid`` is "" when the client
    asks to act as itself."""

    authzid: str
    authcid: str
    password: str


def parse_plain(message: bytes) -> PlainCredentials:
    """Split a decoded PLAIN message ``[authzid] NUL authcid NUL passwd``.

    Exactly two NULs, a non-empty authcid and password, each field at most 255 octets of
    valid UTF-8; otherwise SASLError (535 5.7.8, as for wrong credentials, so a prober
    learns nothing from the difference)."""
    fields = message.split(b"\x00")
    if len(fields) != 3:
        raise SASLError(535, "5.7.8", "Authentication credentials invalid")
    if not fields[1] or not fields[2] or any(len(f) > MAX_PLAIN_FIELD for f in fields):
        raise SASLError(535, "5.7.8", "Authentication credentials invalid")
    try:
        authzid, authcid, password = (f.decode("utf-8") for f in fields)
    except UnicodeDecodeError:
        raise SASLError(535, "5.7.8", "Authentication credentials invalid") from None
    return PlainCredentials(authzid, authcid, password)
