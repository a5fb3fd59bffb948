# Stubs of the Rust extension ferrosmtp._core (src/python.rs). The pure twin
# ferrosmtp._pure has the same names and behaviour; `python -m mypy.stubtest
# ferrosmtp._core` checks this file against the built module.

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias, final

from ferrosmtp._errors import CodecError as CodecError
from ferrosmtp._errors import ReplyError as ReplyError

__all__ = [
    "CodecError",
    "Command",
    "Data",
    "DataEnd",
    "DotStuffer",
    "EhloReply",
    "Line",
    "Path",
    "Reply",
    "ReplyError",
    "ReplyReader",
    "ServerFastPath",
    "ServerReader",
    "Syncer",
    "Violation",
    "dot_stuff",
    "format_envelope",
    "format_reply",
    "parse_command",
    "parse_ehlo",
    "parse_params",
    "parse_path",
    "xtext_decode",
    "xtext_encode",
]

@final
class Path:
    """A parsed reverse- or forward-path.

    ``local_part`` is the semantic local part (quotes and escapes removed); ``domain`` is
    the domain or address literal as sent; ``source_route`` holds the domains of a
    deprecated source route, which RFC 5321 says to accept and ignore. The null path
    ``<>`` has an empty local part and domain; ``<Postmaster>`` has an empty domain.
    """
    def __new__(cls, local_part: str, domain: str, source_route: Sequence[str] = ()) -> Path: ...
    @property
    def local_part(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def source_route(self) -> tuple[str, ...]: ...
    @property
    def is_null(self) -> bool:
        """True for the null path ``<>``."""
    @property
    def is_postmaster(self) -> bool:
        """True for ``<Postmaster>`` (in any case, without a domain)."""
    @property
    def address(self) -> str:
        """The mailbox as ``local@domain``, quoting the local part only where needed."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Command:
    """One parsed command line.

    ``verb`` is upper-cased; ``arg`` is the text after the verb with surrounding spaces
    removed. MAIL and RCPT carry their parsed ``path`` and ESMTP ``params``; BDAT carries
    ``chunk_size`` and ``last``.
    """
    def __new__(
        cls,
        verb: str,
        arg: str,
        path: Path | None = None,
        params: Iterable[tuple[str, str | None]] | None = None,
        chunk_size: int | None = None,
        last: bool = False,
    ) -> Command: ...
    @property
    def verb(self) -> str: ...
    @property
    def arg(self) -> str: ...
    @property
    def path(self) -> Path | None: ...
    @property
    def params(self) -> dict[str, str | None]: ...
    @property
    def chunk_size(self) -> int | None: ...
    @property
    def last(self) -> bool: ...
    def __eq__(self, other: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

@final
class Violation:
    """Input the reader refused, with the reply to send.

    ``fatal`` means the reader has stopped reading: the connection must be closed after
    the reply is sent.
    """
    def __new__(
        cls, kind: str, code: int, enhanced: str, text: str, fatal: bool = False
    ) -> Violation: ...
    @property
    def kind(self) -> str: ...
    @property
    def code(self) -> int: ...
    @property
    def enhanced(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def fatal(self) -> bool: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Data:
    """A piece of message content: DATA already unstuffed, or BDAT chunk bytes."""
    def __new__(cls, data: bytes) -> Data: ...
    @property
    def data(self) -> bytes: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class DataEnd:
    """The end of a DATA body (at CRLF.CRLF) or of a BDAT chunk.

    ``last`` is False only for a BDAT chunk without LAST. ``size`` counts the content
    bytes produced for this body or chunk. ``bare_lf`` / ``bare_cr`` report bare line
    ends seen under either policy. ``violation`` is the reply to send instead of
    accepting the content (bare line ends under ``reject``, size or line limits).
    """
    def __new__(
        cls,
        last: bool,
        size: int,
        bare_lf: bool = False,
        bare_cr: bool = False,
        violation: Violation | None = None,
    ) -> DataEnd: ...
    @property
    def last(self) -> bool: ...
    @property
    def size(self) -> int: ...
    @property
    def bare_lf(self) -> bool: ...
    @property
    def bare_cr(self) -> bool: ...
    @property
    def violation(self) -> Violation | None: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Line:
    """One line read in line mode (an AUTH exchange), without its line end."""
    def __new__(cls, data: bytes) -> Line: ...
    @property
    def data(self) -> bytes: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

# ServerFastPath.take_over()'s tuple (its docstring names the fields): one spelling, which
# ServerConnection.take_over's annotation imports. Stub-only (private, not at runtime).
_FastPathState: TypeAlias = tuple[
    str | None,
    str | None,
    Path | None,
    list[Path],
    bool,
    int,
    bool,
    bytes,
    list[Command | Violation | Data | DataEnd | Line],
    bytes,
    bool,
    float,
    float | None,
    int,
]

@final
class ServerFastPath:
    """The commands of a server session that need nothing from the application, run
    without it: a sink's whole mail transaction.

    It feeds the session's ``reader`` and takes HELO and EHLO, MAIL and RCPT without
    parameters, DATA and its message, RSET, NOOP and QUIT, answering each with the bytes
    given for it (``hello``, ``ehlo``, ``mail``, ``rcpt``, ``data``, ``message``,
    ``reset``, ``noop``, ``quit``) as the server's state machine would when the
    application answers nothing, under the same limits (``max_recipients``,
    ``max_junk_commands``, ``strict_pipelining``). It stops after QUIT, and at the first
    item it does not take (another command, anything refused, a violation, a limit, the
    first bytes of a TLS handshake on a connection that is not ``tls``) before changing
    anything for it: ``receive()`` then returns None and ``take_over()`` hands the session
    back. ``now`` is the time of each read (``time.monotonic()``): ``last_progress`` is
    when the client last completed something, message content counting at
    ``data_min_rate`` octets a second (None: any).
    """
    def __new__(
        cls,
        reader: ServerReader,
        *,
        hello: bytes,
        ehlo: bytes,
        mail: bytes,
        rcpt: bytes,
        data: bytes,
        message: bytes,
        reset: bytes,
        noop: bytes,
        quit: bytes,
        max_recipients: int,
        max_junk_commands: int,
        strict_pipelining: bool,
        tls: bool,
        data_min_rate: float | None,
        now: float,
    ) -> ServerFastPath: ...
    def fresh(self, now: float) -> ServerFastPath:
        """A new session's fast path, read at ``now``, as if made with this one's arguments
        (its replies and limits, and a new reader with its reader's limits), with none of
        its state: one configuration's fast path is made once, then copied per connection."""
    @property
    def last_progress(self) -> float:
        """When the client last completed something (a ``time.monotonic()`` value)."""
    @property
    def closed(self) -> bool:
        """It answered QUIT: the session is over (its 221 comes with ``take_over()``)."""
    @property
    def reader(self) -> ServerReader:
        """The session's reader, which it feeds."""
    def receive(self, data: bytes, limit: int, now: float) -> bytes | None:
        """Feed ``data`` (read at ``now``) and answer what it completes, at most ``limit``
        items: the replies to write, or None when it stopped (then ``take_over()``)."""
    def take_over(self) -> _FastPathState:
        """The session as it stands, for the state machine to go on from: ``(hello,
        hello_name, mail, recipients, in_data, junk, closed, replies, items, unread,
        received_any, last_progress, data_started, data_bytes)``; the fast path is done."""

@final
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
    def __new__(
        cls,
        *,
        max_command_line: int = 512,
        max_auth_line: int = 12288,
        max_text_line: int | None = None,
        max_message_size: int | None = None,
        bare_newline: str = "reject",
        smtputf8: bool = False,
        max_buffer: int = 1048576,
        first_limit_wins: bool = False,
    ) -> ServerReader: ...
    def feed(self, data: bytes) -> list[Command | Violation | Data | DataEnd | Line]:
        """Read ``data`` (bytes, bytearray or memoryview); the items it completes."""
    def expect_command(self) -> list[Command | Violation | Data | DataEnd | Line]:
        """Resume reading commands after a pause; the items the buffered bytes complete."""
    def expect_data(self) -> list[Command | Violation | Data | DataEnd | Line]:
        """Resume after DATA's 354: read message content up to CRLF.CRLF; the items the
        buffered bytes complete.
        """
    def expect_line(self) -> list[Command | Violation | Data | DataEnd | Line]:
        """Resume after a 334 AUTH challenge: read one line; the items the buffered bytes
        complete.
        """
    def reset(self) -> None:
        """Forget all buffered input and state (after a TLS handshake) and read commands."""
    @property
    def mode(self) -> str:
        """``"command"``, ``"paused"`` (until an ``expect_*`` call), ``"data"``, ``"bdat"``,
        ``"line"`` or ``"closed"``.
        """
    @property
    def buffered(self) -> int:
        """Bytes held but not yet turned into items."""
    @property
    def max_command_line(self) -> int: ...
    @property
    def max_auth_line(self) -> int: ...
    @property
    def max_text_line(self) -> int | None: ...
    @property
    def max_message_size(self) -> int | None: ...
    @property
    def bare_newline(self) -> str: ...
    @property
    def smtputf8(self) -> bool: ...
    @property
    def max_buffer(self) -> int: ...
    @property
    def first_limit_wins(self) -> bool: ...

@final
class Reply:
    """One complete (possibly multi-line) reply.

    ``lines`` hold the text after ``NNN-`` / ``NNN `` exactly as sent (an enhanced code
    included); ``enhanced`` is the RFC 3463 code of the first line when it has one whose
    class matches the reply code.
    """
    def __new__(cls, code: int, enhanced: str | None, lines: Sequence[str]) -> Reply: ...
    @property
    def code(self) -> int: ...
    @property
    def enhanced(self) -> str | None: ...
    @property
    def lines(self) -> tuple[str, ...]: ...
    @property
    def text(self) -> str:
        """The lines joined with newlines."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class ReplyReader:
    """Assembles replies from the bytes a server sends (RFC 5321 §4.2).

    Strict: CRLF line ends only, three-digit codes with the same code on every line of a
    reply, no NUL or bare CR/LF. Bounded: a line over ``max_line`` octets, a reply of more
    than ``max_lines`` lines or ``max_reply`` octets raises ReplyError. After an error the
    reader must be discarded.
    """
    def __new__(
        cls, *, max_line: int = 2048, max_lines: int = 256, max_reply: int = 65536
    ) -> ReplyReader: ...
    def feed(self, data: bytes) -> list[Reply]:
        """Read ``data``; the replies it completes. Raises ReplyError for a reply that
        breaks the grammar or the bounds.
        """
    @property
    def buffered(self) -> int:
        """Bytes held but not yet turned into replies."""
    @property
    def in_reply(self) -> bool:
        """True while a multi-line reply has started but not ended."""
    @property
    def max_line(self) -> int: ...
    @property
    def max_lines(self) -> int: ...
    @property
    def max_reply(self) -> int: ...

@final
class EhloReply:
    """The parts of an EHLO reply: the server's name, its greeting text, and the
    extensions it offers (keyword upper-cased -> parameter text, ``""`` if none).
    """
    def __new__(
        cls, domain: str, greeting: str, extensions: Iterable[tuple[str, str]] | None = None
    ) -> EhloReply: ...
    @property
    def domain(self) -> str: ...
    @property
    def greeting(self) -> str: ...
    @property
    def extensions(self) -> dict[str, str]: ...
    def has(self, keyword: str) -> bool:
        """Whether the server offers the extension ``keyword`` (in any case)."""
    def param(self, keyword: str) -> str | None:
        """The parameter text of ``keyword`` (``""`` without one), or None if not offered."""
    def __eq__(self, other: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

@final
class DotStuffer:
    """Streaming encoder for a message body (RFC 5321 §4.5.2).

    Bare CR and bare LF become CRLF, a final CRLF is ensured, and with ``dots=True`` (the
    DATA form) lines starting with ``.`` get a second one and ``.\\r\\n`` ends the output.
    ``dots=False`` gives the BDAT form: only the line ends are normalized.
    """
    def __new__(cls, *, dots: bool = True) -> DotStuffer: ...
    def feed(self, data: bytes) -> bytes:
        """Encode the next piece of the body; the bytes to send (a CR that ends ``data``
        is held until the next byte shows whether it starts a CRLF).
        """
    def finish(self) -> bytes:
        """End the body: the last bytes to send (a final CRLF if needed, and ``.\\r\\n``
        with ``dots=True``). Nothing may be fed after it.
        """

@final
class Syncer:
    """The spool's file work in a thread of its own (``ferrosmtp.relay.sqlite``): the WAL's
    ``fdatasync`` (and the folder's ``fsync``), body files written and fsynced, body files
    unlinked once the WAL is synced; batched, each call a ticket.
    """
    def __new__(cls, file: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Syncer: ...
    def fileno(self) -> int:
        """Readable when tickets have finished since the last ``completed()``."""
    def request(self, folder: bool) -> int:
        """Ask for a sync of everything written to the file so far (and of the folder);
        returns its ticket.
        """
    def store(self, path: str | os.PathLike[str], data: bytes, append: bool = False) -> int:
        """Ask for ``data`` written to ``path`` (a new file; with ``append``, at the end of
        an existing one) and the file fsynced; returns its ticket.
        """
    def remove(self, path: str | os.PathLike[str]) -> int:
        """Ask for ``path`` unlinked once the file is synced after this call; returns its
        ticket.
        """
    def completed(self) -> tuple[int, list[tuple[int, OSError]]]:
        """``(done, failed)``: tickets up to ``done`` are finished; ``failed`` lists those
        that failed since the last call, each with its ``OSError``.
        """
    def close(self) -> None:
        """Finish the tickets asked for, then stop the thread. Idempotent."""

def parse_command(line: bytes, *, smtputf8: bool = False) -> Command:
    """Parse one command line (a trailing CRLF is allowed and ignored).

    ``smtputf8`` says whether the server offers SMTPUTF8: only then may MAIL, RCPT, VRFY
    and EXPN carry UTF-8, and a MAIL path only with the ``SMTPUTF8`` parameter.
    Raises CodecError carrying the reply to send.
    """

def parse_path(text: str, *, smtputf8: bool = False) -> Path:
    """Parse an RFC 5321 path: ``<local@domain>``, ``<>``, ``<Postmaster>``, a source-routed
    ``<@a,@b:local@domain>``, or a bare ``local@domain``. Raises CodecError.
    """

def parse_params(text: str, *, smtputf8: bool = False) -> dict[str, str | None]:
    """Parse ``KEY[=value]`` words separated by spaces.

    Keywords are upper-cased, values kept as sent; a keyword given twice is refused.
    Raises CodecError (501 5.5.4).
    """

def xtext_decode(text: str) -> str:
    """Decode RFC 3461 xtext (``+XX`` hex escapes) to the UTF-8 string it encodes."""

def xtext_encode(text: str) -> str:
    """Encode a string as RFC 3461 xtext: octets outside ``!``..``~``, ``+`` and ``=``
    become ``+XX``.
    """

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

def parse_ehlo(lines: Iterable[str]) -> EhloReply:
    """Read the capabilities from the lines of a 250 EHLO reply.

    The first line is ``domain [greeting]``; each other line is ``KEYWORD [params]``.
    Lines that are not a valid keyword are skipped; the first of duplicates wins.
    """

def dot_stuff(body: bytes, *, dots: bool = True) -> bytes:
    """The DATA wire form of ``body``, ending with ``.\\r\\n``; with ``dots=False`` the
    BDAT form (line ends normalized, a final CRLF ensured), whose length is the message
    size RFC 1870 asks for. One call, as ``DotStuffer`` fed the whole body and finished.
    """

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
    a refusal raises ValueError saying what is wrong.
    """
