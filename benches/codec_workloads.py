"""Codec workloads shared by ``bench_codec.py`` (pytest-benchmark) and ``codec_report.py``.

Each workload is built once, deterministically (seeded ``random.Random``), and offers one
zero-argument callable per implementation: ``ferrosmtp._core`` (Rust), ``ferrosmtp._pure``
(the pure twin) and the incumbents' way of doing the same job, replicated from the
installed packages (smtplib, aiosmtplib 5.x, aiosmtpd 1.4.6) with their real functions
wherever they can be called on their own. Every callable returns a small summary value so
that ``Impl.expect`` can prove the implementations did the same work before any timing.
"""

from __future__ import annotations

import asyncio
import base64
import random
import re
import smtplib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import aiosmtplib.protocol as aiosmtplib_protocol
from aiosmtpd import smtp as aiosmtpd_smtp

from ferrosmtp import _core, _pure

CHUNK = 64 * 1024
MESSAGE_SIZE = 10 * 1024 * 1024
LINE_WIDTH = 76
DOT_LINE_SHARE = 0.02
COMMAND_LINES = 100_000
EHLO_REPLIES = 10_000
SEED = 5321

BACKENDS: dict[str, ModuleType] = {"_core": _core, "_pure": _pure}


def _accept(result: Any) -> bool:
    return True


@dataclass
class Impl:
    """One way of doing a workload's job.

    ``kind`` is rust, pure or incumbent; rust and pure rows with the same ``variant`` are
    compared with each other. ``expect`` checks the result of an untimed first run, so a
    table never compares implementations that did different work.
    """

    name: str
    kind: str
    run: Callable[[], Any]
    expect: Callable[[Any], bool] = _accept
    variant: str = ""


@dataclass
class Workload:
    """Inputs and implementations of one job; ``units`` and ``unit`` give throughput."""

    key: str
    title: str
    units: float  # bytes (unit "MB") or lines (unit "lines")
    unit: str
    impls: list[Impl] = field(default_factory=list)

    def impl(self, name: str) -> Impl:
        return next(i for i in self.impls if i.name == name)


def chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- inputs --------------------------------------------------------------------------------

_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will my more out up said what its about into than them can only other new some "
    "could time these two may then do first any like now my such make over our even most "
    "message server delivery queue relay mailbox domain header report attachment invoice "
    "meeting schedule quarterly budget review please regards thanks attached draft"
).split()


def _text_line(rng: random.Random) -> str:
    """Words up to the width; most prose lines end a little short of it, as wrapped text."""
    words: list[str] = []
    size = 0
    target = rng.randint(60, LINE_WIDTH)
    while True:
        w = rng.choice(_WORDS)
        if size + len(w) + (1 if words else 0) > target:
            break
        words.append(w)
        size += len(w) + (1 if len(words) > 1 else 0)
    line = " ".join(words)
    return line[:1].upper() + line[1:]


def _headers(rng: random.Random, boundary: str) -> list[str]:
    return [
        "Return-Path: <bounces+4711@lists.example.org>",
        "Received: from mail-out.example.net (mail-out.example.net [192.0.2.25])",
        f"\tby mx.example.com (Postfix) with ESMTPS id 4Z{rng.randrange(16**8):08X}",
        "\tfor <alice@example.com>; Thu, 28 Nov 2024 12:00:00 +0000 (UTC)",
        "From: Bob Example <bob@example.net>",
        "To: Alice Example <alice@example.com>",
        "Subject: Quarterly report, final draft with the figures we discussed",
        "Date: Thu, 28 Nov 2024 12:00:00 +0000",
        f"Message-ID: <{rng.randrange(16**16):016x}@mail-out.example.net>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
        "",
    ]


def build_message(size: int = MESSAGE_SIZE, seed: int = SEED) -> bytes:
    """A realistic CRLF message body of about ``size`` bytes (cut at a line end).

    Headers, then MIME parts alternating prose (wrapped to at most 76 characters) and
    base64 attachments (76-character lines); 2% of all lines start with a dot.
    """
    rng = random.Random(seed)
    boundary = f"=_{rng.randrange(16**12):012x}"
    lines = _headers(rng, boundary)
    total = sum(len(line) + 2 for line in lines)

    def parts() -> Iterator[str]:
        while True:
            yield f"--{boundary}"
            if rng.random() < 0.5:
                yield "Content-Type: text/plain; charset=utf-8"
                yield "Content-Transfer-Encoding: 8bit"
                yield ""
                for _ in range(rng.randint(5, 60)):
                    for _ in range(rng.randint(2, 8)):
                        yield _text_line(rng)
                    yield ""
            else:
                yield "Content-Type: application/pdf; name=report.pdf"
                yield "Content-Transfer-Encoding: base64"
                yield ""
                for _ in range(rng.randint(50, 600)):
                    yield base64.b64encode(rng.randbytes(57)).decode()
                yield ""

    for line in parts():
        if rng.random() < DOT_LINE_SHARE:
            line = "." + line[1:] if line else "."
        lines.append(line)
        total += len(line) + 2
        if total >= size:
            break
    return ("\r\n".join(lines) + "\r\n").encode()


