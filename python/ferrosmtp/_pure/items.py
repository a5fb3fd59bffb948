"""The values the codec produces: paths, commands and the items of a ServerReader batch."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferrosmtp._pure.address import Path


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
