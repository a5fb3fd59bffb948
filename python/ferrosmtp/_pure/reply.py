"""Server replies: reading them (client side), formatting them (server side), and the
capabilities of an EHLO reply."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ferrosmtp._errors import ReplyError
from ferrosmtp._pure import error

MAX_REPLY_LINE = 512  # octets including CRLF that format_reply writes (RFC 5321 §4.5.3.1.5)
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)", re.ASCII)
_ENHANCED_EXACT = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})", re.ASCII)
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*", re.ASCII)


@dataclass(frozen=True)
class Reply:
    """One complete (possibly multi-line) reply.

    ``lines`` hold the text after ``NNN-`` / ``NNN `` exactly as sent (an enhanced code
    included); ``enhanced`` is the RFC 3463 code of the first line when it has one whose
    class matches the reply code.
    """

    code: int
    enhanced: str | None
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The lines joined with newlines."""
        return "\n".join(self.lines)


def _reply_code(line: bytes) -> int | None:
    if len(line) < 3:
        return None
    a, b, c = line[0], line[1], line[2]
    if not (0x32 <= a <= 0x35 and 0x30 <= b <= 0x35 and 0x30 <= c <= 0x39):
        return None
    return (a - 0x30) * 100 + (b - 0x30) * 10 + (c - 0x30)


class ReplyReader:
    """Assembles replies from the bytes a server sends (RFC 5321 §4.2).

    Strict: CRLF line ends only, three-digit codes with the same code on every line of a
    reply, no NUL or bare CR/LF. Bounded: a line over ``max_line`` octets, a reply of more
    than ``max_lines`` lines or ``max_reply`` octets raises ReplyError. After an error the
    reader must be discarded.
    """

    def __init__(
        self, *, max_line: int = 2048, max_lines: int = 256, max_reply: int = 65536
    ) -> None:
        self.max_line = max_line
        self.max_lines = max_lines
        self.max_reply = max_reply
        self._buf = b""
        self._code: int | None = None
        self._lines: list[str] = []
        self._size = 0

    @property
    def buffered(self) -> int:
        """Bytes held but not yet turned into replies."""
        return len(self._buf)

    @property
    def in_reply(self) -> bool:
        """True while a multi-line reply has started but not ended."""
        return self._code is not None

    def feed(self, data: bytes) -> list[Reply]:
        """Read ``data``; the replies it completes. Raises ReplyError for a reply that
        breaks the grammar or the bounds."""
        data = error.require_bytes(data, "data")
        buf = self._buf + data if self._buf else data
        out: list[Reply] = []
        pos = 0
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            if end + 2 - pos > self.max_line:
                raise ReplyError("reply line too long")
            reply = self._line(buf[pos:end])
            pos = end + 2
            if reply is not None:
                out.append(reply)
        rest = buf[pos:]
        if len(rest) > self.max_line:
            raise ReplyError("reply line too long")
        if b"\n" in rest:  # a bare LF can never become part of a CRLF line end
            raise ReplyError("bare CR, LF or NUL in reply")
        self._buf = rest
        return out

    def _line(self, line: bytes) -> Reply | None:
        code = _reply_code(line)
        if code is None or (len(line) > 3 and line[3] not in b" -"):
            raise ReplyError("malformed reply line")
        if b"\r" in line or b"\n" in line or b"\x00" in line:
            raise ReplyError("bare CR, LF or NUL in reply")
        if self._code is not None and code != self._code:
            raise ReplyError("inconsistent reply codes")
        self._size += len(line) + 2
        if len(self._lines) + 1 > self.max_lines:
            raise ReplyError("too many reply lines")
        if self._size > self.max_reply:
            raise ReplyError("reply too long")
        self._lines.append(line[4:].decode("utf-8", "replace"))
        if len(line) > 3 and line[3] == 0x2D:  # '-': more lines follow
            self._code = code
            return None
        lines = tuple(self._lines)
        self._code = None
        self._lines = []
        self._size = 0
        m = _ENHANCED.match(lines[0])
        enhanced = m.group(0).rstrip(" ") if m and int(m.group(1)) == code // 100 else None
        return Reply(code, enhanced, lines)


