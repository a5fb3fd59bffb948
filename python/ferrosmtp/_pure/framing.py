"""ServerReader: the server side of the wire, fed whole socket chunks.

Modes (``ServerReader.mode``):

- ``command``: complete lines become Command items, or Violation items for lines the
  codec refuses. After DATA, STARTTLS, AUTH and QUIT the reader pauses, because the
  reply to them decides how the following bytes are read.
- ``paused``: input is only buffered, until the protocol calls ``expect_command()``,
  ``expect_data()`` or ``expect_line()``; each returns the items the buffered input
  yields in the new mode.
- ``data``: the body after a 354, unstuffed, as Data items, then DataEnd at CRLF.CRLF and
  only there (RFC 5321 §4.1.1.4; checklist B1).
- ``bdat``: a BDAT chunk. A syntactically valid ``BDAT n`` is always followed by exactly
  n octets of content, whatever the protocol replies, so chunk bytes can never be read
  as commands (checklist B4).
- ``line``: one line of an AUTH exchange, as a Line item; then paused again.
- ``closed``: after a fatal violation everything is discarded.

Line ends: under the ``reject`` policy only CRLF ends a command line or a DATA line; a
bare CR or LF in a message is remembered, the message is read to its real end and then
refused. Under ``normalize`` (Postfix's ``smtpd_forbid_bare_newline = normalize``) a
bare LF ends a line as if it were CRLF, a bare CR stays as data, and a ``.`` line next to
a bare LF is dropped rather than taken as the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ferrosmtp._errors import CodecError
from ferrosmtp._pure import error
from ferrosmtp._pure.command import Command, parse_command


@dataclass(frozen=True)
class Violation:
    """Input the reader refused, with the reply to send.

    ``fatal`` means the reader has stopped reading: the connection must be closed after
    the reply is sent.
    """

    kind: str
    code: int
    enhanced: str
    text: str
    fatal: bool = False


@dataclass(frozen=True)
class Data:
    """A piece of message content: DATA already unstuffed, or BDAT chunk bytes."""

    data: bytes


@dataclass(frozen=True)
class DataEnd:
    """The end of a DATA body (at CRLF.CRLF) or of a BDAT chunk.

    ``last`` is False only for a BDAT chunk without LAST. ``size`` counts the content
    bytes produced for this body or chunk. ``bare_lf`` / ``bare_cr`` report bare line
    ends seen under either policy. ``violation`` is the reply to send instead of
    accepting the content (bare line ends under ``reject``, size or line limits).
    """

    last: bool
    size: int
    bare_lf: bool = False
    bare_cr: bool = False
    violation: Violation | None = None


@dataclass(frozen=True)
class Line:
    """One line read in line mode (an AUTH exchange), without its line end."""

    data: bytes


Item = Command | Violation | Data | DataEnd | Line

COMMAND, PAUSED, DATA, BDAT, LINE, CLOSED = "command", "paused", "data", "bdat", "line", "closed"

# MAIL and RCPT lines may exceed the command limit by this much: the parameters that
# RFC 1870 (SIZE), 3461 (DSN), 4954 (AUTH=), 6152 and 6531 define each extend the line.
EXTENDED_LINE_ALLOWANCE = 1024
_PAUSE_VERBS = frozenset({"DATA", "STARTTLS", "AUTH", "QUIT"})

CR, LF, DOT = 0x0D, 0x0A, 0x2E
# DATA states: where in a line the next byte falls.
_LINE_START, _DOT, _DOT_CR, _MID, _CR = range(5)
_CR_OR_LF = re.compile(rb"[\r\n]")
_BARE_CR = re.compile(rb"\r(?!\n)")
_BARE_LF = re.compile(rb"(?<!\r)\n")


def _violation(kind: str, reply: error.Canned, fatal: bool = False) -> Violation:
    return Violation(kind, reply[0], reply[1], reply[2], fatal)


class ServerReader:
    """Streaming reader of what an SMTP client sends, fed whole socket reads.

    ``feed(data)`` returns the items the bytes complete: ``Command`` (several for
    pipelined input) and ``Violation`` (input refused, with the reply to send); message
    content as ``Data`` and ``DataEnd``; in line mode a ``Line``. After a command whose
    reply decides how the next bytes are read (DATA, STARTTLS, AUTH) the reader pauses and
    keeps the rest buffered until ``expect_data()``, ``expect_line()`` or
    ``expect_command()``. DATA ends only at CRLF.CRLF; the chunk of a valid BDAT is read
    as content. Limits in octets: ``max_command_line``, ``max_auth_line``,
    ``max_text_line`` and ``max_message_size`` (None: unlimited), ``max_buffer`` (input
    held at most); ``bare_newline`` is ``"reject"`` or ``"normalize"``; ``smtputf8``
    says whether the server offers SMTPUTF8. A message over both DATA limits is refused
    for its size, or with ``first_limit_wins`` for the limit it crossed first.
    """

    def __init__(
        self,
        *,
        max_command_line: int = 512,
        max_auth_line: int = 12288,
        max_text_line: int | None = None,
        max_message_size: int | None = None,
        bare_newline: str = "reject",
        smtputf8: bool = False,
        max_buffer: int = 1 << 20,
        first_limit_wins: bool = False,
    ) -> None:
        if bare_newline not in ("reject", "normalize"):
            raise ValueError("bare_newline must be 'reject' or 'normalize'")
        if max_command_line < 16 or max_auth_line < 16 or max_buffer < 16:
            raise ValueError("line and buffer limits must be at least 16 octets")
        if max_text_line is not None and max_text_line < 3:
            raise ValueError("max_text_line must be at least 3 octets")
        if max_message_size is not None and max_message_size < 0:
            raise ValueError("max_message_size must not be negative")
        self.max_command_line = max_command_line
        self.max_auth_line = max_auth_line
        self.max_text_line = max_text_line
        self.max_message_size = max_message_size
        self.bare_newline = bare_newline
        self.smtputf8 = smtputf8
        self.max_buffer = max_buffer
        self.first_limit_wins = first_limit_wins
        self._normalize = bare_newline == "normalize"
        self._mode = COMMAND
        self._buf = b""
        self._discarding = False  # inside an overlong line: drop bytes up to its end
        # BDAT chunk state
        self._bdat_remaining = 0
        self._bdat_last = False
        self._bdat_cr = False  # the last chunk byte was CR (carries across chunks)
        self._reset_data()
        self._reset_chunk()

    # -- public API -------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``"command"``, ``"paused"`` (until an ``expect_*`` call), ``"data"``, ``"bdat"``,
        ``"line"`` or ``"closed"``."""
        return self._mode

    @property
    def buffered(self) -> int:
        """Bytes held but not yet turned into items."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Item]:
        """Read ``data`` (bytes, bytearray or memoryview); the items it completes."""
        data = error.require_bytes(data, "data")
        if self._mode == CLOSED:
            return []
        buf = self._buf + data if self._buf else data
        self._buf = b""
        return self._run(buf)

    def expect_command(self) -> list[Item]:
        """Resume reading commands after a pause; the items the buffered bytes complete."""
        return self._resume(COMMAND)

    def expect_data(self) -> list[Item]:
        """Resume after DATA's 354: read message content up to CRLF.CRLF; the items the
        buffered bytes complete."""
        return self._resume(DATA)

    def expect_line(self) -> list[Item]:
        """Resume after a 334 AUTH challenge: read one line; the items the buffered bytes
        complete."""
        return self._resume(LINE)

    def reset(self) -> None:
        """Forget all buffered input and state (after a TLS handshake) and read commands."""
        self._mode = COMMAND
        self._buf = b""
        self._discarding = False
        self._bdat_cr = False
        self._reset_data()

    # -- driving ------------------------------------------------------------------------

    def _resume(self, mode: str) -> list[Item]:
        if self._mode == CLOSED:
            return []
        if self._mode != PAUSED:
            raise RuntimeError(f"ServerReader is in {self._mode} mode, not paused")
        if mode == DATA:
            self._reset_data()
        self._mode = mode
        buf, self._buf = self._buf, b""
        return self._run(buf)

    def _run(self, buf: bytes) -> list[Item]:
        out: list[Item] = []
        pos = 0
        n = len(buf)
        while True:
            if self._discarding:
                pos = self._discard(buf, pos)
                if self._discarding:
                    break
            mode = self._mode
            if mode == COMMAND or mode == LINE:
                new = self._line_step(buf, pos, out)
            elif mode == DATA:
                new = self._data_step(buf, pos, out)
            elif mode == BDAT:
                new = self._bdat_step(buf, pos, out)
            else:
                break
            if new == pos and self._mode == mode:
                break
            pos = new
            if pos >= n and self._mode not in (BDAT,):
                break
        if self._mode == CLOSED:
            self._buf = b""
            return out
        self._buf = buf[pos:]
        if self._mode == PAUSED and len(self._buf) > self.max_buffer:
            self._close()
            out.append(_violation("buffer_full", error.BUFFER_FULL, fatal=True))
        return out

    def _close(self) -> None:
        self._mode = CLOSED
        self._buf = b""

    # -- command and line modes -----------------------------------------------------------

    def _find_line_end(self, buf: bytes, pos: int) -> tuple[int, int]:
        """(end of content, start of next line), or (-1, -1) if no line end yet."""
        if self._normalize:
            lf = buf.find(b"\n", pos)
            if lf < 0:
                return -1, -1
            return (lf - 1 if lf > pos and buf[lf - 1] == CR else lf), lf + 1
        crlf = buf.find(b"\r\n", pos)
        if crlf < 0:
            return -1, -1
        return crlf, crlf + 2

    def _line_limit(self, start: bytes) -> int:
        if self._mode == LINE:
            return self.max_auth_line
        verb = start[:5].upper()
        if verb == b"MAIL " or verb == b"RCPT ":
            return self.max_command_line + EXTENDED_LINE_ALLOWANCE
        if verb == b"AUTH ":
            return max(self.max_auth_line, self.max_command_line)
        return self.max_command_line

    def _too_long(self, start: bytes, out: list[Item]) -> None:
        """Refuse an overlong line. A BDAT line is not discarded like the others: its
        chunk size cannot be read, so the bytes after it would be chunk content read as
        commands; the reader stops instead, whatever the length (checklist B4, Postfix
        ``bdat_cmd``)."""
        verb = start[:5].upper()
        if self._mode == COMMAND and verb == b"BDAT ":
            out.append(_violation("syntax", error.BDAT_SYNTAX, fatal=True))
            self._close()
            return
        # RFC 4954 §4: an AUTH line, initial response included, that is too long is 5.5.6
        if self._mode == LINE or verb == b"AUTH ":
            out.append(_violation("line_too_long", error.AUTH_LINE_TOO_LONG))
        else:
            out.append(_violation("line_too_long", error.LINE_TOO_LONG))
        if self._mode == LINE:
            self._mode = PAUSED

    def _discard(self, buf: bytes, pos: int) -> int:
        """Drop the rest of an overlong line; keep a final CR that may start a CRLF."""
        end, nxt = self._find_line_end(buf, pos)
        if end >= 0:
            self._discarding = False
            return nxt
        if not self._normalize and buf.endswith(b"\r") and len(buf) > pos:
            return len(buf) - 1
        return len(buf)

    def _line_step(self, buf: bytes, pos: int, out: list[Item]) -> int:
        end, nxt = self._find_line_end(buf, pos)
        limit = self._line_limit(buf[pos : pos + 5])
        if end < 0:
            if len(buf) - pos > limit:
                self._too_long(buf[pos : pos + 5], out)
                if self._mode == CLOSED:
                    return len(buf)
                self._discarding = True
                return self._discard(buf, pos)
            return pos
        if nxt - pos > limit:
            self._too_long(buf[pos : pos + 5], out)
            return len(buf) if self._mode == CLOSED else nxt
        line = buf[pos:end]
        if self._mode == LINE:
            out.append(Line(line))
            self._mode = PAUSED
        else:
            self._command(line, out)
        return nxt

    def _command(self, line: bytes, out: list[Item]) -> None:
        is_bdat = line[:4].upper() == b"BDAT" and (len(line) == 4 or line[4] == 0x20)
        if not is_bdat:
            self._bdat_cr = False
        try:
            command = parse_command(line, smtputf8=self.smtputf8)
        except CodecError as e:
            if is_bdat:
                # Without a size the chunk cannot be skipped: stop reading (B4).
                out.append(_violation("syntax", error.BDAT_SYNTAX, fatal=True))
                self._close()
            else:
                out.append(Violation("syntax", e.code, e.enhanced, e.text, False))
            return
        out.append(command)
        if command.verb in _PAUSE_VERBS:
            self._mode = PAUSED
        elif command.verb == "BDAT":
            assert command.chunk_size is not None
            self._bdat_remaining = command.chunk_size
            self._bdat_last = command.last
            self._reset_chunk()
            self._mode = BDAT

    # -- BDAT ---------------------------------------------------------------------------

    def _reset_chunk(self) -> None:
        self._chunk_size = 0
        self._chunk_bare_lf = False
        self._chunk_bare_cr = False

    def _bdat_step(self, buf: bytes, pos: int, out: list[Item]) -> int:
        take = min(self._bdat_remaining, len(buf) - pos)
        if take:
            chunk = buf[pos : pos + take]
            data = self._bdat_content(chunk)
            self._chunk_size += len(data)
            out.append(Data(data))
            self._bdat_remaining -= take
            pos += take
        if self._bdat_remaining == 0:
            last = self._bdat_last
            if last and self._bdat_cr:
                self._chunk_bare_cr = True
            if last:
                self._bdat_cr = False
            violation = None
            if not self._normalize and self._chunk_bare_lf:
                violation = _violation("bare_newline", error.BARE_LF)
            elif not self._normalize and self._chunk_bare_cr:
                violation = _violation("bare_newline", error.BARE_CR)
            out.append(
                DataEnd(last, self._chunk_size, self._chunk_bare_lf, self._chunk_bare_cr, violation)
            )
            self._mode = COMMAND
        return pos

    def _bdat_content(self, chunk: bytes) -> bytes:
        """Check (and under normalize, repair) line ends; CR state spans chunk bounds."""
        first = chunk[0]
        if self._bdat_cr and first != LF:
            self._chunk_bare_cr = True
        elif not self._bdat_cr and first == LF:
            self._chunk_bare_lf = True
        m = _BARE_CR.search(chunk)
        if m is not None and m.start() != len(chunk) - 1:
            self._chunk_bare_cr = True
        if _BARE_LF.search(chunk, 1) is not None:
            self._chunk_bare_lf = True
        if self._normalize:
            data = _BARE_LF.sub(b"\r\n", chunk)
            if first == LF and self._bdat_cr:  # the CR ended the previous chunk
                data = data[1:]
        else:
            data = chunk
        self._bdat_cr = chunk[-1] == CR
        return data

    # -- DATA -----------------------------------------------------------------------------

    def _reset_data(self) -> None:
        self._state = _LINE_START
        self._after_bare_lf = False  # normalize: the previous line ended in a bare LF
        self._size = 0
        self._line_len = 0
        self._stopped = False  # a violation was seen: no more content is produced
        self._line_stopped = False  # what stopped it was the line limit, before the size
        self._too_big = False
        self._long_line = False
        self._bare_lf = False
        self._bare_cr = False

    def _emit(self, pieces: list[bytes], piece: bytes, content: bool) -> None:
        """Account for ``piece`` of the unstuffed body; output it unless past a limit.

        The cut falls on the exact byte where a limit is crossed, so the content produced
        does not depend on how the input was chunked.
        """
        n = len(piece)
        self._size += n
        line_cut = size_cut = n
        if content:
            self._line_len += n
            limit = self.max_text_line
            if limit is not None and self._line_len > limit - 2:
                self._long_line = True
                line_cut = max(0, n - (self._line_len - (limit - 2)))
        else:
            self._line_len = 0
        if self.max_message_size is not None and self._size > self.max_message_size:
            self._too_big = True
            size_cut = max(0, n - (self._size - self.max_message_size))
        cut = min(line_cut, size_cut)
        if not self._stopped:
            if cut > 0:
                pieces.append(piece if cut == n else piece[:cut])
            if cut < n:
                self._stopped = True
                self._line_stopped = line_cut < size_cut  # the same byte: the size's

    def _bare(self, lf: bool) -> None:
        if lf:
            self._bare_lf = True
        else:
            self._bare_cr = True
        if not self._normalize:
            self._stopped = True

    def _data_step(self, buf: bytes, pos: int, out: list[Item]) -> int:
        pieces: list[bytes] = []
        n = len(buf)
        normalize = self._normalize
        ended = False
        while pos < n:
            state = self._state
            if state == _LINE_START:
                if buf[pos] == DOT:
                    self._state = _DOT
                    pos += 1
                    continue
                clean_end = self._clean_lines(buf, pos, pieces)
                if clean_end != pos:
                    pos = clean_end
                    continue
                self._state = _MID
                continue
            c = buf[pos]
            if state == _DOT:
                if c == CR:
                    self._state = _DOT_CR
                    pos += 1
                elif c == LF:
                    pos += 1
                    self._bare(lf=True)
                    if normalize:  # a "." line ending in a bare LF is dropped
                        self._state = _LINE_START
                        self._after_bare_lf = True
                    else:
                        self._emit(pieces, b"\n", content=True)
                        self._state = _MID
                else:  # a stuffed dot: drop it, the line goes on
                    self._state = _MID
            elif state == _DOT_CR:
                if c == LF:
                    pos += 1
                    if normalize and self._after_bare_lf:  # dropped, see Postfix
                        self._state = _LINE_START
                        self._after_bare_lf = False
                        continue
                    ended = True
                    break
                self._bare(lf=False)
                self._emit(pieces, b"\r", content=True)
                self._state = _MID
            elif state == _CR:
                if c == LF:
                    pos += 1
                    self._emit(pieces, b"\r\n", content=False)
                    self._state = _LINE_START
                    self._after_bare_lf = False
                else:
                    self._bare(lf=False)
                    self._emit(pieces, b"\r", content=True)
                    self._state = _MID
            else:  # _MID
                m = _CR_OR_LF.search(buf, pos)
                if m is None:
                    self._emit(pieces, buf[pos:], content=True)
                    pos = n
                    break
                i = m.start()
                if i > pos:
                    self._emit(pieces, buf[pos:i], content=True)
                pos = i + 1
                if buf[i] == CR:
                    self._state = _CR
                else:
                    self._bare(lf=True)
                    if normalize:
                        self._emit(pieces, b"\r\n", content=False)
                        self._state = _LINE_START
                        self._after_bare_lf = True
                    else:
                        self._emit(pieces, b"\n", content=True)
        if pieces:
            out.append(Data(b"".join(pieces)))
        if ended:
            out.append(self._data_end())
            self._mode = COMMAND
        return pos

    def _clean_lines(self, buf: bytes, pos: int, pieces: list[bytes]) -> int:
        """Fast path: take whole CRLF lines up to the next line that starts with a dot,
        when they hold no bare CR/LF and cross no limit. Returns the new position (still
        at a line start) or ``pos`` unchanged when the careful path must run."""
        nxt = buf.find(b"\r\n.", pos)
        end = nxt + 2 if nxt >= 0 else buf.rfind(b"\r\n", pos) + 2
        if end <= pos + 1:
            return pos
        region = buf[pos:end]
        crlf = region.count(b"\r\n")
        if region.count(b"\r") != crlf or region.count(b"\n") != crlf:
            return pos
        # Once the content has stopped (a limit or a bare line end), the limits decide
        # nothing more: only the real end and the bare-line-end flags still matter.
        if not self._stopped:
            if self.max_text_line is not None:
                if max(map(len, region.split(b"\r\n"))) > self.max_text_line - 2:
                    return pos
            limit = self.max_message_size
            if limit is not None and self._size + len(region) > limit:
                return pos
        self._size += len(region)
        if self.max_message_size is not None and self._size > self.max_message_size:
            self._too_big = True  # a flag only: the content stopped before this region
        self._line_len = 0
        if not self._stopped:
            pieces.append(region)
        self._after_bare_lf = False
        return end

    def _data_end(self) -> DataEnd:
        violation = None
        if self._too_big and not (self.first_limit_wins and self._line_stopped):
            violation = _violation("message_too_big", error.MESSAGE_TOO_BIG)
        elif not self._normalize and self._bare_lf:
            violation = _violation("bare_newline", error.BARE_LF)
        elif not self._normalize and self._bare_cr:
            violation = _violation("bare_newline", error.BARE_CR)
        elif self._long_line:
            violation = _violation("line_too_long", error.TEXT_LINE_TOO_LONG)
        return DataEnd(True, self._size, self._bare_lf, self._bare_cr, violation)
