"""Every reply the codec itself decides, in one table (mirrored by ``src/error.rs``; an
entry is a ``Canned`` there and here).

Each entry is ``(code, enhanced, text)``. The texts are part of the contract between the
two backends: differential tests compare them byte for byte.
"""

from __future__ import annotations

from ferrosmtp._errors import CodecError

Canned = tuple[int, str, str]

# Command framing and tokenizing.
EMPTY_COMMAND: Canned = (500, "5.5.2", "Syntax error: empty command")
BAD_CHARACTER: Canned = (500, "5.5.2", "Syntax error: invalid character in command")
BAD_VERB: Canned = (500, "5.5.2", "Syntax error: command unrecognized")
EIGHT_BIT: Canned = (500, "5.5.2", "Syntax error: 8-bit characters not allowed")
BAD_UTF8: Canned = (501, "5.5.2", "Syntax error: invalid UTF-8")
LINE_TOO_LONG: Canned = (500, "5.5.2", "Line too long")
# AUTH with more than a mechanism and an initial response: the usage, and why (aiosmtpd
# answers it differently from a missing mechanism).
AUTH_TOO_MANY: Canned = (
    501,
    "5.5.4",
    "Syntax: AUTH mechanism [initial-response] (too many arguments)",
)
AUTH_LINE_TOO_LONG: Canned = (500, "5.5.6", "Authentication exchange line is too long")
NEED_UTF8: Canned = (553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
BAD_PARAMS: Canned = (501, "5.5.4", "Syntax error in parameters")
DUPLICATE_PARAM: Canned = (501, "5.5.4", "Syntax error: duplicate parameter")
BAD_XTEXT: Canned = (501, "5.5.4", "Syntax error: invalid xtext")
BAD_DOMAIN: Canned = (501, "5.5.2", "Syntax error: invalid domain name")

# BDAT without a readable size cannot be skipped: the connection must close (RFC 3030,
# Postfix `bdat_cmd`).
BDAT_SYNTAX: Canned = (521, "5.5.4", "Syntax: BDAT count [LAST]")
BUFFER_FULL: Canned = (554, "5.5.0", "Too much pipelined input")

# End of DATA (or of a BDAT chunk).
MESSAGE_TOO_BIG: Canned = (552, "5.3.4", "Message size exceeds fixed maximum message size")
BARE_LF: Canned = (550, "5.5.2", "Error: bare <LF> received")
BARE_CR: Canned = (550, "5.5.2", "Error: bare <CR> received")
TEXT_LINE_TOO_LONG: Canned = (500, "5.5.2", "Line too long (see RFC 5321 4.5.3.1.6)")

# Path errors: the prefix depends on where the path was found, the reason on what is wrong.
SENDER_PREFIX: Canned = (501, "5.1.7", "Bad sender address syntax")
RECIPIENT_PREFIX: Canned = (501, "5.1.3", "Bad recipient address syntax")
ADDRESS_PREFIX: Canned = (501, "5.1.3", "Bad address syntax")


def usage(verb: str) -> Canned:
    """The 501 reply for a command whose arguments do not match its syntax."""
    return (501, "5.5.4", "Syntax: " + USAGE[verb])


USAGE = {
    "HELO": "HELO hostname",
    "EHLO": "EHLO hostname",
    "LHLO": "LHLO hostname",
    "MAIL": "MAIL FROM:<address> [parameters]",
    "RCPT": "RCPT TO:<address> [parameters]",
    "DATA": "DATA",
    "RSET": "RSET",
    "QUIT": "QUIT",
    "STARTTLS": "STARTTLS",
    "VRFY": "VRFY address",
    "EXPN": "EXPN mailing-list",
    "AUTH": "AUTH mechanism [initial-response]",
    "BDAT": "BDAT count [LAST]",
}


def error(reply: Canned) -> CodecError:
    return CodecError(*reply)


def require_utf8(text: str) -> None:
    """Refuse strings that cannot be UTF-8 encoded (lone surrogates), as the Rust core must."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise error(BAD_UTF8) from None


def require_bytes(data: object, name: str) -> bytes:
    """bytes, bytearray or memoryview (copied), as the Rust core's ``Cow<[u8]>`` arguments
    take; anything else is a TypeError, as there."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"argument '{name}': expected a bytes-like object, not {type(data).__name__}")
