"""ServerReader: framing, pauses, DATA unstuffing, BDAT, limits. Both backends, and every
stream also at every split point and in 1-byte chunks (chunking invariance)."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.codec.drive import drive, splits

HEAD = b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
SMUGGLED = b"MAIL FROM:<s@x.example>\r\nRCPT TO:<r@y.example>\r\nDATA\r\nS\r\n.\r\n"
POLICIES = ["reject", "normalize"]


def invariant(codec: ModuleType, stream: bytes, **options: object) -> list[tuple]:  # type: ignore[type-arg]
    """The items of ``stream``, asserting every chunking gives the same items."""
    whole = drive(codec, [stream], **options)
    for chunks in splits(stream):
        assert drive(codec, chunks, **options) == whole, f"chunking {[len(c) for c in chunks]}"
    return whole


def commands(items: list[tuple]) -> list[str]:  # type: ignore[type-arg]
    return [i[1] for i in items if i[0] == "command"]


def content_of(items: list[tuple], nth: int = 0) -> bytes:  # type: ignore[type-arg]
    """The content of the nth message: the Data items before its DataEnd."""
    body = b""
    for item in items:
        if item[0] == "data":
            body += item[1]
        elif item[0] == "end":
            if nth == 0:
                return body
            nth -= 1
            body = b""
    raise AssertionError("no DataEnd")


def ends(items: list[tuple]) -> list[tuple]:  # type: ignore[type-arg]
    return [i for i in items if i[0] == "end"]


# -- command mode ------------------------------------------------------------------------


def test_pipelined_commands_in_one_feed(codec: ModuleType) -> None:
    items = invariant(codec, b"EHLO x.example\r\nMAIL FROM:<a@b> SIZE=10\r\nRCPT TO:<c@d>\r\n")
    assert commands(items) == ["EHLO", "MAIL", "RCPT"]
    assert items[1][3] == ("a", "b", ())
    assert items[1][4] == (("SIZE", "10"),)


def test_bad_command_is_a_violation_and_reading_goes_on(codec: ModuleType) -> None:
    items = invariant(codec, b"MAIL FROM:<a b>\r\nNO\x00OP\r\nNOOP\r\n")
    assert items[0][:4] == ("violation", "syntax", 501, "5.1.7")
    assert items[1][:4] == ("violation", "syntax", 500, "5.5.2")
    assert commands(items) == ["NOOP"]


def test_crlf_only_frames_commands_under_reject(codec: ModuleType) -> None:
    # A bare LF does not end a command line: the whole thing is one (refused) line.
    items = invariant(codec, b"NOOP\nMAIL FROM:<a@b>\r\nQUIT\r\n")
    assert items[0][:3] == ("violation", "syntax", 500)
    assert commands(items) == ["QUIT"]


def test_bare_lf_ends_command_lines_under_normalize(codec: ModuleType) -> None:
    items = invariant(codec, b"NOOP\nRSET\r\nQUIT\n", bare_newline="normalize")
    assert commands(items) == ["NOOP", "RSET", "QUIT"]


@pytest.mark.parametrize(
    ("prefix", "limit", "enhanced"),
    [
        (b"NOOP ", 512, "5.5.2"),
        (b"MAIL FROM:<a@b> X=", 512 + 1024, "5.5.2"),
        (b"AUTH PLAIN ", 12288, "5.5.6"),  # RFC 4954 §4
    ],
)
def test_command_line_limits_at_the_boundary(
    codec: ModuleType, prefix: bytes, limit: int, enhanced: str
) -> None:
    def line(total: int) -> bytes:
        return prefix + b"a" * (total - len(prefix) - 2) + b"\r\n"

    r = codec.ServerReader()
    ok = r.feed(line(limit))
    assert type(ok[0]).__name__ == "Command", ok
    if ok[0].verb == "AUTH":
        r.expect_command()
    too_long = r.feed(line(limit + 1) + b"NOOP\r\n")
    assert (too_long[0].kind, too_long[0].code, too_long[0].enhanced) == (
        "line_too_long",
        500,
        enhanced,
    )
    assert too_long[1].verb == "NOOP"


def test_overlong_line_is_discarded_without_buffering(codec: ModuleType) -> None:
    r = codec.ServerReader()
    items = []
    for _ in range(16):  # 1 MiB with no line end, in 64 KiB chunks
        items += r.feed(b"x" * 65536)
        assert r.buffered <= 1
    items += r.feed(b"\r\nNOOP\r\n")
    assert [type(i).__name__ for i in items] == ["Violation", "Command"]
    assert items[0].kind == "line_too_long"


def test_overlong_line_split_across_crlf(codec: ModuleType) -> None:
    for normalize in POLICIES:
        items = invariant(codec, b"x" * 600 + b"\r\nNOOP\r\n", bare_newline=normalize)
        assert [i[0] for i in items] == ["violation", "command"]


def test_utf8_commands_follow_the_smtputf8_option(codec: ModuleType) -> None:
    line = "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8\r\n".encode()
    refused = drive(codec, [line])
    assert refused[0][2:4] == (553, "5.6.7")
    accepted = drive(codec, [line], smtputf8=True)
    assert accepted[0][3] == ("δοκιμή", "παράδειγμα.δοκιμή", ())


# -- pauses ------------------------------------------------------------------------------


def test_reader_pauses_after_data_and_keeps_the_rest(codec: ModuleType) -> None:
    r = codec.ServerReader()
    items = r.feed(b"DATA\r\nSubject: early\r\n")
    assert [i.verb for i in items] == ["DATA"]
    assert r.mode == "paused"
    assert r.buffered == len(b"Subject: early\r\n")
    assert r.feed(b".\r\n") == []
    rest = r.expect_data()
    assert [type(i).__name__ for i in rest] == ["Data", "DataEnd"]
    assert rest[0].data == b"Subject: early\r\n"


def test_a_refused_data_reads_the_rest_as_commands(codec: ModuleType) -> None:
    r = codec.ServerReader()
    r.feed(b"DATA\r\nNOOP\r\n")
    items = r.expect_command()
    assert [i.verb for i in items] == ["NOOP"]


def test_starttls_pauses_and_reset_discards_plaintext(codec: ModuleType) -> None:
    r = codec.ServerReader()
    items = r.feed(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n")
    assert [i.verb for i in items] == ["STARTTLS"]
    assert r.buffered > 0  # what the protocol checks before answering 220 (B5)
    r.reset()
    assert r.buffered == 0 and r.mode == "command"
    assert [i.verb for i in r.feed(b"EHLO x\r\n")] == ["EHLO"]


def test_auth_line_mode(codec: ModuleType) -> None:
    r = codec.ServerReader()
    assert r.feed(b"AUTH LOGIN\r\ndXNlcg==\r\n")[0].arg == "LOGIN"
    line = r.expect_line()
    assert [type(i).__name__ for i in line] == ["Line"]
    assert line[0].data == b"dXNlcg=="
    assert r.mode == "paused"
    assert r.expect_command() == []
    assert r.feed(b"x" * 12287 + b"\r\n") != []


def test_auth_line_too_long(codec: ModuleType) -> None:
    r = codec.ServerReader(max_auth_line=100)
    r.feed(b"AUTH LOGIN\r\n")
    assert r.expect_line() == []
    items = r.feed(b"y" * 200)
    assert [(i.kind, i.code, i.enhanced) for i in items] == [("line_too_long", 500, "5.5.6")]
    assert r.mode == "paused"
    assert r.feed(b"y" * 5000) == [] and r.buffered <= 1  # the rest is still dropped
    assert r.expect_command() == []
    assert [i.verb for i in r.feed(b"\r\nNOOP\r\n")] == ["NOOP"]


def test_expect_outside_a_pause_is_a_programming_error(codec: ModuleType) -> None:
    r = codec.ServerReader()
    with pytest.raises(RuntimeError, match="not paused"):
        r.expect_data()


def test_pipelined_input_while_paused_is_bounded(codec: ModuleType) -> None:
    r = codec.ServerReader(max_buffer=1000)
    r.feed(b"DATA\r\n")
    assert r.feed(b"x" * 1000) == []
    items = r.feed(b"x")
    assert [(i.kind, i.code, i.fatal) for i in items] == [("buffer_full", 554, True)]
    assert r.mode == "closed" and r.buffered == 0
    assert r.feed(b"NOOP\r\n") == []


# -- DATA --------------------------------------------------------------------------------


def test_unstuffing(codec: ModuleType) -> None:
    items = invariant(codec, HEAD + b"..a\r\n. \r\n..\r\n...\r\nx\r\n.\r\nQUIT\r\n")
    assert content_of(items) == b".a\r\n \r\n.\r\n..\r\nx\r\n"
    assert ends(items)[0][1:] == (True, 17, False, False, None)
    assert commands(items)[-1] == "QUIT"


def test_empty_message_and_dot_first(codec: ModuleType) -> None:
    items = invariant(codec, HEAD + b".\r\nNOOP\r\n")
    assert content_of(items) == b""
    items = invariant(codec, HEAD + b".x\r\n.\r\n")
    assert content_of(items) == b"x\r\n"


def test_quit_in_the_same_read_as_the_end_of_data(codec: ModuleType) -> None:
    # Postfix's smtp client sends "." and QUIT together.
    items = drive(codec, [HEAD + b"Subject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n"])
    assert [i[0] for i in items][-3:] == ["data", "end", "command"]


@pytest.mark.parametrize(
    ("ending", "normalized_content"),
    [
        (b"\n.\n", b"A\r\n" + SMUGGLED[:-3]),
        (b"\r.\r", b"A\r.\r" + SMUGGLED[:-3]),
        (b"\n.\r\n", b"A\r\n" + SMUGGLED[:-3]),
        (b"\r\n.\n", b"A\r\n" + SMUGGLED[:-3]),
        (b"\r.\n", b"A\r.\r\n" + SMUGGLED[:-3]),
        (b"\n.\r", b"A\r\n\r" + SMUGGLED[:-3]),
        (b"\r.\r\n", b"A\r.\r\n" + SMUGGLED[:-3]),
        (b"\r\n.\r", b"A\r\n\r" + SMUGGLED[:-3]),
    ],
)
def test_smuggling_endings_never_end_data(
    codec: ModuleType, ending: bytes, normalized_content: bytes
) -> None:
    """Checklist B1 at the codec level: the fake ending and the smuggled transaction stay
    inside message 1; under reject the message is refused after its real end."""
    stream = HEAD + b"A" + ending + SMUGGLED
    rejected = invariant(codec, stream)
    assert commands(rejected) == ["EHLO", "MAIL", "RCPT", "DATA"]  # nothing smuggled
    [end] = ends(rejected)
    assert end[5] is not None and end[5][2:4] == (550, "5.5.2")
    assert b"MAIL FROM:<s@x.example>" not in content_of(rejected)  # refused content stops

    normalized = invariant(codec, stream, bare_newline="normalize")
    assert commands(normalized) == ["EHLO", "MAIL", "RCPT", "DATA"]
    [end] = ends(normalized)
    assert end[5] is None
    assert content_of(normalized) == normalized_content


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    ("ending", "content"),
    [
        (b"\r\n\x00.\r\n", b"A\r\n\x00.\r\n" + SMUGGLED[:-3]),
        (b"\r\n.\x00\r\n", b"A\r\n\x00\r\n" + SMUGGLED[:-3]),
        (b"\r\n. \r\n", b"A\r\n \r\n" + SMUGGLED[:-3]),
        (b"\r\n..\r\n", b"A\r\n.\r\n" + SMUGGLED[:-3]),
    ],
)
def test_near_endings_are_content(
    codec: ModuleType, policy: str, ending: bytes, content: bytes
) -> None:
    items = invariant(codec, HEAD + b"A" + ending + SMUGGLED, bare_newline=policy)
    assert commands(items) == ["EHLO", "MAIL", "RCPT", "DATA"]
    [end] = ends(items)
    assert end[5] is None
    assert content_of(items) == content


def test_the_real_end_still_ends(codec: ModuleType) -> None:
    for policy in POLICIES:
        items = invariant(codec, HEAD + b"A\r\n.\r\n" + SMUGGLED, bare_newline=policy)
        assert commands(items) == ["EHLO", "MAIL", "RCPT", "DATA"] * 1 + ["MAIL", "RCPT", "DATA"]
        assert content_of(items, 0) == b"A\r\n"
        assert content_of(items, 1) == b"S\r\n"


def test_normalize_keeps_bare_cr_and_fixes_bare_lf(codec: ModuleType) -> None:
    items = invariant(codec, HEAD + b"a\rb\nc\r\n.\r\n", bare_newline="normalize")
    assert content_of(items) == b"a\rb\r\nc\r\n"
    assert ends(items)[0][3:] == (True, True, None)


def test_message_size_limit_cuts_exactly_and_reads_to_the_end(codec: ModuleType) -> None:
    items = invariant(codec, HEAD + b"0123456789\r\nabc\r\n.\r\nNOOP\r\n", max_message_size=11)
    assert content_of(items) == b"0123456789\r"
    [end] = ends(items)
    assert end[2] == 17  # the true size is still reported
    assert end[5][1:4] == ("message_too_big", 552, "5.3.4")
    assert commands(items)[-1] == "NOOP"


def test_text_line_limit(codec: ModuleType) -> None:
    ok = invariant(codec, HEAD + b"x" * 8 + b"\r\n.\r\n", max_text_line=10)
    assert ends(ok)[0][5] is None
    long = invariant(codec, HEAD + b"..x" + b"y" * 8 + b"\r\nz\r\n.\r\n", max_text_line=10)
    assert content_of(long) == b".x" + b"y" * 6
    assert ends(long)[0][5][1:3] == ("line_too_long", 500)


def test_first_limit_wins_names_the_limit_crossed_first(codec: ModuleType) -> None:
    limits = {"max_text_line": 10, "max_message_size": 15}
    long_then_big = HEAD + b"y" * 20 + b"\r\nz\r\n.\r\n"  # the line crosses at 9, size at 16
    big_then_long = HEAD + b"abc\r\n" * 4 + b"y" * 20 + b"\r\n.\r\n"
    by_size = invariant(codec, long_then_big, **limits)
    assert ends(by_size)[0][5][1] == "message_too_big"  # the default: the size's refusal
    first = invariant(codec, long_then_big, first_limit_wins=True, **limits)
    assert content_of(first) == b"y" * 8
    assert ends(first)[0][5][1:3] == ("line_too_long", 500)
    for options in ({}, {"first_limit_wins": True}):
        items = invariant(codec, big_then_long, **limits, **options)
        assert ends(items)[0][5][1] == "message_too_big"


def test_size_limit_wins_over_bare_newline(codec: ModuleType) -> None:
    items = drive(codec, [HEAD + b"a\nbcdefgh\r\n.\r\n"], max_message_size=4)
    assert ends(items)[0][5][1] == "message_too_big"


# -- BDAT --------------------------------------------------------------------------------


def test_bdat_chunks(codec: ModuleType) -> None:
    items = invariant(codec, b"BDAT 3\r\nabcBDAT 2 LAST\r\nde\r\nNOOP\r\n")
    assert [i[0] for i in items] == [
        "command",
        "data",
        "end",
        "command",
        "data",
        "end",
        "violation",
        "command",
    ]
    assert items[1] == ("data", b"abc") and items[2][1:3] == (False, 3)
    assert items[4] == ("data", b"de") and items[5][1:3] == (True, 2)
    # "\r\n" after the LAST chunk is an empty command line


def test_a_bdat_chunk_is_consumed_whatever_it_holds(codec: ModuleType) -> None:
    """B4: the chunk bytes of any syntactically valid BDAT are content, never commands."""
    items = invariant(codec, b"BDAT 9 LAST\r\nMAIL FROMNOOP\r\n")
    assert commands(items) == ["BDAT", "NOOP"]
    assert items[1] == ("data", b"MAIL FROM")


def test_bdat_without_a_size_closes_the_reader(codec: ModuleType) -> None:
    for line in [b"BDAT x LAST", b"BDAT", b"BDAT -1", b"bdat 1 FIRST", b"BDAT 1\x00"]:
        items = drive(codec, [line + b"\r\nNOOP\r\n"])
        assert items == [("violation", "syntax", 521, "5.5.4", "Syntax: BDAT count [LAST]", True)]


def test_bdat_zero_and_huge(codec: ModuleType) -> None:
    items = invariant(codec, b"BDAT 0 LAST\r\nNOOP\r\n")
    assert [i[0] for i in items] == ["command", "end", "command"]
    r = codec.ServerReader()
    r.feed(b"BDAT 18446744073709551615\r\n")
    for _ in range(8):
        assert [type(i).__name__ for i in r.feed(b"z" * 65536)] == ["Data"]
        assert r.buffered == 0


def test_bdat_line_ends(codec: ModuleType) -> None:
    # CRLF split across two chunks is fine; a final CR is bare; bare LF under each policy.
    split = invariant(codec, b"BDAT 2\r\na\rBDAT 2 LAST\r\n\nb")
    assert [e[3:5] for e in ends(split)] == [(False, False), (False, False)]
    final_cr = invariant(codec, b"BDAT 2 LAST\r\na\r")
    assert ends(final_cr)[0][4] is True and ends(final_cr)[0][5][2] == 550
    bare_lf = invariant(codec, b"BDAT 3 LAST\r\na\nb")
    assert ends(bare_lf)[0][5][4] == "Error: bare <LF> received"
    fixed = invariant(codec, b"BDAT 3 LAST\r\na\nb", bare_newline="normalize")
    assert fixed[1] == ("data", b"a\r\nb") and ends(fixed)[0][5] is None


def test_bdat_cr_state_does_not_leak_across_commands(codec: ModuleType) -> None:
    items = drive(codec, [b"BDAT 2\r\na\rRSET\r\nBDAT 2 LAST\r\n\nb"])
    assert ends(items)[0][3:5] == (False, False)
    assert ends(items)[1][3] is True  # the LF after RSET is bare


def test_size_limit_still_wins_after_a_bare_newline_stopped_the_content(codec: ModuleType) -> None:
    # The bare LF stops the content first; the size limit is crossed later, by lines the
    # fast path takes: the reply must still be the size one, in every chunking.
    body = b"a\nb\r\n" + b"0123456789\r\n" * 20 + b".\r\n"
    items = invariant(codec, HEAD + body, max_message_size=50)
    assert ends(items)[0][5][1] == "message_too_big"
