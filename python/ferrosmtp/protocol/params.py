"""The rules of the ESMTP parameters of MAIL and RCPT, one place for both sides.

The server checks what a client sent with them (``ServerConnection``), the client checks
what it is about to send (``ClientConnection`` and the client's envelope), so the two
cannot drift apart (as go-smtp's ``checkNotifySet`` serves its server and its client).
Each function takes a parameter's value as sent (``None`` for a keyword without ``=``)
and says whether it is valid, or what it means.

- SIZE (RFC 1870): ASCII digits only. ``str.isdigit()`` is not the test: it takes "²",
  which ``int()`` refuses, and other Unicode digits, which ``int()`` reads as numbers.
- BODY (RFC 6152): 7BIT or 8BITMIME (BINARYMIME only where RFC 3030's extension is on).
- SMTPUTF8 (RFC 6531): no value.
- RET, ENVID (MAIL), NOTIFY, ORCPT (RCPT): DSN, RFC 3461 §4.
- AUTH (MAIL, RFC 4954 §5): xtext or ``<>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

__all__ = [
    "MAX_ENVID",
    "MAX_SIZE_DIGITS",
    "MAX_XTEXT",
    "NOTIFY_VALUES",
    "QUERY_NAME",
    "RET_VALUES",
    "auth_ok",
    "body_ok",
    "envid_ok",
    "notify_ok",
    "notify_value",
    "orcpt_ok",
    "query_ok",
    "ret_ok",
    "size_octets",
    "smtputf8_ok",
]

# Twenty digits are more octets than any message; longer numbers are not read at all
# (``int()`` of thousands of digits is slow, and refused past 4300).
MAX_SIZE_DIGITS = 20
MAX_ENVID = 100  # RFC 3461 §4.4
MAX_XTEXT = 500  # ORCPT's address (RFC 3461 §4.2) and AUTH's mailbox (RFC 4954 §5)
RET_VALUES = frozenset({"FULL", "HDRS"})
NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_BODY_VALUES = frozenset({"7BIT", "8BITMIME"})
_DIGITS = frozenset("0123456789")

XtextDecode = Callable[[str], str]  # the codec's xtext_decode: raises ValueError


def size_octets(value: str | None) -> int | None:
    """A SIZE value as a number of octets, or None if it is not one."""
    if value is None or not 0 < len(value) <= MAX_SIZE_DIGITS or not _DIGITS.issuperset(value):
        return None
    return int(value)


def body_ok(value: str | None, *, binarymime: bool = False) -> bool:
    """BODY=7BIT or 8BITMIME (RFC 6152), or BINARYMIME where RFC 3030's is offered."""
    if value is None:
        return False
    upper = value.upper()
    return upper in _BODY_VALUES or (binarymime and upper == "BINARYMIME")


def smtputf8_ok(value: str | None) -> bool:
    """SMTPUTF8 takes no value (RFC 6531 §3.4)."""
    return value is None


def ret_ok(value: str | None) -> bool:
    """RET=FULL or HDRS (RFC 3461 §4.3), in any case."""
    return value is not None and value.upper() in RET_VALUES


def notify_ok(value: str | None) -> bool:
    """NEVER, or one or more of SUCCESS, FAILURE and DELAY, each once, comma-separated."""
    if value is None:
        return False
    words = value.upper().split(",")
    if words == ["NEVER"]:
        return True
    return set(words) <= NOTIFY_VALUES and len(set(words)) == len(words)


def notify_value(words: Iterable[str]) -> str:
    """NOTIFY's value from the words a caller gives (``["SUCCESS", "FAILURE"]``);
    ValueError unless ``notify_ok`` holds for it."""
    value = ",".join(str(word).upper() for word in words)
    if not notify_ok(value):
        raise ValueError("notify must be NEVER, or some of SUCCESS, FAILURE and DELAY, each once")
    return value


def _is_xtext(value: str, limit: int, xtext_decode: XtextDecode) -> bool:
    if len(value) > limit or not value.isascii():
        return False
    try:
        xtext_decode(value)
    except ValueError:
        return False
    return True


def envid_ok(value: str | None, xtext_decode: XtextDecode) -> bool:
    """ENVID: xtext of at most 100 characters (RFC 3461 §4.4)."""
    return value is not None and _is_xtext(value, MAX_ENVID, xtext_decode)


def orcpt_ok(value: str | None, xtext_decode: XtextDecode) -> bool:
    """``addr-type ";" xtext`` (RFC 3461 §4.2)."""
    addr_type, sep, address = (value or "").partition(";")
    return bool(sep and addr_type) and _is_xtext(address, MAX_XTEXT, xtext_decode)


def auth_ok(value: str | None, xtext_decode: XtextDecode) -> bool:
    """MAIL's AUTH=: an xtext mailbox or ``<>`` (RFC 4954 §5)."""
    return value is not None and (value == "<>" or _is_xtext(value, MAX_XTEXT, xtext_decode))


# VRFY and EXPN (RFC 5321 §3.5.3, §4.1.1.6): a user or list name (RFC 5321 String, with
# dots as in a Dot-string; RFC 6531 lets atext be UTF-8): atext runs joined by dots, or
# one quoted string. No space, no <, > or @ outside the quotes, so nothing after it can be
# read as a parameter.
QUERY_NAME = re.compile(
    r'[^\x00-\x20\x7f"(),.:;<>@\[\\\]]+(?:\.[^\x00-\x20\x7f"(),.:;<>@\[\\\]]+)*'
    r'|"(?:[^"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*"'
)


def query_ok(argument: str, is_mailbox: Callable[[str], bool]) -> bool:
    """Whether a VRFY or EXPN argument is a name, a quoted string or (``is_mailbox``,
    the side's own address parser) a mailbox."""
    return QUERY_NAME.fullmatch(argument) is not None or is_mailbox(argument)