_FIRST = "alice bob carol dave erin frank grace heidi ivan judy mallory oscar peggy trent".split()
_LAST = "smith jones taylor brown williams wilson johnson davies robinson wright".split()
_DOMAINS = (
    "example.com mail.example.net lists.example.org corp.example.co.uk "
    "eu-west-1.mx.example.io university.example.edu"
).split()


def _address(rng: random.Random) -> str:
    first, last, domain = rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_DOMAINS)
    r = rng.random()
    if r < 0.5:
        local = f"{first}.{last}"
    elif r < 0.7:
        local = f"{first}{rng.randrange(1000)}"
    elif r < 0.9:
        local = f"{first}+{rng.choice(['news', 'billing', 'git', 'ops'])}"
    else:
        local = f"bounces-{rng.randrange(16**8):08x}-{first}"
    return f"{local}@{domain}"


def build_commands(count: int = COMMAND_LINES, seed: int = SEED) -> bytes:
    """Pipelined transactions: one MAIL then 1-5 RCPT lines, ``count`` lines in all."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        extra = " BODY=8BITMIME" if rng.random() < 0.5 else ""
        out.append(f"MAIL FROM:<{_address(rng)}> SIZE={rng.randint(500, 5_000_000)}{extra}")
        for _ in range(rng.randint(1, 5)):
            if len(out) == count:
                break
            rcpt = _address(rng)
            notify = rng.choice(["SUCCESS,FAILURE", "FAILURE", "NEVER", "DELAY,FAILURE"])
            orcpt = f" ORCPT=rfc822;{rcpt}" if rng.random() < 0.3 else ""
            out.append(f"RCPT TO:<{rcpt}> NOTIFY={notify}{orcpt}")
    return ("\r\n".join(out) + "\r\n").encode()


_EXTENSIONS = [
    "PIPELINING",
    "SIZE 10240000",
    "VRFY",
    "ETRN",
    "STARTTLS",
    "AUTH PLAIN LOGIN",
    "ENHANCEDSTATUSCODES",
    "8BITMIME",
    "DSN",
    "SMTPUTF8",
    "CHUNKING",
]


def build_ehlo_replies(count: int = EHLO_REPLIES, seed: int = SEED) -> tuple[bytes, int]:
    """``count`` Postfix-style EHLO replies of 10-12 lines; returns (wire, line count)."""
    rng = random.Random(seed)
    out: list[str] = []
    lines = 0
    for _ in range(count):
        host = f"mx{rng.randrange(100)}.{rng.choice(_DOMAINS)}"
        ext = [e for e in _EXTENSIONS if e != "AUTH PLAIN LOGIN" or rng.random() < 0.5]
        body = [host, *ext]
        for i, text in enumerate(body):
            out.append(f"250{'-' if i < len(body) - 1 else ' '}{text}\r\n")
        lines += len(body)
    return "".join(out).encode(), lines


# -- workload 1: dot_stuff -----------------------------------------------------------------

# smtplib._fix_eols only takes str: the same pattern, compiled for bytes.
_SMTPLIB_EOLS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")


def smtplib_dot_stuff(msg: bytes) -> bytes:
    """What ``smtplib.SMTP.data`` sends for ``msg`` (with ``_fix_eols`` as for str)."""
    msg = _SMTPLIB_EOLS.sub(b"\r\n", msg)
    q: bytes = smtplib._quote_periods(msg)  # type: ignore[attr-defined]
    if q[-2:] != b"\r\n":
        q = q + b"\r\n"
    return q + b"." + b"\r\n"


def aiosmtplib_dot_stuff(message: bytes) -> bytes:
    """What ``SMTPProtocol.execute_data_command`` sends, with aiosmtplib's own helpers."""
    message = aiosmtplib_protocol.normalize_message_line_endings(message)
    message = aiosmtplib_protocol.PERIOD_REGEX.sub(b"..", message)
    return message + b".\r\n"


