"""Tokenizing one SMTP command line (RFC 5321 §4.1, with ESMTP verbs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferrosmtp._pure import error
from ferrosmtp._pure.address import Path, domain_problem, is_address_literal, parse_path_as
from ferrosmtp._pure.params import parse_params

MAX_VERB = 32
MAX_BDAT_DIGITS = 20
_U64_MAX = (1 << 64) - 1
_VERB_START = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_VERB_REST = _VERB_START | frozenset(b"0123456789-")
_MECH_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_HELLO = frozenset({"HELO", "EHLO", "LHLO"})
_NO_ARGUMENT = frozenset({"DATA", "RSET", "QUIT", "STARTTLS"})


@dataclass(frozen=True)
class Command:
    """One parsed command line.

    ``verb`` is upper-cased; ``arg`` is the text after the verb with surrounding spaces
    removed. MAIL and RCPT carry their parsed ``path`` and ESMTP ``params``; BDAT carries
    ``chunk_size`` and ``last``.
    """

    verb: str
    arg: str
    path: Path | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    chunk_size: int | None = None
    last: bool = False


def parse_command(line: bytes, *, smtputf8: bool = False) -> Command:
    """Parse one command line (a trailing CRLF is allowed and ignored).

    ``smtputf8`` says whether the server offers SMTPUTF8: only then may MAIL, RCPT, VRFY
    and EXPN carry UTF-8, and a MAIL path only with the ``SMTPUTF8`` parameter.
    Raises CodecError carrying the reply to send.
    """
    line = error.require_bytes(line, "line")
    if line.endswith(b"\r\n"):
        line = line[:-2]
    if not line:
        raise error.error(error.EMPTY_COMMAND)
    if any(b < 0x20 or b == 0x7F for b in line):
        raise error.error(error.BAD_CHARACTER)
    verb_bytes, _, rest = line.partition(b" ")
    if (
        not verb_bytes
        or len(verb_bytes) > MAX_VERB
        or verb_bytes[0] not in _VERB_START
        or not all(b in _VERB_REST for b in verb_bytes)
    ):
        raise error.error(error.BAD_VERB)
    verb = verb_bytes.decode("ascii").upper()
    arg = _decode_argument(verb, rest.strip(b" "), smtputf8)

    if verb in _HELLO:
        _check_hello(verb, arg)
    elif verb == "MAIL" or verb == "RCPT":
        return _parse_mail_rcpt(verb, arg, smtputf8)
    elif verb in _NO_ARGUMENT:
        if arg:
            raise error.error(error.usage(verb))
    elif verb == "VRFY" or verb == "EXPN":
        if not arg:
            raise error.error(error.usage(verb))
    elif verb == "AUTH":
        words = [w for w in arg.split(" ") if w]
        if len(words) > 2:
            raise error.error(error.AUTH_TOO_MANY)
        if not 1 <= len(words) <= 2 or not 1 <= len(words[0]) <= 20:
            raise error.error(error.usage(verb))
        if not all(c in _MECH_CHARS for c in words[0]):
            raise error.error(error.usage(verb))
    elif verb == "BDAT":
        return _parse_bdat(arg)
    return Command(verb, arg)


def _decode_argument(verb: str, raw: bytes, smtputf8: bool) -> str:
    if raw.isascii():
        return raw.decode("ascii")
    if verb == "MAIL" or verb == "RCPT":
        if not smtputf8:
            raise error.error(error.NEED_UTF8)
    elif not (smtputf8 and (verb == "VRFY" or verb == "EXPN")):
        raise error.error(error.EIGHT_BIT)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error.error(error.BAD_UTF8) from None


def _check_hello(verb: str, arg: str) -> None:
    if not arg or " " in arg:
        raise error.error(error.usage(verb))
    if arg.startswith("["):
        if not is_address_literal(arg):
            raise error.error(error.BAD_DOMAIN)
    elif domain_problem(arg, allow_underscore=True) is not None:
        raise error.error(error.BAD_DOMAIN)


def _parse_mail_rcpt(verb: str, arg: str, smtputf8: bool) -> Command:
    prefix = "FROM:" if verb == "MAIL" else "TO:"
    if arg[: len(prefix)].upper() != prefix:
        raise error.error(error.usage(verb))
    rest = arg[len(prefix) :].lstrip(" ")
    if not rest:
        raise error.error(error.usage(verb))
    path_text, params_text = _split_path(verb, rest)
    params = parse_params(params_text, smtputf8=smtputf8)
    if verb == "MAIL":
        # RFC 6531 §3.4: the SMTPUTF8 parameter on this very line permits a UTF-8 path.
        utf8_path = smtputf8 and "SMTPUTF8" in params
        path = parse_path_as(path_text, utf8_path, error.SENDER_PREFIX)
    else:
        # Whether this transaction declared SMTPUTF8 is the protocol's to check.
        path = parse_path_as(path_text, smtputf8, error.RECIPIENT_PREFIX)
        if path.is_null:
            code, enhanced, text = error.RECIPIENT_PREFIX
            raise error.error((code, enhanced, text + ": null path not allowed"))
    return Command(verb, arg, path, params)


def _split_path(verb: str, rest: str) -> tuple[str, str]:
    """Split ``<path> params`` at the '>' that closes the path (quotes can hide a '>')."""
    if not rest.startswith("<"):
        path, _, params = rest.partition(" ")
        return path, params
    in_quote = False
    i = 1
    while i < len(rest):
        c = rest[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == ">":
            params = rest[i + 1 :]
            if params and params[0] != " ":
                raise error.error(error.usage(verb))
            return rest[: i + 1], params
        i += 1
    return rest, ""


def _parse_bdat(arg: str) -> Command:
    words = [w for w in arg.split(" ") if w]
    if not 1 <= len(words) <= 2:
        raise error.error(error.usage("BDAT"))
    size = words[0]
    if not 1 <= len(size) <= MAX_BDAT_DIGITS or not all("0" <= c <= "9" for c in size):
        raise error.error(error.usage("BDAT"))
    chunk_size = int(size)
    if chunk_size > _U64_MAX:
        raise error.error(error.usage("BDAT"))
    last = len(words) == 2
    if last and words[1].upper() != "LAST":
        raise error.error(error.usage("BDAT"))
    return Command("BDAT", arg, chunk_size=chunk_size, last=last)
