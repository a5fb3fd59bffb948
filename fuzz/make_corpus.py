#!/usr/bin/env python3
"""Write the seed corpus of every fuzz target into fuzz/corpus/<target>/.

    python3 fuzz/make_corpus.py [CORPUS_DIR]

Standard library only, deterministic, idempotent (file names are content hashes, so new
inputs libFuzzer adds next to them are kept). The corpus directories are gitignored:
``fuzz/run.sh`` calls this before every run.

Each target's input layout is described at the top of its fuzz_targets/<target>.rs; the
seeds below follow it: a header of option bytes, then realistic protocol bytes, including
the smuggling shapes (bare LF / bare CR around the final dot) the reader must not end on.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent

# -- server_reader: 12-byte header + client stream ------------------------------------------


def reader_header(
    *,
    normalize: bool = False,
    text_line: int | None = None,
    message_size: int | None = None,
    smtputf8: bool = False,
    max_buffer_units: int | None = None,
    command_line: int = 124,  # 16 + 124 * 4 = 512, the default
    auth_line: int = 255,
    decisions: int = 0xFFFF,  # accept every DATA / AUTH / STARTTLS
    chunks: tuple[int, int, int] = (63, 6, 15),
) -> bytes:
    flags = (
        (1 if normalize else 0)
        | (2 if text_line is not None else 0)
        | (4 if message_size is not None else 0)
        | (8 if smtputf8 else 0)
        | (16 if max_buffer_units is not None else 0)
    )
    size = message_size or 0
    return bytes(
        [
            flags,
            command_line,
            auth_line,
            (text_line or 3) - 3,
            size & 0xFF,
            size >> 8,
            max_buffer_units or 0,
            decisions & 0xFF,
            decisions >> 8,
            *chunks,
        ]
    )


SESSION = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<alice@example.com> SIZE=1234 BODY=8BITMIME\r\n"
    b"RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net\r\n"
    b'RCPT TO:<"quoted local"@[192.0.2.1]>\r\n'
    b"DATA\r\n"
    b"Subject: hi\r\n\r\n..leading dot\r\n.\r\n"
    b"QUIT\r\n"
)

SMUGGLING_ENDS = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\n",
    b"\n.\r",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
]
SMUGGLED = b"MAIL FROM:<s@x>\r\nRCPT TO:<r@y>\r\nDATA\r\nS\r\n.\r\n"


def server_reader_seeds() -> Iterable[bytes]:
    yield reader_header() + SESSION
    yield reader_header(normalize=True) + SESSION
    yield reader_header(decisions=0) + SESSION  # DATA refused: the body is read as commands
    yield reader_header(chunks=(0, 0, 0)) + SESSION  # one byte at a time
    for end in SMUGGLING_ENDS:
        for normalize in (False, True):
            yield (
                reader_header(normalize=normalize)
                + b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nA"
                + end
                + SMUGGLED
                + b"\r\n.\r\nQUIT\r\n"
            )
    yield reader_header(text_line=20, message_size=64) + (
        b"DATA\r\n" + b"x" * 40 + b"\r\n" + b"y" * 100 + b"\r\n.\r\nNOOP\r\n"
    )
    yield reader_header() + b"BDAT 5\r\nhelloBDAT 7 LAST\r\nMAIL FRNOOP\r\nBDAT x\r\nNOOP\r\n"
    yield reader_header(normalize=True) + b"BDAT 4\r\na\nb\rBDAT 1 LAST\r\n\nQUIT\r\n"
    yield reader_header() + b"AUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\nNOOP\r\n"
    yield reader_header() + b"AUTH PLAIN " + b"A" * 300 + b"\r\nNOOP\r\n"
    yield reader_header(auth_line=0) + b"AUTH LOGIN\r\n" + b"B" * 64 + b"\r\nQUIT\r\n"
    yield reader_header() + b"STARTTLS\r\nMAIL FROM:<injected@x>\r\nEHLO again\r\n"
    yield reader_header(max_buffer_units=1) + b"DATA\r\n" + b"z" * 200 + b"\r\n.\r\n"
    yield reader_header(command_line=0) + b"NOOP " + b"x" * 2000 + b"\r\nNOOP\r\n"
    yield reader_header(smtputf8=True) + "MAIL FROM:<δ@example.com> SMTPUTF8\r\n".encode()


# -- reply_reader: 6-byte header + server stream ---------------------------------------------


def reply_header(
    max_line: int = 255,
    max_lines: int = 63,
    max_reply: int = 65000,
    chunks: tuple[int, int] = (7, 3),
) -> bytes:
    return bytes([max_line, max_lines, max_reply & 0xFF, max_reply >> 8, *chunks])


EHLO = (
    b"220 mx.example.com ESMTP Postfix\r\n"
    b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n"
    b"250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
    b"250-SMTPUTF8\r\n250 CHUNKING\r\n"
    b"250 2.1.0 Ok\r\n550 5.1.1 <x@y>: Recipient address rejected\r\n354\r\n"
    b"221 2.0.0 Bye\r\n"
)


def reply_reader_seeds() -> Iterable[bytes]:
    yield reply_header() + EHLO
    yield reply_header(max_lines=2) + EHLO
    yield reply_header(max_line=4) + EHLO
    for bad in (b"25 x\r\n", b"250x\r\n", b"600 x\r\n", b"250-a\r\n251 b\r\n", b"250 a\rb\r\n"):
        yield reply_header() + bad
    yield reply_header() + b"250 a\n250 b\r\n"
    yield reply_header() + b"550 2.0.0 wrong class\r\n250 5.1.1000 no\r\n"


# -- the parsers: one flag byte + text ---------------------------------------------------------

PATHS = [
    "<alice@example.com>",
    "<>",
    "<Postmaster>",
    "postmaster",
    "bare@example.org",
    "<@a.example,@b.example:user@c.example>",
    '<"quoted local"@example.com>',
    '<"a\\"b"@x>',
    '<"a>b"@x>',
    "<user@[192.0.2.1]>",
    "<user@[IPv6:2001:db8::1]>",
    "<user@[IPv6:::ffff:192.0.2.1]>",
    "<δοκιμή@παράδειγμα.δοκιμή>",
    "<" + "a" * 64 + "@x.example>",
    "<a@" + ".".join(["b" * 60] * 4) + ">",
    "<a\u202eb@x>",
]

COMMANDS = [
    b"EHLO client.example",
    b"HELO [192.0.2.1]",
    b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME",
    b"mail from: <x@y> SMTPUTF8",
    b"RCPT TO:<Postmaster>",
    b'RCPT TO:<"a>b"@c> NOTIFY=NEVER ORCPT=rfc822;a+40c',
    b"BDAT 100 LAST",
    b"BDAT 0",
    b"BDAT 99999999999999999999",
    b"DATA",
    b"AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=",
    b"VRFY postmaster",
    b"STARTTLS",
    b"XCLIENT  ADDR=1 ",
    b"NOOP \xff",
    "MAIL FROM:<δ@x> SMTPUTF8".encode(),
]

PARAMS = [
    "SIZE=100  body=8BITMIME SMTPUTF8",
    "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40example.net",
    "ENVID=QQ314159 RET=HDRS",
    "X=é",
    "SIZE=1 size=2",
    "a+2Bb+3D",
    "+2",
]

BODIES = [
    b"",
    b".",
    b".\r\n",
    b"Subject: x\r\n\r\nline\r\n.\r\n..\r\nend",
    b"a\n.\nb",
    b"a\r.\rb",
    b"\r\n.\r\n.\r\n",
    b"bare CR at end\r",
    b"mixed\r\n\n\r\r\n.x\n",
]


# -- fast_path: 4-byte header + client stream -------------------------------------------------

SINK_SESSION = (
    b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
    b"Subject: x\r\n\r\nbody\r\n..dot\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n"
)


def fast_path_seeds() -> Iterable[bytes]:
    # max_recipients 2, max_junk 3; flags: strict, TLS, rate, SMTPUTF8; cut; item limit
    for flags in (0, 1, 4, 5, 8):
        for cut in (0, 7, 255):
            yield bytes([0x31, flags, cut, 0]) + SINK_SESSION
    yield bytes([0x00, 1, 255, 3]) + b"HELO x\r\n" + b"RCPT TO:<a@b>\r\n" * 3 + b"NOOP\r\n"
    yield bytes([0x10, 0, 255, 0]) + b"\x16\x03\x01\x00\x05hello"
    yield (
        bytes([0x31, 1, 255, 0])
        + b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n"
    )


def write(corpus: Path, target: str, seeds: Iterable[bytes]) -> int:
    directory = corpus / target
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for seed in seeds:
        name = hashlib.sha1(seed).hexdigest()
        path = directory / name
        if not path.exists():
            path.write_bytes(seed)
        count += 1
    return count


# sender, recipient, recipient, MAIL keyword, value, RCPT keyword, value
ENVELOPES = [
    [b"a@example.org", b"b@example.org", b"", b"SIZE", b"1024", b"NOTIFY", b"NEVER"],
    [b"<>", b"<@relay.example:c@example.org>", b"\"q x\"@[127.0.0.1]", b"BODY", b"8BITMIME"],
    ["\u03b4@\u03c0.example".encode(), "\u043f@x.example".encode(), b"", b"SMTPUTF8", b""],
    [b"a@b\r\nRCPT TO:<evil@x>", b"c@d.example", b"", b"X=Y", b"v"],
    [b"Postmaster", b"<>", b"", b"ENVID", b"a b"],
]


def main() -> int:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus"
    targets = {
        "server_reader": list(server_reader_seeds()),
        "fast_path": list(fast_path_seeds()),
        "reply_reader": list(reply_reader_seeds()),
        "parse_path": [bytes([f]) + p.encode() for p in PATHS for f in (0, 1)],
        "parse_command": [bytes([f]) + c for c in COMMANDS for f in (0, 1)],
        "parse_params": [bytes([f]) + p.encode() for p in PARAMS for f in (0, 1)],
        "dot_stuff": [bytes([128]) + b for b in BODIES],
        "format_envelope": [
            bytes([f]) + b"\xff".join(fields)
            for f in (0, 1, 2, 3)
            for fields in ENVELOPES
        ],
    }
    for target, seeds in targets.items():
        print(f"{target}: {write(corpus, target, seeds)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