def dot_stuff_workload(body: bytes) -> Workload:
    wl = Workload("dot_stuff", "dot_stuff, 10 MiB message", len(body), "MB")
    # The Rust result is the reference; the three others must agree with it byte for byte.
    wire = _core.dot_stuff(body)

    def same(result: bytes) -> bool:
        return result == wire

    wl.impls = [
        Impl("ferrosmtp._core.dot_stuff", "rust", lambda: _core.dot_stuff(body), same),
        Impl("ferrosmtp._pure.dot_stuff", "pure", lambda: _pure.dot_stuff(body), same),
        Impl(
            "smtplib (_fix_eols + _quote_periods)",
            "incumbent",
            lambda: smtplib_dot_stuff(body),
            same,
        ),
        Impl(
            "aiosmtplib (protocol regexes)",
            "incumbent",
            lambda: aiosmtplib_dot_stuff(body),
            same,
        ),
    ]
    return wl


# -- workload 2: DATA unstuffing -------------------------------------------------------------


def reader_data(backend: ModuleType, wire_chunks: list[bytes]) -> int:
    """A ServerReader reading one DATA body: returns the content size at DataEnd."""
    reader = backend.ServerReader()
    reader.feed(b"DATA\r\n")
    Data, DataEnd = backend.Data, backend.DataEnd
    size = 0
    items = reader.expect_data()
    for chunk in wire_chunks:
        items = reader.feed(chunk)
        for item in items:
            if type(item) is Data:
                size += len(item.data)
            elif type(item) is DataEnd:
                assert item.violation is None, item.violation
                return size
    raise AssertionError("no DataEnd")


class AsyncRunner:
    """One event loop kept for all rounds, so loop set-up is not part of the timing."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, coro: Any) -> Any:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()


RUNNER = AsyncRunner()


async def _feed_stream(reader: asyncio.StreamReader, wire_chunks: list[bytes]) -> None:
    """The transport's side: one ``data_received`` (feed_data) per 64 KiB read."""
    for chunk in wire_chunks:
        reader.feed_data(chunk)
        await asyncio.sleep(0)
    reader.feed_eof()


async def aiosmtpd_data(wire_chunks: list[bytes]) -> bytes:
    """The loop of ``aiosmtpd.smtp.SMTP.smtp_DATA`` (1.4.6), statement for statement,
    from the 354 to ``original_content``; logging and replies left out."""
    line_length_limit = aiosmtpd_smtp.SMTP.line_length_limit
    reader = asyncio.StreamReader(limit=line_length_limit)
    feeder = asyncio.ensure_future(_feed_stream(reader, wire_chunks))
    _DataState = aiosmtpd_smtp._DataState
    EMPTY_BARR = aiosmtpd_smtp.EMPTY_BARR
    data: list[bytearray] = []
    num_bytes = 0
    limit = aiosmtpd_smtp.DATA_SIZE_DEFAULT
    line_fragments: list[bytes] = []
    state = _DataState.NOMINAL
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
            assert line.endswith(b"\r\n")
        except asyncio.LimitOverrunError as e:
            if state == _DataState.NOMINAL:
                state = _DataState.TOO_LONG
            data *= 0
            line = await reader.read(e.consumed)
            assert not line.endswith(b"\r\n")
        if not line_fragments and line == b".\r\n":
            break
        num_bytes += len(line)
        if state == _DataState.NOMINAL and limit and num_bytes > limit:
            state = _DataState.TOO_MUCH
            data *= 0
        line_fragments.append(line)
        if line.endswith(b"\r\n"):
            if state == _DataState.NOMINAL:
                joined = EMPTY_BARR.join(line_fragments)
                if len(joined) > line_length_limit:
                    state = _DataState.TOO_LONG
                    data *= 0
                else:
                    data.append(EMPTY_BARR.join(line_fragments))
            line_fragments *= 0
    await feeder
    assert state == _DataState.NOMINAL
    assert not line_fragments
    for text in data:
        if text.startswith(b"."):
            del text[0]
    original_content = aiosmtpd_smtp.EMPTYBYTES.join(data)
    data *= 0
    return original_content


def data_workload(body: bytes) -> Workload:
    wire = _core.dot_stuff(body)
    wire_chunks = chunks(wire)
    wl = Workload("data", "ServerReader DATA, 10 MiB wire, 64 KiB chunks", len(wire), "MB")

    def same_size(result: int) -> bool:
        return result == len(body)

    def same_content(result: bytes) -> bool:
        return result == body

    wl.impls = [
        Impl(
            "ferrosmtp._core.ServerReader",
            "rust",
            lambda: reader_data(_core, wire_chunks),
            same_size,
        ),
        Impl(
            "ferrosmtp._pure.ServerReader",
            "pure",
            lambda: reader_data(_pure, wire_chunks),
            same_size,
        ),
        Impl(
            "aiosmtpd smtp_DATA loop (StreamReader)",
            "incumbent",
            lambda: RUNNER.run(aiosmtpd_data(wire_chunks)),
            same_content,
        ),
    ]
    return wl


