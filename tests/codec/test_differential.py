"""Hypothesis holds the Rust core to its pure-Python twin on arbitrary input, errors
included, and checks the properties that hold for both (chunking invariance, round trips).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.codec.drive import drive, norm_item, normalize

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = [
    b"\r\n",
    b"\r",
    b"\n",
    b".",
    b"..",
    b"\r\n.\r\n",
    b".\r\n",
    b"\x00",
    b" ",
    b"  ",
    b"EHLO x.example\r\n",
    b"HELO [127.0.0.1]\r\n",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"<a@b.example>",
    b"<>",
    b"<@r.example:u@x>",
    b'"q\\"x"@y',
    b"SIZE=10",
    b" SMTPUTF8",
    b" NOTIFY=NEVER",
    b"DATA\r\n",
    b"BDAT ",
    b"3",
    b"0",
    b" LAST",
    b"AUTH LOGIN\r\n",
    b"AUTH PLAIN AGE=\r\n",
    b"STARTTLS\r\n",
    b"NOOP\r\n",
    b"RSET\r\n",
    b"QUIT\r\n",
    b"VRFY u\r\n",
    b"@",
    b'"',
    b"\\",
    b"[IPv6:::1]",
    b"[1.2.3.4]",
    "é".encode(),
    "δ@π".encode(),
    b"\xff",
    b"\xc0\xaf",
    b"x" * 20,
    b"abc",
    b"=",
    b":",
    b"MAIL FROM:<a@b.example>\r\n",
    b"RCPT TO:<c@d.example>\r\n",
]
smtp_bytes = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6)), max_size=30).map(
    b"".join
)

reader_options = st.fixed_dictionaries(
    {
        "max_command_line": st.sampled_from([16, 40, 512]),
        "max_auth_line": st.sampled_from([16, 60, 12288]),
        "max_text_line": st.sampled_from([None, 3, 12, 1000]),
        "max_message_size": st.sampled_from([None, 0, 7, 100]),
        "bare_newline": st.sampled_from(["reject", "normalize"]),
        "smtputf8": st.booleans(),
        "max_buffer": st.sampled_from([16, 100, 1 << 20]),
        "first_limit_wins": st.booleans(),
    }
)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = draw(smtp_bytes)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    chunks, start = [], 0
    for cut in [*cuts, len(data)]:
        chunks.append(data[start:cut])
        start = cut
    return data, chunks


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """What a call did, comparable across backends: its value or its exception."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as e:
        if hasattr(e, "code") and hasattr(e, "enhanced"):
            return ("error", type(e).__name__, e.code, e.enhanced, e.text)
        return ("error", type(e).__name__, str(e))


def path_tuple(p: Any) -> tuple[Any, ...]:
    return (p.local_part, p.domain, tuple(p.source_route), str(p), p.is_null, p.is_postmaster)


# -- ServerReader --------------------------------------------------------------------------


@SETTINGS
@given(chunked(), reader_options)
def test_reader_rust_equals_pure(
    rust: ModuleType, pure: ModuleType, case: Any, options: Any
) -> None:
    _, chunks = case
    assert drive(rust, chunks, **options) == drive(pure, chunks, **options)


@SETTINGS
@given(chunked(), reader_options)
def test_reader_chunking_invariance(
    rust: ModuleType, pure: ModuleType, case: Any, options: Any
) -> None:
    data, chunks = case
    options["max_buffer"] = 1 << 20  # overflowing a pause depends on chunking by design
    for codec in (rust, pure):
        assert drive(codec, chunks, **options) == drive(codec, [data], **options)


@SETTINGS
@given(chunked(), reader_options)
def test_reader_stays_bounded(rust: ModuleType, case: Any, options: Any) -> None:
    _, chunks = case
    r = rust.ServerReader(**options)
    bound = max(options["max_command_line"] + 1024, options["max_auth_line"], options["max_buffer"])
    for chunk in chunks:
        items = r.feed(chunk)
        assert r.buffered <= bound + len(chunk)
        for item in items:
            if type(item).__name__ == "Violation":
                assert 400 <= item.code <= 599
        if r.mode == "paused":
            r.expect_command()


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["reject", "normalize"]))
def test_data_ends_only_at_crlf_dot_crlf(rust: ModuleType, body: bytes, policy: str) -> None:
    """Whatever the body, DATA ends at the first CRLF.CRLF (or a first line of '.'),
    under reject; under normalize a dot line touching a bare LF is dropped instead."""
    r = rust.ServerReader(bare_newline=policy)
    r.feed(b"DATA\r\n")
    r.expect_data()
    fed = b""
    for i in range(len(body)):
        fed += body[i : i + 1]
        ended = any(type(item).__name__ == "DataEnd" for item in r.feed(body[i : i + 1]))
        if ended:
            assert fed.endswith(b".\r\n")
            assert fed == b".\r\n" or fed.endswith(b"\r\n.\r\n")
            if policy == "reject":
                stream = b"\r\n" + fed
                assert stream.find(b"\r\n.\r\n") == len(stream) - 5
            break


