"""ReplyReader, format_reply, parse_ehlo and dot-stuffing (both backends)."""

from __future__ import annotations

from types import ModuleType

import pytest

POSTFIX_EHLO = (
    b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
    b"250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
    b"250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
)


def test_multi_line_reply_in_any_chunking(codec: ModuleType) -> None:
    stream = POSTFIX_EHLO + b"354 End data with <CR><LF>.<CR><LF>\r\n221 2.0.0 Bye\r\n"
    whole = codec.ReplyReader().feed(stream)
    assert [(r.code, r.enhanced) for r in whole] == [(250, None), (354, None), (221, "2.0.0")]
    assert whole[0].lines[0] == "mx.example" and len(whole[0].lines) == 12
    assert whole[2].text == "2.0.0 Bye"
    for cut in range(len(stream) + 1):
        r = codec.ReplyReader()
        got = r.feed(stream[:cut]) + r.feed(stream[cut:])
        assert got == whole
        assert r.buffered == 0 and not r.in_reply
    r = codec.ReplyReader()
    one_byte = [reply for i in range(len(stream)) for reply in r.feed(stream[i : i + 1])]
    assert one_byte == whole


def test_reply_details(codec: ModuleType) -> None:
    r = codec.ReplyReader()
    assert r.feed(b"354\r\n")[0].lines == ("",)
    assert r.feed(b"250-\r\n250 x\r\n")[0].lines == ("", "x")
    assert r.feed(b"550 5.1.1 <a@b>: unknown\r\n")[0].enhanced == "5.1.1"
    assert r.feed(b"550 2.1.1 class mismatch\r\n")[0].enhanced is None
    assert r.feed(b"550 5.1.1000 too many digits\r\n")[0].enhanced is None
    assert r.feed(b"250 \xff\r\n")[0].lines == ("\ufffd",)
    r.feed(b"250-a\r\n")
    assert r.in_reply


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"25 x\r\n", "malformed reply line"),
        (b"250x\r\n", "malformed reply line"),
        (b"abc\r\n", "malformed reply line"),
        (b"600 x\r\n", "malformed reply line"),
        (b"160 x\r\n", "malformed reply line"),
        (b"260 x\r\n", "malformed reply line"),
        (b"250-a\r\n251 b\r\n", "inconsistent reply codes"),
        (b"250 a\rb\r\n", "bare CR, LF or NUL in reply"),
        (b"250 a\nb\r\n", "bare CR, LF or NUL in reply"),
        (b"250 a\x00\r\n", "bare CR, LF or NUL in reply"),
        (b"250 ok\n", "bare CR, LF or NUL in reply"),
    ],
)
def test_malformed_replies(codec: ModuleType, data: bytes, message: str) -> None:
    with pytest.raises(codec.ReplyError, match=message):
        codec.ReplyReader().feed(data)


def test_reply_bounds(codec: ModuleType) -> None:
    r = codec.ReplyReader(max_line=64)
    r.feed(b"2" * 64)
    with pytest.raises(codec.ReplyError, match="line too long"):
        r.feed(b"x")
    with pytest.raises(codec.ReplyError, match="line too long"):
        codec.ReplyReader(max_line=64).feed(b"250 " + b"x" * 61 + b"\r\n")
    with pytest.raises(codec.ReplyError, match="too many reply lines"):
        codec.ReplyReader(max_lines=3).feed(b"250-a\r\n" * 3 + b"250 b\r\n")
    with pytest.raises(codec.ReplyError, match="reply too long"):
        codec.ReplyReader(max_reply=100).feed(
            b"250-" + b"a" * 50 + b"\r\n" + b"250 " + b"b" * 50 + b"\r\n"
        )
    # a 1 MiB reply line never grows the buffer past the line limit
    r = codec.ReplyReader()
    with pytest.raises(codec.ReplyError):
        for _ in range(16):
            r.feed(b"250 " + b"x" * 65536)
    assert r.buffered <= 2048 + 65536


def test_format_reply_any_code(codec: ModuleType) -> None:
    """A second digit of 6 to 9 only when asked (ServerConfig.any_reply_code, the aiosmtpd
    drop-in); everything else is checked as always."""
    with pytest.raises(ValueError):
        codec.format_reply(599, "Not today")
    assert codec.format_reply(599, "Not today", any_code=True) == b"599 Not today\r\n"
    assert codec.format_reply(499, ["a", "b"], any_code=True) == b"499-a\r\n499 b\r\n"
    assert codec.format_reply(250, "OK", any_code=True) == b"250 OK\r\n"
    for code in (199, 600, 1000):
        with pytest.raises(ValueError):
            codec.format_reply(code, "x", any_code=True)
    with pytest.raises(ValueError):
        codec.format_reply(599, "a\r\n250 injected", any_code=True)


