"""A hook's reply string (``"250 OK"``, ``"550 5.1.1 No"``) as a Response."""

from __future__ import annotations

import re

from ferrosmtp.protocol.events import Response
from ferrosmtp.protocol.replies import Replies

__all__ = ["INTERNAL_ERROR", "parse_status", "status_lines"]

INTERNAL_ERROR = Replies().hook_error


_STATUS_CODE = re.compile(r"[2-5][0-5][0-9]\Z", re.ASCII)  # RFC 5321 §4.2's Reply-code
_ANY_CODE = re.compile(r"[2-5][0-9][0-9]\Z", re.ASCII)  # ServerConfig.any_reply_code
_ENHANCED_CODE = re.compile(r"([245])\.[0-9]{1,3}\.[0-9]{1,3}\Z", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# Hooks give the same few replies again and again ("250 OK"): each is parsed once, and
# the same (immutable) Response returned, whose bytes the connection then formats once
# too (its wire cache is keyed by identity). Bounded: cleared when full, as the wire cache.
_parsed: dict[tuple[str | bytes, bool, bool], Response] = {}
_PARSED_SIZE = 512


def parse_status(
    status: str | bytes, split_enhanced: bool = True, *, any_code: bool = False
) -> Response:
    """A hook's reply string as a Response (``_parse``), parsed once per string."""
    key = (status, split_enhanced, any_code)
    try:
        return _parsed[key]
    except (KeyError, TypeError):  # TypeError: not a string at all, which _parse refuses
        pass
    response = _parse(status, split_enhanced, any_code)
    if len(_parsed) >= _PARSED_SIZE:
        _parsed.clear()
    _parsed[key] = response
    return response


def _parse(status: str | bytes, split_enhanced: bool, any_code: bool) -> Response:
    """Turn a hook's reply string (``"250 OK"``, ``"550 5.1.1 No"``, multi-line with CRLF)
    into a Response. Raises ValueError for anything that is not a reply.

    ``split_enhanced=False`` (a server without enhanced status codes) leaves a leading
    enhanced code in the text, so the hook's words go out as it wrote them.
    ``any_code`` (``ServerConfig.any_reply_code``) also takes a second digit of 6 to 9
    (aiosmtpd passes a hook's 499 or 599 on); the text is checked the same either way.

    Checklist B15: a CRLF inside makes a multi-line reply (all lines must carry the same
    code), never a second reply; other control characters are replaced by "?".
    """
    if isinstance(status, bytes):
        status = status.decode("utf-8", "replace")
    if not isinstance(status, str):
        raise ValueError(f"a hook returned {type(status).__name__}, not a reply string")
    status = status.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    raw = status.replace("\r\n", "\n").rstrip("\n").split("\n")
    code_text = raw[0][:3]
    if (_ANY_CODE if any_code else _STATUS_CODE).match(code_text) is None:
        raise ValueError(f"not an SMTP reply: {status!r}")
    lines = []
    for line in raw:
        if line[:3] != code_text or (len(line) > 3 and line[3] not in " -"):
            raise ValueError(f"not an SMTP reply: {status!r}")
        lines.append(_CONTROL.sub("?", line[4:]))
    enhanced = None
    first = lines[0].split(" ", 1)[0]
    m = _ENHANCED_CODE.match(first) if split_enhanced else None
    if m is not None and m.group(1) == code_text[0]:
        enhanced = first
        lines = [
            (line[len(first) :].lstrip(" ") if line.startswith(first) else line) for line in lines
        ]
    return Response(int(code_text), tuple(lines), enhanced)


def status_lines(response: Response) -> list[str]:
    """A Response as the reply strings aiosmtpd hands its hooks (``["250-mx.example",
    "250 HELP"]``: the EHLO hook's ``responses``)."""
    prefix = f"{response.enhanced} " if response.enhanced else ""
    last = len(response.lines) - 1
    return [
        f"{response.code}{'-' if i < last else ' '}{prefix}{line}"
        for i, line in enumerate(response.lines)
    ]