# -- parsers -------------------------------------------------------------------------------


@SETTINGS
@given(smtp_bytes, st.booleans())
def test_parse_command_rust_equals_pure(
    rust: ModuleType, pure: ModuleType, line: bytes, utf8: bool
) -> None:
    a = outcome(rust.parse_command, line, smtputf8=utf8)
    b = outcome(pure.parse_command, line, smtputf8=utf8)
    if a[0] == "ok" and b[0] == "ok":
        assert norm_item(a[1]) == norm_item(b[1])
    else:
        assert a == b


path_text = st.one_of(
    st.lists(
        st.sampled_from(
            [
                "<",
                ">",
                "@",
                ".",
                ",",
                ":",
                '"',
                "\\",
                " ",
                "a",
                "Z",
                "0",
                "-",
                "_",
                "[",
                "]",
                "IPv6:",
                "::",
                "1.2.3.4",
                "192",
                "é",
                "δ",
                "\u202e",
                "\x01",
                "postmaster",
                "x" * 30,
                "\ud800",
                "+",
                "=",
            ]
        ),
        max_size=20,
    ).map("".join),
    st.text(max_size=40),
)


@SETTINGS
@given(path_text, st.booleans())
def test_parse_path_rust_equals_pure(
    rust: ModuleType, pure: ModuleType, text: str, utf8: bool
) -> None:
    a = outcome(rust.parse_path, text, smtputf8=utf8)
    b = outcome(pure.parse_path, text, smtputf8=utf8)
    if a[0] == "ok" and b[0] == "ok":
        assert path_tuple(a[1]) == path_tuple(b[1])
    else:
        assert a == b


@SETTINGS
@given(path_text, st.booleans())
def test_path_round_trip(rust: ModuleType, pure: ModuleType, text: str, utf8: bool) -> None:
    for codec in (rust, pure):
        try:
            p = codec.parse_path(text, smtputf8=utf8)
        except codec.CodecError:
            continue
        assert codec.parse_path(str(p), smtputf8=utf8) == p


@SETTINGS
@given(path_text, st.booleans())
def test_parse_params_and_xtext_rust_equals_pure(
    rust: ModuleType, pure: ModuleType, text: str, utf8: bool
) -> None:
    assert outcome(rust.parse_params, text, smtputf8=utf8) == outcome(
        pure.parse_params, text, smtputf8=utf8
    )
    assert outcome(rust.xtext_decode, text) == outcome(pure.xtext_decode, text)
    encoded = outcome(rust.xtext_encode, text)
    assert encoded == outcome(pure.xtext_encode, text)
    if encoded[0] == "ok":
        assert rust.xtext_decode(encoded[1]) == text


# -- replies -------------------------------------------------------------------------------

reply_bytes = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"250",
                b"250-",
                b"250 ",
                b"354 ",
                b"550 5.1.1 ",
                b"2.0.0",
                b"\r\n",
                b"\r",
                b"\n",
                b"ok",
                b"\x00",
                b"\xff",
                b"421 ",
                b"251 ",
                b"x" * 40,
                b" ",
            ]
        ),
        st.binary(max_size=4),
    ),
    max_size=25,
).map(b"".join)


@SETTINGS
@given(reply_bytes, st.lists(st.integers(0, 200), max_size=5), st.sampled_from([16, 64, 2048]))
def test_reply_reader_rust_equals_pure(
    rust: ModuleType, pure: ModuleType, data: bytes, cuts: list[int], max_line: int
) -> None:
    def run(codec: ModuleType) -> tuple[Any, ...]:
        reader = codec.ReplyReader(max_line=max_line, max_lines=4, max_reply=200)
        got = []
        start = 0
        try:
            for cut in [*sorted(cuts), len(data)]:
                got += reader.feed(data[start:cut])
                start = max(start, cut)
        except codec.ReplyError as e:
            return ("error", str(e), [(r.code, r.enhanced, r.lines) for r in got])
        return ("ok", [(r.code, r.enhanced, r.lines, r.text) for r in got], reader.buffered)

    assert run(rust) == run(pure)


@SETTINGS
@given(
    st.one_of(st.integers(150, 650), st.booleans(), st.none()),
    st.one_of(st.text(max_size=30), st.lists(st.text(max_size=600), max_size=4)),
    st.one_of(st.none(), st.sampled_from(["2.0.0", "5.1.1", "4.7.0", "2.0", "x", "2.999.999"])),
    st.booleans(),
)
def test_format_reply_rust_equals_pure(
    rust: ModuleType, pure: ModuleType, code: Any, text: Any, enhanced: Any, any_code: bool
) -> None:
    assert outcome(rust.format_reply, code, text, enhanced, any_code=any_code) == outcome(
        pure.format_reply, code, text, enhanced, any_code=any_code
    )