def format_reply(
    code: int, text: str | Sequence[str], enhanced: str | None = None, *, any_code: bool = False
) -> bytes:
    """Format a reply for the wire.

    ``text`` is one line, or a sequence of lines for a multi-line reply. CR, LF and other
    control characters (except tab) are refused with ValueError, as are codes outside
    200-559 and an enhanced code whose class differs from the reply's. Lines longer than
    512 octets are wrapped onto continuation lines. ``any_code`` also takes a second digit
    of 6 to 9 (2x6 to 5x9), outside RFC 5321's grammar, with the same checks otherwise.
    """
    if not isinstance(code, int) or isinstance(code, bool) or not _valid_code(code, any_code):
        raise ValueError("reply code must be three digits, 2xx to 5xx, second digit 0-5")
    if enhanced is not None:
        if not isinstance(enhanced, str):
            raise ValueError("enhanced status code must be a string")
        m = _ENHANCED_EXACT.fullmatch(enhanced)
        if m is None or int(m.group(1)) != code // 100:
            raise ValueError(
                "enhanced status code must be class.subject.detail matching the reply code"
            )
    lines = [text] if isinstance(text, str) else list(text)
    if not lines:
        lines = [""]
    prefix = f"{enhanced} " if enhanced is not None else ""
    budget = MAX_REPLY_LINE - 6 - len(prefix)  # "NNN-" + text + CRLF
    pieces: list[str] = []
    for line in lines:
        if not isinstance(line, str):
            raise ValueError("reply text must be str")
        error.require_utf8(line)
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in line):
            raise ValueError("reply text must not contain CR, LF or control characters")
        pieces.extend(_wrap(line, budget))
    out = []
    for i, piece in enumerate(pieces):
        sep = "-" if i < len(pieces) - 1 else " "
        body = prefix + piece
        out.append(f"{code}{sep}{body}\r\n" if body else f"{code}{sep if sep == '-' else ''}\r\n")
    return "".join(out).encode("utf-8")


def _valid_code(code: int, any_second_digit: bool = False) -> bool:
    if any_second_digit:  # 2x6 to 5x9 too: outside RFC 5321's grammar (aiosmtpd passes them)
        return 200 <= code <= 599
    return 200 <= code <= 559 and (code // 10) % 10 <= 5


def _wrap(line: str, budget: int) -> list[str]:
    """Split ``line`` into pieces of at most ``budget`` UTF-8 octets, on character bounds."""
    if len(line.encode()) <= budget:
        return [line]
    pieces = []
    current: list[str] = []
    size = 0
    for c in line:
        n = len(c.encode())
        if size + n > budget:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(c)
        size += n
    pieces.append("".join(current))
    return pieces


@dataclass(frozen=True)
class EhloReply:
    """The parts of an EHLO reply: the server's name, its greeting text, and the
    extensions it offers (keyword upper-cased -> parameter text, ``""`` if none)."""

    domain: str
    greeting: str
    extensions: dict[str, str] = field(default_factory=dict)

    def has(self, keyword: str) -> bool:
        """Whether the server offers the extension ``keyword`` (in any case)."""
        return keyword.upper() in self.extensions

    def param(self, keyword: str) -> str | None:
        """The parameter text of ``keyword`` (``""`` without one), or None if not offered."""
        return self.extensions.get(keyword.upper())


def parse_ehlo(lines: Sequence[str]) -> EhloReply:
    """Read the capabilities from the lines of a 250 EHLO reply.

    The first line is ``domain [greeting]``; each other line is ``KEYWORD [params]``.
    Lines that are not a valid keyword are skipped; the first of duplicates wins.
    """
    if not lines:
        return EhloReply("", "", {})
    first = lines[0]
    error.require_utf8(first)
    domain, _, greeting = first.partition(" ")
    extensions: dict[str, str] = {}
    for line in lines[1:]:
        error.require_utf8(line)
        keyword, _, params = line.partition(" ")
        if _KEYWORD.fullmatch(keyword) is None:
            continue
        extensions.setdefault(keyword.upper(), params.strip(" "))
    return EhloReply(domain, greeting, extensions)
