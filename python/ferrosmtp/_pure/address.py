"""RFC 5321 §4.1.2 paths, domains and address literals (RFC 6531 under SMTPUTF8)."""

from __future__ import annotations

from dataclasses import dataclass

from ferrosmtp._errors import CodecError
from ferrosmtp._pure import error
from ferrosmtp._pure.error import Canned

MAX_LOCAL_PART = 64  # octets, RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255  # octets, §4.5.3.1.2
MAX_LABEL = 63  # octets, RFC 1035 §2.3.4
MAX_PATH = 256  # octets including the angle brackets, §4.5.3.1.3

_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_LET_DIG = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")

# Non-ASCII code points refused even under SMTPUTF8: C1 controls, zero-width and bidi
# formatting characters, line/paragraph separators, surrogates, BOM and noncharacters.
# They let two addresses look alike or reorder text in logs (an opinion, see B16).
_FORBIDDEN_NON_ASCII = (
    (0x80, 0x9F),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x206F),
    (0xD800, 0xDFFF),
    (0xFEFF, 0xFEFF),
    (0xFFFE, 0xFFFF),
)


def _allowed_non_ascii(c: str) -> bool:
    o = ord(c)
    return o >= 0x80 and not any(lo <= o <= hi for lo, hi in _FORBIDDEN_NON_ASCII)


def _is_atext(c: str) -> bool:
    return c in _ATEXT or _allowed_non_ascii(c)


def _is_qtext(c: str) -> bool:
    # qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF8-non-ascii (RFC 6531)
    o = ord(c)
    return (32 <= o <= 126 and c != '"' and c != "\\") or _allowed_non_ascii(c)


def is_dot_string(s: str) -> bool:
    """Dot-string = Atom *("." Atom); non-ASCII atext counts (callers gate SMTPUTF8)."""
    if not s:
        return False
    for atom in s.split("."):
        if not atom or not all(_is_atext(c) for c in atom):
            return False
    return True


def _is_label(label: str, allow_underscore: bool) -> bool:
    def let_dig(c: str) -> bool:
        return c in _LET_DIG or _allowed_non_ascii(c) or (allow_underscore and c == "_")

    if not let_dig(label[0]) or not let_dig(label[-1]):
        return False
    return all(let_dig(c) or c == "-" for c in label[1:-1])


def domain_problem(domain: str, *, allow_underscore: bool = False) -> str | None:
    """Why ``domain`` is not an RFC 5321 Domain, or None if it is one.

    ``allow_underscore`` is the lenient form used for HELO/EHLO names, where hosts with
    ``_`` in their names are common in practice.
    """
    if not domain:
        return "invalid domain"
    for label in domain.split("."):
        if not label:
            return "invalid domain"
        if len(label.encode()) > MAX_LABEL:
            return "domain label too long"
        if not _is_label(label, allow_underscore):
            return "invalid domain"
    if len(domain.encode()) > MAX_DOMAIN:
        return "domain too long"
    return None


def is_ipv4_literal(s: str) -> bool:
    """IPv4-address-literal = Snum 3("." Snum), without leading zeros."""
    parts = s.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not 1 <= len(p) <= 3 or not all(c in _DIGITS for c in p):
            return False
        if len(p) > 1 and p[0] == "0":
            return False
        if int(p) > 255:
            return False
    return True


def _hex_groups(s: str) -> list[str] | None:
    """Split colon-separated 1-4 digit hex groups; None if any group is malformed."""
    if not s:
        return []
    groups = s.split(":")
    for g in groups:
        if not 1 <= len(g) <= 4 or not all(c in _HEX for c in g):
            return None
    return groups


def is_ipv6_literal(s: str) -> bool:
    """IPv6-addr of RFC 5321 §4.1.3 (full, compressed and IPv4-embedded forms; no zones)."""
    head = s
    has_v4 = "." in s
    if has_v4:
        colon = s.rfind(":")
        if colon < 0 or not is_ipv4_literal(s[colon + 1 :]):
            return False
        head = s[: colon + 1]
        # keep a "::" that directly precedes the IPv4 part, drop a single separator colon
        if not head.endswith("::"):
            head = head[:-1]
    if "::" in head:
        left, right = head.split("::", 1)
        lg, rg = _hex_groups(left), _hex_groups(right)
        if lg is None or rg is None:
            return False
        return len(lg) + len(rg) <= (4 if has_v4 else 6)
    groups = _hex_groups(head)
    if groups is None:
        return False
    return len(groups) == (6 if has_v4 else 8)


def is_address_literal(s: str) -> bool:
    """``[IPv4]`` or ``[IPv6:...]``; General-address-literals have no registered tag."""
    if len(s) < 2 or s[0] != "[" or s[-1] != "]":
        return False
    content = s[1:-1]
    if is_ipv4_literal(content):
        return True
    tag = content[:5]
    if tag.isascii() and tag.lower() == "ipv6:":
        return is_ipv6_literal(content[5:])
    return False