@SETTINGS
@given(st.lists(path_text, max_size=6))
def test_parse_ehlo_rust_equals_pure(rust: ModuleType, pure: ModuleType, lines: list[str]) -> None:
    def run(codec: ModuleType) -> tuple[Any, ...]:
        result = outcome(codec.parse_ehlo, lines)
        if result[0] == "ok":
            e = result[1]
            return ("ok", e.domain, e.greeting, e.extensions)
        return result

    assert run(rust) == run(pure)


# -- dot-stuffing --------------------------------------------------------------------------

body_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"\r\n.\r\n"]),
        st.binary(max_size=5),
    ),
    max_size=30,
).map(b"".join)
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


@SETTINGS
@given(body_bytes, st.lists(st.integers(0, 200), max_size=5), st.booleans())
def test_dot_stuffer_rust_equals_pure(
    rust: ModuleType, pure: ModuleType, body: bytes, cuts: list[int], dots: bool
) -> None:
    def run(codec: ModuleType) -> bytes:
        s = codec.DotStuffer(dots=dots)
        out, start = b"", 0
        for cut in [*sorted(cuts), len(body)]:
            out += s.feed(body[start:cut])
            start = max(start, cut)
        return out + s.finish()

    assert run(rust) == run(pure)
    assert rust.dot_stuff(body, dots=dots) == pure.dot_stuff(body, dots=dots)
    # dot_stuff is a whole DotStuffer run in one call, in both forms
    assert pure.dot_stuff(body, dots=dots) == run(pure)


@SETTINGS
@given(body_bytes)
def test_dot_stuff_round_trip(rust: ModuleType, pure: ModuleType, body: bytes) -> None:
    """Unstuffing dot_stuff(x) gives x with bare CR/LF as CRLF and a final CRLF."""
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    for codec in (rust, pure):
        wire = codec.dot_stuff(body)
        assert BARE.search(wire) is None
        assert wire == b".\r\n" or wire.find(b"\r\n.\r\n") == len(wire) - 5
        r = codec.ServerReader()
        r.feed(b"DATA\r\n")
        items = normalize(r.expect_data() + r.feed(wire))
        content = items[0][1] if items[0][0] == "data" else b""
        assert items[-1][0] == "end" and items[-1][5] is None
        assert content == expected


# -- the client's envelope -------------------------------------------------------------------

param_key = st.one_of(
    st.sampled_from(["SIZE", "size", "BODY", "SMTPUTF8", "ENVID", "X-Y", "9", "a=b", "", "-x"]),
    st.text(max_size=6),
)
param_value = st.one_of(
    st.none(),
    st.sampled_from(["1024", "8BITMIME", "a+2Bb", "é", "δ=x", "a b", "", "x\r\n", "\x7f"]),
    st.text(max_size=6),
)
params_map = st.one_of(st.none(), st.dictionaries(param_key, param_value, max_size=4))


@SETTINGS
@given(
    st.one_of(st.none(), path_text),
    st.lists(path_text, max_size=3),
    params_map,
    params_map,
    st.booleans(),
)
def test_format_envelope_rust_equals_pure(
    rust: ModuleType,
    pure: ModuleType,
    sender: str | None,
    recipients: list[str],
    mail_params: dict[str, str | None] | None,
    rcpt_params: dict[str, str | None] | None,
    utf8: bool,
) -> None:
    args = (sender, recipients, mail_params, rcpt_params)
    a = outcome(rust.format_envelope, *args, smtputf8=utf8)
    b = outcome(pure.format_envelope, *args, smtputf8=utf8)
    assert a == b
    if a[0] != "ok":
        return
    # Every line is one command the server's own parser reads back as the same envelope.
    for index, (address, line) in enumerate(a[1]):
        assert line.endswith(b"\r\n") and line.count(b"\r\n") == 1
        assert not re.search(rb"[\x00-\x1f\x7f]", line[:-2])
        verb = "MAIL" if sender is not None and index == 0 else "RCPT"
        params = mail_params if verb == "MAIL" else rcpt_params
        declared = any(k.upper() == "SMTPUTF8" for k in params or {})
        if verb == "MAIL" and not line.isascii() and not declared:
            # A UTF-8 sender needs SMTPUTF8, which the connection adds: the server says so.
            with pytest.raises(rust.CodecError) as refused:
                rust.parse_command(line[:-2], smtputf8=True)
            assert refused.value.code == 553
            continue
        command = rust.parse_command(line[:-2], smtputf8=True)
        assert command.verb == verb
        assert command.path.address == address
        assert command.params == {k.upper(): v for k, v in (params or {}).items()}
