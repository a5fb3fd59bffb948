"""Valid and invalid vectors for paths, commands, parameters and xtext (both backends)."""

from __future__ import annotations

from types import ModuleType

import pytest

# -- paths (RFC 5321 §4.1.2; checklist B16-B21) -------------------------------------------

VALID_PATHS = [
    # text, local_part, domain, route, str()
    ("<a@b.example>", "a", "b.example", (), "<a@b.example>"),
    ("<>", "", "", (), "<>"),
    ("<Postmaster>", "Postmaster", "", (), "<Postmaster>"),
    ("<postMASTER>", "postMASTER", "", (), "<postMASTER>"),
    ("bare@x.example", "bare", "x.example", (), "<bare@x.example>"),
    ("<first.last+tag@sub.example.org>", "first.last+tag", "sub.example.org", (), None),
    ("<!#$%&'*+-/=?^_`{|}~@x>", "!#$%&'*+-/=?^_`{|}~", "x", (), None),
    ('<"john doe"@example.com>', "john doe", "example.com", (), None),
    ('<"a\\"b"@x>', 'a"b', "x", (), None),
    ('<"a@b"@c.example>', "a@b", "c.example", (), '<"a@b"@c.example>'),
    ('<"ab"@x>', "ab", "x", (), "<ab@x>"),
    ('<""@x>', "", "x", (), '<""@x>'),
    ('<".a"@x>', ".a", "x", (), None),
    (
        "<@a.example,@b.example:user@c.example>",
        "user",
        "c.example",
        ("a.example", "b.example"),
        None,
    ),
    ("<user@[192.0.2.1]>", "user", "[192.0.2.1]", (), None),
    ("<user@[IPv6:2001:db8::1]>", "user", "[IPv6:2001:db8::1]", (), None),
    ("<user@[IPv6:::ffff:192.0.2.1]>", "user", "[IPv6:::ffff:192.0.2.1]", (), None),
    ("<u@[ipv6:1:2:3:4:5:6:7:8]>", "u", "[ipv6:1:2:3:4:5:6:7:8]", (), None),
    ("<u@[IPv6:1:2:3:4:5:6:1.2.3.4]>", "u", "[IPv6:1:2:3:4:5:6:1.2.3.4]", (), None),
    ("<u@x-y.example>", "u", "x-y.example", (), None),
    ("<u@123.example>", "u", "123.example", (), None),
]


@pytest.mark.parametrize(("text", "local", "domain", "route", "as_str"), VALID_PATHS)
def test_valid_paths(
    codec: ModuleType,
    text: str,
    local: str,
    domain: str,
    route: tuple[str, ...],
    as_str: str | None,
) -> None:
    p = codec.parse_path(text)
    assert (p.local_part, p.domain, tuple(p.source_route)) == (local, domain, route)
    if as_str is not None:
        assert str(p) == as_str
    assert codec.parse_path(str(p)) == p  # the round trip of the issue


INVALID_PATHS = [
    ("", "empty address"),
    ("<a@b", "unbalanced angle brackets"),
    ("<", "unbalanced angle brackets"),
    ("<a>", "missing domain"),
    ("<a@>", "invalid domain"),
    ("<a b@x>", "invalid local part"),
    ("<a..b@x>", "invalid local part"),
    ("<.a@x>", "invalid local part"),
    ("<a.@x>", "invalid local part"),
    ("<a\\b@x>", "invalid local part"),
    ('<"unterminated@x>', "unterminated quoted string"),
    ('<"\x01"@x>', "invalid character in quoted string"),
    ('<"a"b@x>', "invalid local part"),
    ('<"a">', "missing domain"),
    ("<a@b..c>", "invalid domain"),
    ("<a@-b.example>", "invalid domain"),
    ("<a@b-.example>", "invalid domain"),
    ("<a@b_c.example>", "invalid domain"),
    ("<a@b.example.>", "invalid domain"),
    ("<a@" + "b" * 64 + ".example>", "domain label too long"),
    ("<" + "a" * 65 + "@x>", "local part too long"),
    ("<a@" + ".".join(["b" * 60] * 5) + ">", "path too long"),
    ("<@:user@c>", "invalid source route"),
    ("<@a,@b user@c>", "invalid source route"),
    ("<@a@b:user@c>", "invalid source route"),
    ("<@a,:user@c>", "invalid source route"),
    ("@a:user@c", "invalid source route"),
    ("<a@[256.1.1.1]>", "invalid address literal"),
    ("<a@[IPv6:2001:db8::1::2]>", "invalid address literal"),
    ("<a@[IPv6:fe80::1%25eth0]>", "invalid address literal"),
    ("<a@[1.2.3]>", "invalid address literal"),
    ("<a@[foo:bar]>", "invalid address literal"),
    ("<a@[010.0.0.1]>", "invalid address literal"),
    ("<a@[IPv6:1:2:3:4:5:6:7::]>", "invalid address literal"),
    ("<a@[IPv6:1:2:3:4:5:6:7:8:9]>", "invalid address literal"),
    ("<a@[192.0.2.1>", "invalid address literal"),
]