def test_format_reply(codec: ModuleType) -> None:
    assert codec.format_reply(250, "OK") == b"250 OK\r\n"
    assert codec.format_reply(250, "OK", "2.0.0") == b"250 2.0.0 OK\r\n"
    assert (
        codec.format_reply(250, ["mx", "SIZE 10", "HELP"])
        == b"250-mx\r\n250-SIZE 10\r\n250 HELP\r\n"
    )
    assert codec.format_reply(354, "") == b"354\r\n"
    assert codec.format_reply(250, ["", ""]) == b"250-\r\n250\r\n"
    assert codec.format_reply(250, []) == b"250\r\n"
    assert codec.format_reply(250, "tab\there") == b"250 tab\there\r\n"
    assert codec.format_reply(250, "é") == "250 é\r\n".encode()
    long = codec.format_reply(250, "x" * 1200, "2.0.0")
    lines = long.split(b"\r\n")[:-1]
    assert len(lines) == 3 and all(len(line) + 2 <= 512 for line in lines)
    assert b"".join(line[10:] for line in lines) == b"x" * 1200
    wide = codec.format_reply(250, "€" * 300).split(b"\r\n")[:-1]
    assert b"".join(line[4:] for line in wide).decode() == "€" * 300


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((199, "x"), "reply code"),
        ((600, "x"), "reply code"),
        ((260, "x"), "reply code"),
        ((True, "x"), "reply code"),
        (("250", "x"), "reply code"),
        ((250, "ok\r\n250 fake"), "control characters"),
        ((250, "a\nb"), "control characters"),
        ((250, "a\x00"), "control characters"),
        ((250, ["ok", "x\r"]), "control characters"),
        ((250, [b"bytes"]), "must be str"),
        ((250, "x", "5.0.0"), "enhanced status code"),
        ((250, "x", "2.0"), "enhanced status code"),
        ((250, "x", "2.0.0 "), "enhanced status code"),
        ((250, "x", "2.1000.0"), "enhanced status code"),
    ],
)
def test_format_reply_refuses(codec: ModuleType, args: tuple, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        codec.format_reply(*args)


def test_parse_ehlo(codec: ModuleType) -> None:
    reply = codec.ReplyReader().feed(POSTFIX_EHLO)[0]
    e = codec.parse_ehlo(reply.lines)
    assert (e.domain, e.greeting) == ("mx.example", "")
    assert e.extensions["SIZE"] == "10240000" and e.param("auth") == "PLAIN LOGIN"
    assert e.has("chunking") and e.has("PIPELINING") and not e.has("BINARYMIME")
    assert e.param("nope") is None
    e = codec.parse_ehlo(["mx greets you", "size 5", "bad_keyword", "SIZE 9", "-x", "8BITMIME"])
    assert e.greeting == "greets you"
    assert e.extensions == {"SIZE": "5", "8BITMIME": ""}
    assert codec.parse_ehlo([]).domain == ""


# -- dot-stuffing (checklist B2) -----------------------------------------------------------

STUFF_VECTORS = [
    (b"", b".\r\n"),
    (b".", b"..\r\n.\r\n"),
    (b".\r\n", b"..\r\n.\r\n"),
    (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"x\r\n.", b"x\r\n..\r\n.\r\n"),
    (b"\r\n.\r\n.\r\n", b"\r\n..\r\n..\r\n.\r\n"),
    (b"a\r", b"a\r\n.\r\n"),
    (b"\r\r\n\n", b"\r\n\r\n\r\n.\r\n"),
    (b"..x\r\n", b"...x\r\n.\r\n"),
]


@pytest.mark.parametrize(("body", "wire"), STUFF_VECTORS)
def test_dot_stuff(codec: ModuleType, body: bytes, wire: bytes) -> None:
    assert codec.dot_stuff(body) == wire
    for cut in range(len(body) + 1):
        s = codec.DotStuffer()
        assert s.feed(body[:cut]) + s.feed(body[cut:]) + s.finish() == wire
    s = codec.DotStuffer()
    assert b"".join(s.feed(body[i : i + 1]) for i in range(len(body))) + s.finish() == wire


def test_bdat_form_only_normalizes(codec: ModuleType) -> None:
    s = codec.DotStuffer(dots=False)
    assert s.feed(b".a\nb\r") + s.feed(b"c") + s.finish() == b".a\r\nb\r\nc\r\n"
    assert codec.DotStuffer(dots=False).finish() == b""
    s = codec.DotStuffer()
    s.finish()
    with pytest.raises(RuntimeError):
        s.feed(b"x")
    with pytest.raises(RuntimeError):
        s.finish()


def test_byte_arguments_accept_bytes_like_objects_only(codec: ModuleType) -> None:
    """Both backends take bytes, bytearray or memoryview wherever they take bytes, and
    refuse anything else with the same TypeError."""
    calls = [
        (lambda d: codec.parse_command(d), b"NOOP\r\n"),
        (lambda d: codec.dot_stuff(d), b"a\n.b"),
        (lambda d: codec.DotStuffer().feed(d), b"a\n.b"),
        (lambda d: codec.ServerReader().feed(d), b"NOOP\r\n"),
        (lambda d: codec.ReplyReader().feed(d), b"250 ok\r\n"),
    ]
    for call, data in calls:
        assert call(bytearray(data)) == call(data)
        assert call(memoryview(b"x" + data)[1:]) == call(data)
        for wrong in (data.decode(), None, 5, list(data)):
            with pytest.raises(TypeError, match="expected a bytes-like object, not"):
                call(wrong)
