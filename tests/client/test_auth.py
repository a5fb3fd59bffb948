"""SASL helpers (ferrosmtp.auth): client encodings and strict server-side decoding."""

from __future__ import annotations

import base64
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferrosmtp import auth


def b64decode(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# --- Client side ------------------------------------------------------------------------


def test_plain_response() -> None:
    assert (
        b64decode(auth.plain_response("tim", "tanstaaftanstaaf")) == b"\x00tim\x00tanstaaftanstaaf"
    )
    assert b64decode(auth.plain_response("u", "p", authzid="admin")) == b"admin\x00u\x00p"
    assert b64decode(auth.plain_response("jösé", b"p\xff")) == "\x00jösé\x00".encode() + b"p\xff"


@pytest.mark.parametrize(("user", "password"), [("a\x00b", "p"), ("u", "p\x00q")])
def test_plain_refuses_nul(user: str, password: str) -> None:
    with pytest.raises(ValueError):
        auth.plain_response(user, password)


def test_login_answers_each_prompt() -> None:
    assert b64decode(auth.login_response(auth.LOGIN_USERNAME_CHALLENGE, "bob", "pw")) == b"bob"
    assert b64decode(auth.login_response(auth.LOGIN_PASSWORD_CHALLENGE, "bob", "pw")) == b"pw"
    assert b64decode(auth.login_response("cGFzc3dvcmQ6", "bob", "pw")) == b"pw"  # lower case
    with pytest.raises(ValueError):
        auth.login_response(base64.b64encode(b"Token:").decode(), "bob", "pw")


def test_cram_md5_matches_rfc_2195_example() -> None:
    challenge = base64.b64encode(b"<1896.697170952@postoffice.reston.mci.net>").decode()
    response = auth.cram_md5_response(challenge, "tim", "tanstaaftanstaaf")
    assert b64decode(response) == b"tim b913a602c7eda7a495b4e6e7334d3890"


def test_cram_md5_is_hmac_md5_of_the_challenge() -> None:
    raw = b"<random@server>"
    response = b64decode(auth.cram_md5_response(base64.b64encode(raw).decode(), "u", "secret"))
    assert response == b"u " + hmac.new(b"secret", raw, "md5").hexdigest().encode()


def test_xoauth2_response() -> None:
    decoded = b64decode(auth.xoauth2_response("someone@example.com", "ya29.token"))
    assert decoded == b"user=someone@example.com\x01auth=Bearer ya29.token\x01\x01"
    with pytest.raises(ValueError):
        auth.xoauth2_response("a\x01b", "t")


def test_decode_challenge_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        auth.decode_challenge("not base64!")


# --- Server side ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "initial", "expected"),
    [
        ("dGVzdA==", False, b"test"),
        ("dGVzdA==", True, b"test"),
        ("=", True, b""),
        ("", False, b""),
        ("AGJvYgBwdw==", False, b"\x00bob\x00pw"),
        (b"YQ==", False, b"a"),
    ],
)
def test_decode_response_accepts_strict_base64(
    line: str | bytes, initial: bool, expected: bytes
) -> None:
    assert auth.decode_response(line, initial=initial) == expected


@pytest.mark.parametrize(
    "line",
    [
        "dGVzdA",  # missing padding
        "dGVz dA==",  # space
        "dGVzdA==\r",
        "dGVzdA==\n",
        " dGVzdA==",
        "dGVz\tdA==",
        "dG=VzdA=",  # padding in the middle
        "dGVzdA===",  # too much padding
        "dGVzdA=*",
        "dGVzd!==",
        "YR==",  # non-canonical: trailing bits set
        "=",  # "=" is only the empty *initial* response
        "ZGVm\x00",
    ],
)
def test_decode_response_rejects_anything_else(line: str) -> None:
    with pytest.raises(auth.SASLError) as info:
        auth.decode_response(line)
    assert (info.value.code, info.value.enhanced) == (501, "5.5.2")


def test_empty_initial_response_must_be_equals() -> None:
    with pytest.raises(auth.SASLError):
        auth.decode_response("", initial=True)


def test_star_cancels() -> None:
    with pytest.raises(auth.SASLCancelled) as info:
        auth.decode_response("*")
    assert info.value.code == 501
    with pytest.raises(auth.SASLCancelled):
        auth.decode_response("*", initial=True)


@given(st.binary(max_size=300))
def test_decode_inverts_b64(data: bytes) -> None:
    assert auth.decode_response(auth.b64(data)) == data


@given(st.text(max_size=50))
def test_decode_never_raises_anything_but_sasl_error(text: str) -> None:
    try:
        auth.decode_response(text)
    except auth.SASLError:
        pass


def test_parse_plain() -> None:
    assert auth.parse_plain(b"\x00tim\x00secret") == auth.PlainCredentials("", "tim", "secret")
    assert auth.parse_plain("admin\x00jösé\x00pw".encode()) == ("admin", "jösé", "pw")


@pytest.mark.parametrize(
    "message",
    [
        b"tim\x00secret",  # one NUL
        b"\x00tim\x00secret\x00",  # three NULs
        b"\x00\x00secret",  # empty authcid
        b"\x00tim\x00",  # empty password
        b"",
        b"\x00" + b"u" * 256 + b"\x00pw",  # authcid over 255 octets
        b"\x00tim\x00\xff\xfe",  # not UTF-8
    ],
)
def test_parse_plain_rejects_malformed(message: bytes) -> None:
    with pytest.raises(auth.SASLError) as info:
        auth.parse_plain(message)
    assert info.value.code == 535


def test_client_and_server_sides_agree() -> None:
    wire = auth.plain_response("user@example.org", "pä55", authzid="")
    assert auth.parse_plain(auth.decode_response(wire, initial=True)) == (
        "",
        "user@example.org",
        "pä55",
    )