# -- workload 3: pipelined MAIL/RCPT ---------------------------------------------------------


def reader_commands(backend: ModuleType, wire_chunks: list[bytes], fields: bool) -> int:
    """A ServerReader in command mode; with ``fields``, also read what a server uses
    (verb, path address, params), which the Rust items build lazily."""
    reader = backend.ServerReader()
    Command = backend.Command
    count = 0
    for chunk in wire_chunks:
        for item in reader.feed(chunk):
            assert type(item) is Command, item
            if fields:
                _ = (item.verb, item.path.address, item.params)
            count += 1
    return count


def naive_commands(wire_chunks: list[bytes]) -> int:
    """What a naive server does: split on CRLF, partition the verb, find '<' and '>'."""
    buf = b""
    count = 0
    for chunk in wire_chunks:
        lines = (buf + chunk).split(b"\r\n")
        buf = lines.pop()
        for line in lines:
            verb, _, arg = line.partition(b" ")
            verb = verb.upper()
            lt = arg.find(b"<")
            gt = arg.find(b">", lt)
            if lt < 0 or gt < 0:
                raise ValueError(line)
            address = arg[lt + 1 : gt].decode("ascii")
            params = {}
            for word in arg[gt + 1 :].split():
                key, _, value = word.partition(b"=")
                params[key.decode("ascii").upper()] = value.decode("ascii") or None
            _ = (verb, address, params)
            count += 1
    return count


class _AiosmtpdShim:
    """The attributes ``SMTP._getaddr`` reads, at aiosmtpd's defaults."""

    local_part_limit = aiosmtpd_smtp.SMTP.local_part_limit


_SHIM = _AiosmtpdShim()
# aiosmtpd's own methods, called on the shim: they read no other state of the server.
_getaddr: Callable[..., tuple[str | None, str | None]] = aiosmtpd_smtp.SMTP._getaddr
_getparams: Callable[..., dict[str, str | bool] | None] = aiosmtpd_smtp.SMTP._getparams
_strip_command_keyword: Callable[..., str | None] = aiosmtpd_smtp.SMTP._strip_command_keyword


async def aiosmtpd_commands(wire_chunks: list[bytes]) -> int:
    """aiosmtpd 1.4.6's command path for MAIL and RCPT: ``_handle_client`` (readuntil,
    rstrip, partition, decode, size check) then the parsing of ``smtp_MAIL`` /
    ``smtp_RCPT`` through its real ``_strip_command_keyword``, ``_getaddr`` (which calls
    ``email._header_value_parser.get_angle_addr``) and ``_getparams``. Replies, handler
    hooks and logging are left out."""
    reader = asyncio.StreamReader(limit=aiosmtpd_smtp.SMTP.line_length_limit)
    feeder = asyncio.ensure_future(_feed_stream(reader, wire_chunks))
    size_limits = aiosmtpd_smtp.SMTP.command_size_limits
    count = 0
    while True:
        try:
            line = await reader.readuntil()
        except asyncio.IncompleteReadError as e:
            assert not e.partial
            break
        line = line.rstrip(b"\r\n")
        command_bytes, _, arg_bytes = line.partition(b" ")
        command = command_bytes.upper().decode(encoding="ascii")
        arg: str | None = str(arg_bytes.strip(), encoding="ascii", errors="strict")
        assert len(line) <= size_limits[command]
        keyword = "FROM:" if command == "MAIL" else "TO:"
        assert arg is not None
        arg = _strip_command_keyword(_SHIM, keyword, arg)
        assert arg is not None
        address, addrparams = _getaddr(_SHIM, arg)
        assert address and addrparams is not None
        options = addrparams.upper().split()
        params = _getparams(_SHIM, options)
        assert params is not None
        if command == "MAIL":
            body = params.pop("BODY", "7BIT")
            assert body in ["7BIT", "8BITMIME"]
            smtputf8 = params.pop("SMTPUTF8", False)
            assert isinstance(smtputf8, bool)
            size = params.pop("SIZE", None)
            assert isinstance(size, str) and size.isdigit()
            assert int(size) <= aiosmtpd_smtp.DATA_SIZE_DEFAULT
        count += 1
    await feeder
    return count