@pytest.mark.parametrize(("text", "reason"), INVALID_PATHS)
def test_invalid_paths(codec: ModuleType, text: str, reason: str) -> None:
    with pytest.raises(codec.CodecError) as info:
        codec.parse_path(text)
    e = info.value
    assert (e.code, e.enhanced) == (501, "5.1.3")
    assert e.text == f"Bad address syntax: {reason}"


def test_utf8_paths(codec: ModuleType) -> None:
    text = "<δοκιμή@παράδειγμα.δοκιμή>"
    with pytest.raises(codec.CodecError) as info:
        codec.parse_path(text)
    assert (info.value.code, info.value.enhanced) == (553, "5.6.7")
    p = codec.parse_path(text, smtputf8=True)
    assert (p.local_part, p.domain) == ("δοκιμή", "παράδειγμα.δοκιμή")
    # octet limits apply to the UTF-8 form: 22 three-byte characters are 66 octets
    with pytest.raises(codec.CodecError, match="local part too long"):
        codec.parse_path("<" + "€" * 22 + "@x>", smtputf8=True)
    assert codec.parse_path("<" + "€" * 21 + "a@x>", smtputf8=True).local_part == "€" * 21 + "a"
    for bad in ["<a\u202eb@x>", "<a@x\u200b.example>", "<\u0085@x>", "<a\ufeff@x>"]:
        with pytest.raises(codec.CodecError):
            codec.parse_path(bad, smtputf8=True)
    with pytest.raises(codec.CodecError, match="invalid UTF-8"):
        codec.parse_path("<\ud800@x>", smtputf8=True)


def test_path_properties(codec: ModuleType) -> None:
    assert codec.parse_path("<>").is_null
    assert not codec.parse_path('<""@x>').is_null
    assert codec.parse_path("<POSTMASTER>").is_postmaster
    assert not codec.parse_path("<postmaster@x>").is_postmaster
    p = codec.Path("john doe", "example.com")
    assert p.address == '"john doe"@example.com'
    assert str(p) == '<"john doe"@example.com>'
    assert p == codec.Path("john doe", "example.com", ())
    assert hash(p) == hash(codec.Path("john doe", "example.com"))
    assert p != codec.Path("john", "example.com")


# -- commands ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "verb", "arg"),
    [
        (b"EHLO client.example\r\n", "EHLO", "client.example"),
        (b"ehlo [192.0.2.1]", "EHLO", "[192.0.2.1]"),
        (b"EHLO [IPv6:2001:db8::5]", "EHLO", "[IPv6:2001:db8::5]"),
        (b"HELO my_host", "HELO", "my_host"),
        (b"LHLO lmtp.example", "LHLO", "lmtp.example"),
        (b"DATA", "DATA", ""),
        (b"rset  ", "RSET", ""),
        (b"NOOP anything at all", "NOOP", "anything at all"),
        (b"HELP", "HELP", ""),
        (b"HELP MAIL", "HELP", "MAIL"),
        (b"VRFY postmaster", "VRFY", "postmaster"),
        (b"EXPN list", "EXPN", "list"),
        (b"STARTTLS", "STARTTLS", ""),
        (b"AUTH PLAIN AGFAYg==", "AUTH", "PLAIN AGFAYg=="),
        (b"AUTH login", "AUTH", "login"),
        (b"AUTH CRAM-MD5", "AUTH", "CRAM-MD5"),
        (b"QUIT", "QUIT", ""),
        (b"XCLIENT NAME=x", "XCLIENT", "NAME=x"),
        (b"GET / HTTP/1.1", "GET", "/ HTTP/1.1"),
    ],
)
def test_commands(codec: ModuleType, line: bytes, verb: str, arg: str) -> None:
    c = codec.parse_command(line)
    assert (c.verb, c.arg, c.path, c.params) == (verb, arg, None, {})


