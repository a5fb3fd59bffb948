"""The wire form of a message body: line ends normalized to CRLF, dots doubled."""

from __future__ import annotations

import re

from ferrosmtp._pure.error import require_bytes

_LINE_END = re.compile(rb"\r\n|\r|\n")


class DotStuffer:
    """Streaming encoder for a message body (RFC 5321 §4.5.2).

    Bare CR and bare LF become CRLF, a final CRLF is ensured, and with ``dots=True`` (the
    DATA form) lines starting with ``.`` get a second one and ``.\\r\\n`` ends the output.
    ``dots=False`` gives the BDAT form: only the line ends are normalized.
    """

    def __init__(self, *, dots: bool = True) -> None:
        self._dots = dots
        self._pending_cr = False  # a CR ended the last chunk; the next byte decides
        self._at_line_start = True
        self._empty = True
        self._finished = False

    def feed(self, data: bytes) -> bytes:
        """Encode the next piece of the body; the bytes to send (a CR that ends ``data``
        is held until the next byte shows whether it starts a CRLF)."""
        data = require_bytes(data, "data")
        if self._finished:
            raise RuntimeError("DotStuffer.feed() after finish()")
        if not data:
            return b""
        if self._pending_cr:
            data = b"\r" + data
            self._pending_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._pending_cr = True
            if not data:
                return b""
        out = _LINE_END.sub(b"\r\n", data)
        if self._dots:
            out = out.replace(b"\n.", b"\n..")
            if self._at_line_start and out.startswith(b"."):
                out = b"." + out
        self._at_line_start = out.endswith(b"\n")
        self._empty = False
        return out

    def finish(self) -> bytes:
        """End the body: the last bytes to send (a final CRLF if needed, and ``.\\r\\n``
        with ``dots=True``). Nothing may be fed after it."""
        if self._finished:
            raise RuntimeError("DotStuffer.finish() called twice")
        self._finished = True
        out = b""
        if self._pending_cr:
            out = b"\r\n"
        elif not self._empty and not self._at_line_start:
            out = b"\r\n"
        if self._dots:
            out += b".\r\n"
        return out


def dot_stuff(body: bytes, *, dots: bool = True) -> bytes:
    """The DATA wire form of ``body``, ending with ``.\\r\\n``; with ``dots=False`` the
    BDAT form (line ends normalized, a final CRLF ensured), whose length is the message
    size RFC 1870 asks for. One call, as ``DotStuffer`` fed the whole body and finished."""
    stuffer = DotStuffer(dots=dots)
    return stuffer.feed(require_bytes(body, "body")) + stuffer.finish()