@dataclass(frozen=True)
class Path:
    """A parsed reverse- or forward-path.

    ``local_part`` is the semantic local part (quotes and escapes removed); ``domain`` is
    the domain or address literal as sent; ``source_route`` holds the domains of a
    deprecated source route, which RFC 5321 says to accept and ignore. The null path
    ``<>`` has an empty local part and domain; ``<Postmaster>`` has an empty domain.
    """

    local_part: str
    domain: str
    source_route: tuple[str, ...] = ()

    @property
    def is_null(self) -> bool:
        """True for the null path ``<>``."""
        return not self.local_part and not self.domain

    @property
    def is_postmaster(self) -> bool:
        """True for ``<Postmaster>`` (in any case, without a domain)."""
        return (
            not self.domain
            and self.local_part.isascii()
            and self.local_part.lower() == "postmaster"
        )

    @property
    def address(self) -> str:
        """The mailbox as ``local@domain``, quoting the local part only where needed."""
        if not self.domain:
            return self.local_part
        if is_dot_string(self.local_part):
            local = self.local_part
        else:
            local = '"' + self.local_part.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return local + "@" + self.domain

    def __str__(self) -> str:
        route = ",".join("@" + d for d in self.source_route)
        return "<" + (route + ":" if route else "") + self.address + ">"


class _Reason(Exception):
    pass


def parse_path(text: str, *, smtputf8: bool = False) -> Path:
    """Parse an RFC 5321 path: ``<local@domain>``, ``<>``, ``<Postmaster>``, a source-routed
    ``<@a,@b:local@domain>``, or a bare ``local@domain``. Raises CodecError."""
    return parse_path_as(text, smtputf8, error.ADDRESS_PREFIX)


def parse_path_as(text: str, smtputf8: bool, prefix: Canned) -> Path:
    """parse_path, with errors worded for a sender, a recipient or a bare address."""
    try:
        wire = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise error.error(error.BAD_UTF8) from None
    try:
        return _parse(text, wire, smtputf8)
    except _Reason as reason:
        code, enhanced, prefix_text = prefix
        raise CodecError(code, enhanced, f"{prefix_text}: {reason}") from None


def _parse(text: str, wire: int, smtputf8: bool) -> Path:
    if not text:
        raise _Reason("empty address")
    bracketed = text[0] == "<"
    if bracketed:
        if len(text) < 2 or text[-1] != ">":
            raise _Reason("unbalanced angle brackets")
        inner = text[1:-1]
    else:
        inner = text
        wire += 2
    if wire > MAX_PATH:
        raise _Reason("path too long")
    if not smtputf8 and not text.isascii():
        raise error.error(error.NEED_UTF8)
    if not inner:
        return Path("", "")

    mailbox = inner
    route: tuple[str, ...] = ()
    if inner[0] == "@":
        colon = inner.find(":")
        if not bracketed or colon < 0:
            raise _Reason("invalid source route")
        hops = inner[:colon].split(",")
        for hop in hops:
            if not hop.startswith("@") or domain_problem(hop[1:]) is not None:
                raise _Reason("invalid source route")
        route = tuple(hop[1:] for hop in hops)
        mailbox = inner[colon + 1 :]
    elif mailbox.isascii() and mailbox.lower() == "postmaster":
        return Path(mailbox, "")

    if mailbox.startswith('"'):
        local, end = _quoted_local_part(mailbox)
    else:
        end = mailbox.find("@")
        if end < 0:
            raise _Reason("missing domain")
        local = mailbox[:end]
        if not is_dot_string(local):
            raise _Reason("invalid local part")
    if len(mailbox[:end].encode()) > MAX_LOCAL_PART:
        raise _Reason("local part too long")

    domain = mailbox[end + 1 :]
    if domain.startswith("["):
        if not is_address_literal(domain):
            raise _Reason("invalid address literal")
    else:
        problem = domain_problem(domain)
        if problem is not None:
            raise _Reason(problem)
    return Path(local, domain, route)


def _quoted_local_part(mailbox: str) -> tuple[str, int]:
    """Unquote ``"..."`` at the start of mailbox; return it and the index of the '@'."""
    chars = []
    i = 1
    while True:
        if i >= len(mailbox):
            raise _Reason("unterminated quoted string")
        c = mailbox[i]
        if c == "\\":
            if i + 1 >= len(mailbox):
                raise _Reason("unterminated quoted string")
            n = mailbox[i + 1]
            if not 32 <= ord(n) <= 126:
                raise _Reason("invalid character in quoted string")
            chars.append(n)
            i += 2
        elif c == '"':
            i += 1
            break
        elif _is_qtext(c):
            chars.append(c)
            i += 1
        else:
            raise _Reason("invalid character in quoted string")
    if i >= len(mailbox):
        raise _Reason("missing domain")
    if mailbox[i] != "@":
        raise _Reason("invalid local part")
    return "".join(chars), i