def commands_workload(wire: bytes, lines: int) -> Workload:
    wire_chunks = chunks(wire)
    wl = Workload("commands", "100k pipelined MAIL/RCPT, 64 KiB chunks", lines, "lines")

    def all_lines(result: int) -> bool:
        return result == lines

    wl.impls = [
        Impl(
            "ferrosmtp._core.ServerReader",
            "rust",
            lambda: reader_commands(_core, wire_chunks, fields=False),
            all_lines,
        ),
        Impl(
            "ferrosmtp._core.ServerReader + fields",
            "rust",
            lambda: reader_commands(_core, wire_chunks, fields=True),
            all_lines,
            "fields",
        ),
        Impl(
            "ferrosmtp._pure.ServerReader",
            "pure",
            lambda: reader_commands(_pure, wire_chunks, fields=False),
            all_lines,
        ),
        Impl(
            "ferrosmtp._pure.ServerReader + fields",
            "pure",
            lambda: reader_commands(_pure, wire_chunks, fields=True),
            all_lines,
            "fields",
        ),
        Impl("naive split/partition", "incumbent", lambda: naive_commands(wire_chunks), all_lines),
        Impl(
            "aiosmtpd _handle_client + MAIL/RCPT parsing",
            "incumbent",
            lambda: RUNNER.run(aiosmtpd_commands(wire_chunks)),
            all_lines,
        ),
    ]
    # The address the codec reads is the one aiosmtpd reads.
    first = wire.split(b"\r\n", 1)[0].decode()
    addr, _ = _getaddr(_SHIM, _strip_command_keyword(_SHIM, "FROM:", first[5:]))
    path = _core.parse_command(first.encode()).path
    assert path is not None and path.address == addr
    return wl


# -- workload 4: EHLO replies ----------------------------------------------------------------


def reply_reader(backend: ModuleType, wire_chunks: list[bytes]) -> int:
    reader = backend.ReplyReader()
    count = 0
    for chunk in wire_chunks:
        count += len(reader.feed(chunk))
    return count


def aiosmtplib_replies(wire_chunks: list[bytes]) -> int:
    """aiosmtplib 5.x reply reading: a real ``SMTPProtocol`` object's
    ``_read_response_from_buffer``, called as ``data_received`` does (after the same
    "obvious partial reply" test) until the buffer holds no complete reply.

    ``data_received`` itself cannot take these chunks: it keeps one reply per command
    (pipelined replies are dropped) and refuses more than 32 KiB buffered, so its buffer
    handling is replayed here around the real parser."""
    proto = aiosmtplib_protocol.SMTPProtocol(loop=_AIOSMTPLIB_LOOP)
    buffer = proto._buffer
    read = proto._read_response_from_buffer
    count = 0
    for data in wire_chunks:
        buffer.extend(data)
        last_linebreak = data.rfind(b"\n")
        if last_linebreak == -1 or data[last_linebreak + 3 : last_linebreak + 4] == b"-":
            continue
        while read() is not None:
            count += 1
    while read() is not None:
        count += 1
    return count


# SMTPProtocol wants a loop for its futures; nothing is ever run on it.
_AIOSMTPLIB_LOOP = asyncio.new_event_loop()


def replies_workload(wire: bytes, replies: int, lines: int) -> Workload:
    wire_chunks = chunks(wire)
    wl = Workload("replies", "10k EHLO replies (~11 lines), 64 KiB chunks", lines, "lines")

    def all_replies(result: int) -> bool:
        return result == replies

    wl.impls = [
        Impl(
            "ferrosmtp._core.ReplyReader",
            "rust",
            lambda: reply_reader(_core, wire_chunks),
            all_replies,
        ),
        Impl(
            "ferrosmtp._pure.ReplyReader",
            "pure",
            lambda: reply_reader(_pure, wire_chunks),
            all_replies,
        ),
        Impl(
            "aiosmtplib SMTPProtocol._read_response_from_buffer",
            "incumbent",
            lambda: aiosmtplib_replies(wire_chunks),
            all_replies,
        ),
    ]
    return wl


# -- all of them -----------------------------------------------------------------------------


def build_all() -> list[Workload]:
    body = build_message()
    commands = build_commands()
    ehlo, ehlo_lines = build_ehlo_replies()
    return [
        dot_stuff_workload(body),
        data_workload(body),
        commands_workload(commands, COMMAND_LINES),
        replies_workload(ehlo, EHLO_REPLIES, ehlo_lines),
    ]
