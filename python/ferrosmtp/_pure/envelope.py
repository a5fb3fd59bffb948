"""The client's side of an envelope: MAIL FROM and RCPT TO lines, built from addresses and
ESMTP parameters a caller gives, checked so that nothing can change a line's meaning."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from ferrosmtp._pure.address import parse_path
from ferrosmtp._pure.params import parse_params


def _is_control(c: str) -> bool:
    return c < " " or c == "\x7f"


def _has_control(text: str) -> bool:
    return any(_is_control(c) for c in text)


_KEYWORD_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_KEYWORD_REST = _KEYWORD_START | {"-"}


def _is_keyword(key: object) -> bool:
    return (
        isinstance(key, str)
        and key != ""
        and key[0] in _KEYWORD_START
        and all(c in _KEYWORD_REST for c in key)
    )


def _is_ascii_value(value: str) -> bool:
    # esmtp-value = 1*(%d33-60 / %d62-126)
    return value != "" and all("!" <= c <= "~" and c != "=" for c in value)


@functools.lru_cache(maxsize=4096)  # pure: bulk senders repeat the same addresses
def _canonical(text: str, smtputf8: bool, role: str) -> tuple[str, bool, bool]:
    if _has_control(text):
        raise ValueError(f"the {role} address contains CR, LF, NUL or another control character")
    if not smtputf8 and not text.isascii():
        raise ValueError(f"the {role} address is not ASCII: it needs SMTPUTF8")
    try:
        path = parse_path(text if text.startswith("<") else f"<{text}>", smtputf8=smtputf8)
    except ValueError as exc:
        reason = getattr(exc, "text", str(exc))
        raise ValueError(f"invalid {role} address {text!r}: {reason}") from None
    return path.address, path.is_null, path.is_postmaster


def canonical_address(text: object, smtputf8: bool, role: str) -> tuple[str, bool, bool]:
    """``(address, is_null, is_postmaster)`` of an address given as ``a@b`` or ``<a@b>``:
    parsed with the server's parser and re-serialized (a source route is dropped: RFC 5321
    §4.1.2 says clients SHOULD NOT send them). Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"the {role} address must be a str, not {type(text).__name__}")
    return _canonical(text, smtputf8, role)


def format_params(params: Mapping[str, str | None] | None, smtputf8: bool) -> str:
    """`` KEY=value KEY2`` (with its leading space; "" without parameters), keywords as
    given. Keywords match ``(ALPHA / DIGIT) *(ALPHA / DIGIT / "-")`` and appear once;
    values are ``1*(%d33-60 / %d62-126)``, or UTF-8 under SMTPUTF8 as ``parse_params``
    takes it."""
    if not params:
        return ""
    words = []
    seen: set[str] = set()
    for key, value in params.items():
        if not _is_keyword(key):
            raise ValueError(f"invalid ESMTP parameter keyword: {key!r}")
        upper = key.upper()
        if upper in seen:
            raise ValueError(f"ESMTP parameter {upper} given twice")
        seen.add(upper)
        if value is None:
            words.append(key)
            continue
        valid = isinstance(value, str) and (
            _is_ascii_value(value)
            or (smtputf8 and not value.isascii() and _utf8_value_ok(key, value, upper))
        )
        if not valid:
            raise ValueError(f"invalid value for ESMTP parameter {key}: {value!r}")
        words.append(f"{key}={value}")
    return " " + " ".join(words)


def _utf8_value_ok(key: str, value: str, upper: str) -> bool:
    try:
        return parse_params(f"{key}={value}", smtputf8=True) == {upper: value}
    except ValueError:
        return False


def _line(verb: str, argument: str) -> bytes:
    # The last guard against injection: whatever built the argument, a command line never
    # carries a control character.
    if _has_control(argument):
        raise ValueError(f"{verb} argument contains CR, LF, NUL or another control character")
    return f"{verb} {argument}\r\n".encode()


def format_envelope(
    sender: str | None,
    recipients: Sequence[str] | None = None,
    mail_params: Mapping[str, str | None] | None = None,
    rcpt_params: Mapping[str, str | None] | None = None,
    *,
    smtputf8: bool = False,
) -> list[tuple[str, bytes]]:
    """The MAIL FROM line of ``sender`` (None: no MAIL line) and one RCPT TO line per
    recipient, each as ``(canonical address, line)``, in that order.

    Addresses (``a@b`` or ``<a@b>``; ``""`` or ``<>`` for a null sender) are parsed with
    the server's parser and re-serialized; non-ASCII needs ``smtputf8``. ``mail_params``
    go on the MAIL line, ``rcpt_params`` on every RCPT line (keywords as given, checked
    against the RFC 5321 grammar). Everything is checked before anything is returned:
    a refusal raises ValueError saying what is wrong."""
    if isinstance(recipients, str):
        raise ValueError("recipients must be a sequence of addresses, not one str")
    out: list[tuple[str, bytes]] = []
    if sender is not None:
        address, _, postmaster = canonical_address(sender, smtputf8, "sender")
        if postmaster:
            raise ValueError("the sender must be a mailbox or <>, not <Postmaster>")
        text = format_params(mail_params, smtputf8)
        out.append((address, _line("MAIL", f"FROM:<{address}>{text}")))
    params: str | None = None  # the parameters, checked after the first address
    for recipient in recipients or ():
        address, null, _ = canonical_address(recipient, smtputf8, "recipient")
        if null:
            raise ValueError("a recipient cannot be the null path <>")
        if params is None:
            params = format_params(rcpt_params, smtputf8)
        out.append((address, _line("RCPT", f"TO:<{address}>{params}")))
    return out