@pytest.mark.parametrize(
    ("line", "address", "params"),
    [
        (b"MAIL FROM:<a@b.example>", "a@b.example", {}),
        (
            b"mail from:<a@b.example> size=1000 BODY=8BITMIME",
            "a@b.example",
            {"SIZE": "1000", "BODY": "8BITMIME"},
        ),
        (b"MAIL FROM:<>", "", {}),
        (b"MAIL FROM:<> SIZE=10 AUTH=<>", "", {"SIZE": "10", "AUTH": "<>"}),
        (b"MAIL FROM: <x@y>", "x@y", {}),
        (b"MAIL FROM:x@y SIZE=1", "x@y", {"SIZE": "1"}),
        (b"MAIL FROM:<a@b> RET=HDRS ENVID=QQ+2B", "a@b", {"RET": "HDRS", "ENVID": "QQ+2B"}),
        (b'RCPT TO:<"a>b"@c> NOTIFY=SUCCESS,FAILURE', '"a>b"@c', {"NOTIFY": "SUCCESS,FAILURE"}),
        (b"RCPT TO:<postmaster>", "postmaster", {}),
        (b"RCPT TO:<user=name@domain.com> foo=bar", "user=name@domain.com", {"FOO": "bar"}),
        (b"RCPT TO: 0@mailblog.biz 0=9 1=9", "0@mailblog.biz", {"0": "9", "1": "9"}),
        (b"RCPT TO:<u@x> ORCPT=rfc822;u+40x", "u@x", {"ORCPT": "rfc822;u+40x"}),
    ],
)
def test_mail_rcpt(codec: ModuleType, line: bytes, address: str, params: dict[str, str]) -> None:
    c = codec.parse_command(line)
    assert c.path.address == address
    assert c.params == params


