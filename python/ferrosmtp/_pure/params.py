"""ESMTP parameters of MAIL and RCPT (RFC 5321 §4.1.2) and xtext (RFC 3461 §4)."""

from __future__ import annotations

from ferrosmtp._pure import error
from ferrosmtp._pure.address import _allowed_non_ascii

_KEYWORD_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_KEYWORD_REST = _KEYWORD_START | {"-"}
_HEX_UPPER = "0123456789ABCDEF"


def _is_value_char(c: str, smtputf8: bool) -> bool:
    # esmtp-value = 1*(%d33-60 / %d62-126), plus UTF8-non-ascii under SMTPUTF8 (RFC 6531)
    o = ord(c)
    if 33 <= o <= 126:
        return c != "="
    return smtputf8 and _allowed_non_ascii(c)


def parse_params(text: str, *, smtputf8: bool = False) -> dict[str, str | None]:
    """Parse ``KEY[=value]`` words separated by spaces.

    Keywords are upper-cased, values kept as sent; a keyword given twice is refused.
    Raises CodecError (501 5.5.4).
    """
    error.require_utf8(text)
    params: dict[str, str | None] = {}
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not key or key[0] not in _KEYWORD_START or not all(c in _KEYWORD_REST for c in key):
            raise error.error(error.BAD_PARAMS)
        if eq and (not value or not all(_is_value_char(c, smtputf8) for c in value)):
            raise error.error(error.BAD_PARAMS)
        key = key.upper()
        if key in params:
            raise error.error(error.DUPLICATE_PARAM)
        params[key] = value if eq else None
    return params


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 xtext (``+XX`` hex escapes) to the UTF-8 string it encodes."""
    error.require_utf8(text)
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        o = ord(c)
        if c == "+":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not all(h in "0123456789abcdefABCDEF" for h in pair):
                raise error.error(error.BAD_XTEXT)
            out.append(int(pair, 16))
            i += 3
        elif 33 <= o <= 126 and c != "=":
            out.append(o)
            i += 1
        else:
            raise error.error(error.BAD_XTEXT)
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise error.error(error.BAD_XTEXT) from None


def xtext_encode(text: str) -> str:
    """Encode a string as RFC 3461 xtext: octets outside ``!``..``~``, ``+`` and ``=``
    become ``+XX``."""
    error.require_utf8(text)
    out = []
    for b in text.encode("utf-8"):
        if 33 <= b <= 126 and b != 0x2B and b != 0x3D:
            out.append(chr(b))
        else:
            out.append("+" + _HEX_UPPER[b >> 4] + _HEX_UPPER[b & 15])
    return "".join(out)