@pytest.mark.parametrize(
    ("line", "code", "enhanced", "text"),
    [
        (b"", 500, "5.5.2", "Syntax error: empty command"),
        (b"\r\n", 500, "5.5.2", "Syntax error: empty command"),
        (b" NOOP", 500, "5.5.2", "Syntax error: command unrecognized"),
        (b"1NOOP", 500, "5.5.2", "Syntax error: command unrecognized"),
        (b"NO_OP", 500, "5.5.2", "Syntax error: command unrecognized"),
        (b"A" * 33, 500, "5.5.2", "Syntax error: command unrecognized"),
        (b"NO\x00OP", 500, "5.5.2", "Syntax error: invalid character in command"),
        (b"NOOP\tx", 500, "5.5.2", "Syntax error: invalid character in command"),
        (b"NOOP\nx", 500, "5.5.2", "Syntax error: invalid character in command"),
        (b"NOOP\rx", 500, "5.5.2", "Syntax error: invalid character in command"),
        (b"NOOP \x7f", 500, "5.5.2", "Syntax error: invalid character in command"),
        (b"NOOP \xc3\xa9", 500, "5.5.2", "Syntax error: 8-bit characters not allowed"),
        (b"EHLO", 501, "5.5.4", "Syntax: EHLO hostname"),
        (b"EHLO a b", 501, "5.5.4", "Syntax: EHLO hostname"),
        (b"EHLO (a)", 501, "5.5.2", "Syntax error: invalid domain name"),
        (b"EHLO evil\x01", 500, "5.5.2", "Syntax error: invalid character in command"),
        (b"HELO -x", 501, "5.5.2", "Syntax error: invalid domain name"),
        (b"EHLO [300.1.1.1]", 501, "5.5.2", "Syntax error: invalid domain name"),
        (b"DATA x", 501, "5.5.4", "Syntax: DATA"),
        (b"RSET x", 501, "5.5.4", "Syntax: RSET"),
        (b"QUIT x", 501, "5.5.4", "Syntax: QUIT"),
        (b"STARTTLS x", 501, "5.5.4", "Syntax: STARTTLS"),
        (b"VRFY", 501, "5.5.4", "Syntax: VRFY address"),
        (b"EXPN", 501, "5.5.4", "Syntax: EXPN mailing-list"),
        (b"AUTH", 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"),
        (
            b"AUTH PLAIN a b",
            501,
            "5.5.4",
            "Syntax: AUTH mechanism [initial-response] (too many arguments)",
        ),
        (b"AUTH " + b"A" * 21, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"),
        (b"AUTH PL@IN", 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"),
        (b"MAIL", 501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]"),
        (b"MAIL TO:<a@b>", 501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]"),
        (b"MAIL FROM:", 501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]"),
        (b"MAIL FROM:<a@b>SIZE=1", 501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]"),
        (b"MAIL FROM:<a b>", 501, "5.1.7", "Bad sender address syntax: missing domain"),
        (b"RCPT TO:<a@b..c>", 501, "5.1.3", "Bad recipient address syntax: invalid domain"),
        (b"RCPT TO:<>", 501, "5.1.3", "Bad recipient address syntax: null path not allowed"),
        (b"RCPT FROM:<a@b>", 501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]"),
        (b"MAIL FROM:<a@b> SIZE=", 501, "5.5.4", "Syntax error in parameters"),
        (b"MAIL FROM:<a@b> SIZE=1 size=2", 501, "5.5.4", "Syntax error: duplicate parameter"),
        (b"MAIL FROM:<a@b> =x", 501, "5.5.4", "Syntax error in parameters"),
        (b"MAIL FROM:<\xce\xb4@x>", 553, "5.6.7", "Must declare SMTPUTF8 to send unicode address"),
        (b"RCPT TO:<\xce\xb4@x>", 553, "5.6.7", "Must declare SMTPUTF8 to send unicode address"),
        (
            b"MAIL FROM:<a@[1.2.3]>",
            501,
            "5.1.7",
            "Bad sender address syntax: invalid address literal",
        ),
        (b"BDAT", 501, "5.5.4", "Syntax: BDAT count [LAST]"),
        (b"BDAT 1 2 3", 501, "5.5.4", "Syntax: BDAT count [LAST]"),
        (b"BDAT +1", 501, "5.5.4", "Syntax: BDAT count [LAST]"),
        (b"BDAT 1 LAST x", 501, "5.5.4", "Syntax: BDAT count [LAST]"),
        (b"BDAT 123456789012345678901", 501, "5.5.4", "Syntax: BDAT count [LAST]"),
        (b"BDAT 18446744073709551616", 501, "5.5.4", "Syntax: BDAT count [LAST]"),
    ],
)
def test_bad_commands(codec: ModuleType, line: bytes, code: int, enhanced: str, text: str) -> None:
    with pytest.raises(codec.CodecError) as info:
        codec.parse_command(line)
    assert (info.value.code, info.value.enhanced, info.value.text) == (code, enhanced, text)


def test_smtputf8_commands(codec: ModuleType) -> None:
    line = "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή>".encode()
    with pytest.raises(codec.CodecError) as info:
        codec.parse_command(line, smtputf8=True)  # offered, but not declared on this MAIL
    assert info.value.code == 553
    c = codec.parse_command(line + b" SMTPUTF8", smtputf8=True)
    assert c.path.local_part == "δοκιμή" and c.params == {"SMTPUTF8": None}
    # RCPT: whether the transaction declared SMTPUTF8 is the protocol's to check
    assert codec.parse_command("RCPT TO:<δ@x>".encode(), smtputf8=True).path.local_part == "δ"
    assert codec.parse_command("VRFY δ".encode(), smtputf8=True).arg == "δ"
    for bad in [b"MAIL FROM:<\xc0\xaf@x> SMTPUTF8", b"RCPT TO:<\xed\xa0\x80@x>", b"VRFY \xff"]:
        with pytest.raises(codec.CodecError) as info:
            codec.parse_command(bad, smtputf8=True)
        assert (info.value.code, info.value.text) == (501, "Syntax error: invalid UTF-8")


def test_bdat_command(codec: ModuleType) -> None:
    c = codec.parse_command(b"BDAT 100 last")
    assert (c.verb, c.chunk_size, c.last) == ("BDAT", 100, True)
    c = codec.parse_command(b"BDAT 18446744073709551615")
    assert (c.chunk_size, c.last) == (2**64 - 1, False)


# -- parameters and xtext ----------------------------------------------------------------


def test_params(codec: ModuleType) -> None:
    assert codec.parse_params("") == {}
    assert codec.parse_params("  SIZE=10   body=8bitmime SMTPUTF8 ") == {
        "SIZE": "10",
        "BODY": "8bitmime",
        "SMTPUTF8": None,
    }
    assert list(codec.parse_params("B=1 A=2")) == ["B", "A"]  # order as sent
    for bad in ["SIZE=", "=1", "-X=1", "X_Y=1", "X=a=b", "X=é", "X=\x01", "SIZE=1 Size=2"]:
        with pytest.raises(codec.CodecError):
            codec.parse_params(bad)
    assert codec.parse_params("X=é", smtputf8=True) == {"X": "é"}


def test_xtext(codec: ModuleType) -> None:
    assert codec.xtext_decode("rfc822;a+2Bb+3D") == "rfc822;a+b="
    assert codec.xtext_decode("+c3+a9") == "é"
    assert codec.xtext_encode("a+b= é") == "a+2Bb+3D+20+C3+A9"
    assert codec.xtext_encode("") == ""
    for bad in ["+2", "+zz", "a b", "a=b", "+FF", "é"]:
        with pytest.raises(codec.CodecError) as info:
            codec.xtext_decode(bad)
        assert info.value.text == "Syntax error: invalid xtext"
