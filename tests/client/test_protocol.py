"""ClientConnection, the sans-IO client: byte-exact, no sockets, for both codec backends."""

# mypy narrows ``conn.phase`` on an assert and does not see that the next call changes it.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

import re
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferrosmtp.protocol.client import (
    Answer,
    ClientConnection,
    Command,
    Event,
    ExtensionNotSupported,
    LocalProtocolError,
    MessageTooLarge,
    Phase,
    RemoteProtocolError,
    ServerClosing,
)
from tests.conftest import load_backend

EHLO_REPLY = (
    b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    b"250-DSN\r\n250-CHUNKING\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"
)


def responses(events: list[Event]) -> list[Answer]:
    """The events, all of which must be replies to commands (no ServerClosing)."""
    assert all(isinstance(e, Answer) for e in events), events
    return [e for e in events if isinstance(e, Answer)]


def ready(codec: ModuleType, ehlo: bytes = EHLO_REPLY, *, lmtp: bool = False) -> ClientConnection:
    """A connection that has been greeted and has sent EHLO (or LHLO) and got ``ehlo``."""
    conn = ClientConnection(codec=codec, lmtp=lmtp)
    assert [e.command for e in responses(conn.receive_data(b"220 mx.test ESMTP\r\n"))] == [
        "CONNECT"
    ]
    assert conn.ehlo("client.test") == (b"LHLO" if lmtp else b"EHLO") + b" client.test\r\n"
    (event,) = conn.receive_data(ehlo)
    assert isinstance(event, Answer) and event.code == 250
    assert conn.phase is Phase.READY
    return conn


def test_pipelined_envelope_is_one_write_and_replies_match(backend: ModuleType) -> None:
    conn = ready(backend)
    out = conn.send_all(
        [
            Command.mail("alice@example.org", {"SIZE": "42"}),
            Command.rcpt("bob@example.org"),
            Command.rcpt("<carol@example.org>"),
            Command.simple("DATA"),
        ]
    )
    assert out == (
        b"MAIL FROM:<alice@example.org> SIZE=42\r\n"
        b"RCPT TO:<bob@example.org>\r\n"
        b"RCPT TO:<carol@example.org>\r\n"
        b"DATA\r\n"
    )
    assert conn.outstanding == 4
    # Replies arrive split at odd places: the matching must not care.
    events = conn.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n55")
    events += conn.receive_data(b"0 5.1.1 No such user\r\n354 go ahead\r")
    events += conn.receive_data(b"\n")
    assert [(e.command, e.argument, e.code) for e in responses(events)] == [
        ("MAIL", "alice@example.org", 250),
        ("RCPT", "bob@example.org", 250),
        ("RCPT", "carol@example.org", 550),
        ("DATA", "", 354),
    ]
    assert conn.phase is Phase.BODY
    assert conn.accepted_recipients == ["bob@example.org"]
    assert conn.send_data(b"Subject: x\n\nhello") + conn.end_data() == (
        b"Subject: x\r\n\r\nhello\r\n.\r\n"
    )
    # Content may start a pipelining group: the next MAIL can follow without waiting.
    assert conn.mail("alice@example.org") == b"MAIL FROM:<alice@example.org>\r\n"
    events = conn.receive_data(b"250 2.0.0 queued as 1\r\n250 2.1.0 Ok\r\n")
    assert [(e.command, e.code) for e in responses(events)] == [(".", 250), ("MAIL", 250)]


def test_without_pipelining_every_command_waits(backend: ModuleType) -> None:
    conn = ready(backend, b"250-mx.test\r\n250 SIZE 1000\r\n")
    assert conn.mail("a@example.org") == b"MAIL FROM:<a@example.org>\r\n"
    with pytest.raises(LocalProtocolError, match="PIPELINING"):
        conn.rcpt("b@example.org")
    with pytest.raises(LocalProtocolError):
        conn.send_all([Command.rcpt("b@example.org"), Command.simple("DATA")])
    conn.receive_data(b"250 ok\r\n")
    assert conn.rcpt("b@example.org") == b"RCPT TO:<b@example.org>\r\n"


def test_group_enders_wait_for_their_reply(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.noop()
    with pytest.raises(LocalProtocolError, match="wait for the reply to NOOP"):
        conn.mail("a@example.org")
    conn.receive_data(b"250 ok\r\n")
    conn.send_all([Command.mail("a@example.org"), Command.rcpt("b@example.org")])
    conn.data()
    with pytest.raises(LocalProtocolError):
        conn.rset()  # nothing may follow DATA before its reply
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"too early")


def test_a_refused_group_counts_no_recipient(backend: ModuleType) -> None:
    """A group is checked whole before anything is recorded: RCPTs in a refused group do
    not count towards DATA's "at least one RCPT", and a group that moves past one
    transaction into the next counts the new one's RCPTs only."""
    conn = ready(backend)
    conn.mail("a@example.org")
    with pytest.raises(LocalProtocolError):
        conn.send_all(
            [Command.rcpt("b@example.org"), Command.simple("RSET"), Command.simple("DATA")]
        )
    assert conn.outstanding == 1  # the MAIL only
    conn.receive_data(b"250 ok\r\n")
    with pytest.raises(LocalProtocolError, match="at least one RCPT"):
        conn.data()
    out = conn.send_all(
        [
            Command.rcpt("b@example.org"),
            Command.simple("RSET"),
            Command.mail("c@example.org"),
            Command.rcpt("d@example.org"),
            Command.rcpt("e@example.org"),
            Command.simple("DATA"),
        ]
    )
    assert out.count(b"\r\n") == 6
    events = conn.receive_data(b"250 ok\r\n" * 5 + b"354 go\r\n")
    assert [e.code for e in responses(events)] == [250] * 5 + [354]
    assert conn.phase is Phase.BODY
    assert conn.accepted_recipients == ["d@example.org", "e@example.org"]


def test_sequencing_errors_change_nothing(backend: ModuleType) -> None:
    conn = ready(backend)
    with pytest.raises(LocalProtocolError):
        conn.rcpt("b@example.org")  # RCPT before MAIL
    with pytest.raises(LocalProtocolError):
        conn.data()  # DATA before MAIL
    with pytest.raises(LocalProtocolError, match="at least one RCPT"):
        conn.send_all([Command.mail("a@example.org"), Command.simple("DATA")])
    assert conn.outstanding == 0 and conn.phase is Phase.READY
    with pytest.raises(LocalProtocolError):
        ClientConnection(codec=backend).ehlo("client.test")  # before the greeting


def test_unsolicited_reply_is_a_protocol_error(backend: ModuleType) -> None:
    conn = ready(backend)
    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        conn.receive_data(b"250 ok\r\n")
    assert conn.closed
    assert conn.receive_data(b"250 more\r\n") == []  # a closed session reads nothing
    with pytest.raises(LocalProtocolError):
        conn.noop()


def test_extra_reply_after_the_expected_ones_is_an_error(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.noop()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"250 ok\r\n250 ok\r\n")


def test_unsolicited_421_closes_cleanly(backend: ModuleType) -> None:
    conn = ready(backend)
    (event,) = conn.receive_data(b"421 4.4.2 mx.test Error: timeout exceeded\r\n")
    assert isinstance(event, ServerClosing) and event.reply.code == 421
    assert conn.closed


def test_421_mid_transaction_closes_and_drops_the_rest(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.send_all(
        [Command.mail("a@example.org"), Command.rcpt("b@example.org"), Command.simple("DATA")]
    )
    events = conn.receive_data(b"250 ok\r\n421 4.3.2 shutting down\r\n")
    assert [(e.command, e.code) for e in events if isinstance(e, Answer)] == [
        ("MAIL", 250),
        ("RCPT", 421),
    ]
    assert conn.closed and conn.outstanding == 0


@pytest.mark.parametrize(
    "data",
    [
        b"250-a\r\n251 b\r\n",  # mixed codes
        b"25O ok\r\n",  # not a code
        b"250 ok\n",  # bare LF
        b"250 ok\x00\r\n",  # NUL
        b"250" + b"x" * 5000,  # endless line
    ],
)
def test_malformed_replies_raise(backend: ModuleType, data: bytes) -> None:
    conn = ready(backend)
    conn.noop()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(data)
    assert conn.closed


# --- STARTTLS (security checklist B6) ---------------------------------------------------


def test_starttls_then_tls_started_forgets_capabilities(backend: ModuleType) -> None:
    conn = ready(backend)
    assert conn.starttls() == b"STARTTLS\r\n"
    conn.receive_data(b"220 2.0.0 Ready to start TLS\r\n")
    assert conn.phase is Phase.TLS_HANDSHAKE
    with pytest.raises(LocalProtocolError):
        conn.mail("a@example.org")
    conn.tls_started()
    assert conn.tls and conn.extensions is None and not conn.supports("PIPELINING")
    with pytest.raises(LocalProtocolError):
        conn.mail("a@example.org")  # EHLO is required again
    conn.ehlo("client.test")
    conn.receive_data(b"250-mx.test\r\n250 AUTH PLAIN\r\n")
    assert conn.supports("AUTH") and not conn.supports("STARTTLS")
    with pytest.raises(LocalProtocolError):
        conn.starttls()  # TLS is already on


def test_starttls_response_injection_raises_and_never_starts_tls(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.starttls()
    with pytest.raises(RemoteProtocolError, match="after the 220"):
        conn.receive_data(b"220 Ready\r\n250-evil\r\n250 AUTH LOGIN\r\n")
    assert conn.closed
    with pytest.raises(LocalProtocolError):
        conn.tls_started()
    with pytest.raises(LocalProtocolError):
        conn.auth("LOGIN")


@pytest.mark.parametrize("tail", [b"2", b"250-evil\r\n", b"\r\n"])
def test_any_byte_after_the_starttls_reply_is_refused(backend: ModuleType, tail: bytes) -> None:
    conn = ready(backend)
    conn.starttls()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"220 Ready\r\n" + tail)


def test_bytes_arriving_after_the_starttls_reply_in_a_later_read(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.starttls()
    conn.receive_data(b"220 Ready\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"250 AUTH LOGIN\r\n")
    assert conn.closed


def test_starttls_refused_keeps_plaintext_session(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.starttls()
    conn.receive_data(b"454 4.7.0 TLS not available\r\n")
    assert conn.phase is Phase.READY and not conn.tls


def test_starttls_needs_the_extension(backend: ModuleType) -> None:
    conn = ready(backend, b"250-mx.test\r\n250 PIPELINING\r\n")
    with pytest.raises(ExtensionNotSupported):
        conn.starttls()


# --- Injection through arguments (B14) --------------------------------------------------

INJECTIONS = [
    "a@example.org\r\nRCPT TO:<x@evil.test>",
    "a@example.org\nX",
    "a@example.org\rX",
    "a@example.org\x00",
    "a@example.org\x1b[0m",
    "a@example.org\x7f",
    "a@example.org> NOTIFY=NEVER",
    "a@example.org> SIZE=1",
    "a b@example.org",
    "<a@example.org>\r\nDATA\r\n.\r\nMAIL FROM:<x@evil.test>",
    "Alice <a@example.org>",
    "",
]


@pytest.mark.parametrize("argument", INJECTIONS)
def test_injection_through_mail_and_rcpt_raises_before_any_byte(
    backend: ModuleType, argument: str
) -> None:
    conn = ready(backend)
    if argument != "":  # "" is the valid null reverse-path for MAIL
        with pytest.raises(ValueError):
            conn.mail(argument)
    assert conn.outstanding == 0 and conn.phase is Phase.READY
    conn.mail("ok@example.org")
    with pytest.raises(ValueError):
        conn.rcpt(argument)
    assert conn.outstanding == 1  # only the MAIL


@pytest.mark.parametrize(
    "argument", [a for a in INJECTIONS if any(c in a for c in "\r\n\x00\x1b\x7f")]
)
def test_injection_through_vrfy_expn_raises(backend: ModuleType, argument: str) -> None:
    conn = ready(backend)
    with pytest.raises(ValueError):
        conn.vrfy(argument)
    with pytest.raises(ValueError):
        conn.expn(argument)
    assert conn.outstanding == 0


@pytest.mark.parametrize(
    "name", ["client.test\r\nMAIL FROM:<x@y>", "client.test\n", "a\x00b", "a b", "", "exämple.test"]
)
def test_injection_through_ehlo_name_raises(backend: ModuleType, name: str) -> None:
    conn = ClientConnection(codec=backend)
    conn.receive_data(b"220 hi\r\n")
    with pytest.raises(ValueError):
        conn.ehlo(name)
    with pytest.raises(ValueError):
        conn.helo(name)
    assert conn.outstanding == 0
    assert conn.ehlo("[127.0.0.1]") == b"EHLO [127.0.0.1]\r\n"


@pytest.mark.parametrize(
    "params",
    [
        {"SIZE": "1\r\nRCPT TO:<x@y>"},
        {"SIZE": "1 NOTIFY=NEVER"},
        {"SIZE\r\n": "1"},
        {"BAD KEY": None},
        {"-X": None},
        {"X": ""},
        {"X": "a=b"},
        {"X": "\x00"},
        {"size": "1", "SIZE": "2"},
        {"ENVID": "tab\there"},
    ],
)
def test_injection_through_params_raises(
    backend: ModuleType, params: dict[str, str | None]
) -> None:
    conn = ready(backend)
    with pytest.raises(ValueError):
        conn.mail("a@example.org", params)
    conn.mail("a@example.org")
    with pytest.raises(ValueError):
        conn.rcpt("b@example.org", params)
    assert conn.outstanding == 1


def test_auth_arguments_are_checked(backend: ModuleType) -> None:
    conn = ready(backend)
    for mechanism in ["PLAIN\r\nMAIL", "PL AIN", ""]:
        with pytest.raises(ValueError):
            conn.auth(mechanism)
    for response in ["AAAA\r\n", "not base64!", "AAA"]:
        with pytest.raises(ValueError):
            conn.auth("PLAIN", response)
    assert conn.outstanding == 0
    assert conn.auth("plain", "=") == b"AUTH PLAIN =\r\n"


def test_addresses_are_reserialized_canonically(backend: ModuleType) -> None:
    conn = ready(backend)
    assert conn.mail("<>") == b"MAIL FROM:<>\r\n"
    assert conn.rcpt("<@relay.test:bob@example.org>") == b"RCPT TO:<bob@example.org>\r\n"
    assert conn.rcpt('"john doe"@example.org') == b'RCPT TO:<"john doe"@example.org>\r\n'
    assert conn.rcpt("Postmaster") == b"RCPT TO:<Postmaster>\r\n"
    assert conn.rcpt("x@[192.0.2.1]") == b"RCPT TO:<x@[192.0.2.1]>\r\n"
    with pytest.raises(ValueError):
        conn.rcpt("<>")
    with pytest.raises(ValueError):
        Command.mail("Postmaster")


def test_params_need_their_extensions(backend: ModuleType) -> None:
    conn = ready(backend, b"250-mx.test\r\n250 PIPELINING\r\n")
    refused: list[dict[str, str | None]] = [
        {"SIZE": "10"},
        {"BODY": "8BITMIME"},
        {"SMTPUTF8": None},
        {"RET": "HDRS"},
    ]
    for params in refused:
        with pytest.raises(ExtensionNotSupported):
            conn.mail("a@example.org", params)
    conn.mail("a@example.org", {"X-UNKNOWN": "1"})  # unknown keywords are the caller's call
    with pytest.raises(ExtensionNotSupported):
        conn.rcpt("b@example.org", {"NOTIFY": "NEVER"})


@pytest.mark.parametrize(
    ("verb", "params"),
    [
        ("MAIL", {"SIZE": "abc"}),
        ("MAIL", {"BODY": "FOO"}),
        ("MAIL", {"RET": "X"}),
        ("MAIL", {"ENVID": "+4"}),  # not xtext
        ("MAIL", {"SMTPUTF8": "yes"}),
        ("MAIL", {"AUTH": "a+b"}),
        ("RCPT", {"NOTIFY": "BOGUS"}),
        ("RCPT", {"NOTIFY": "NEVER,SUCCESS"}),
        ("RCPT", {"ORCPT": "x"}),
    ],
)
def test_param_values_follow_the_servers_rules(
    backend: ModuleType, verb: str, params: dict[str, str | None]
) -> None:
    """The values are checked by protocol/params.py, the rules ferrosmtp's server applies:
    the client does not send what it would refuse."""
    conn = ready(backend, EHLO_REPLY.replace(b"250 AUTH PLAIN LOGIN", b"250 AUTH PLAIN"))
    if verb == "RCPT":
        conn.mail("a@example.org")
    with pytest.raises(ValueError, match="invalid value for ESMTP parameter"):
        if verb == "MAIL":
            conn.mail("a@example.org", params)
        else:
            conn.rcpt("b@example.org", params)
    unchecked = ClientConnection(codec=backend, check_params=False)
    unchecked.receive_data(b"220 mx.test\r\n")
    unchecked.ehlo("client.test")
    unchecked.receive_data(EHLO_REPLY)
    if verb == "RCPT":
        unchecked.mail("a@example.org")
        assert unchecked.rcpt("b@example.org", params)
    else:
        assert unchecked.mail("a@example.org", params)


def test_params_without_their_extension_go_out_when_not_checked(backend: ModuleType) -> None:
    """``check_params=False`` (the aiosmtplib drop-in): the server decides; the SIZE
    limit and the SMTPUTF8 rules still hold."""
    conn = ClientConnection(codec=backend, check_params=False)
    conn.receive_data(b"220 mx.test\r\n")
    conn.ehlo("client.test")
    conn.receive_data(b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n")
    assert conn.mail("a@example.org", {"RET": "HDRS", "BODY": "8BITMIME"}) == (
        b"MAIL FROM:<a@example.org> RET=HDRS BODY=8BITMIME\r\n"
    )
    assert conn.rcpt("b@example.org", {"NOTIFY": "NEVER"}).endswith(b" NOTIFY=NEVER\r\n")
    conn.rset()
    with pytest.raises(MessageTooLarge):
        conn.mail("a@example.org", {"SIZE": "101"})
    with pytest.raises(ValueError, match="SMTPUTF8"):
        conn.mail("δοκιμή@example.org")


def test_replies_before_an_unsolicited_one_come_with_the_error(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.noop()
    with pytest.raises(RemoteProtocolError, match="unsolicited") as info:
        conn.receive_data(b"250 ok\r\n221 bye\r\n")
    (event,) = info.value.events
    assert isinstance(event, Answer) and (event.command, event.code) == ("NOOP", 250)
    assert conn.closed


def test_size_above_the_server_limit_is_refused_before_sending(backend: ModuleType) -> None:
    conn = ready(backend)  # SIZE 1000
    with pytest.raises(MessageTooLarge) as info:
        conn.mail("a@example.org", {"SIZE": "1001"})
    assert info.value.limit == 1000 and conn.outstanding == 0
    assert conn.mail("a@example.org", {"SIZE": "1000"})


def test_utf8_addresses_need_smtputf8(backend: ModuleType) -> None:
    conn = ready(backend)
    with pytest.raises(ValueError, match="SMTPUTF8"):
        conn.mail("δοκιμή@παράδειγμα.δοκιμή")
    line = conn.mail("δοκιμή@παράδειγμα.δοκιμή", {"SMTPUTF8": None})
    assert line == "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8\r\n".encode()
    assert conn.rcpt("пример@example.org") == "RCPT TO:<пример@example.org>\r\n".encode()
    plain = ready(backend, b"250-mx.test\r\n250 PIPELINING\r\n")
    with pytest.raises(ExtensionNotSupported):
        plain.mail("δοκιμή@example.org", {"SMTPUTF8": None})


# --- Message content (B2) -----------------------------------------------------------------

DOT_VECTORS = [
    (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b".", b"..\r\n.\r\n"),
    (b".\r\n", b"..\r\n.\r\n"),
    (b"x\r\n.", b"x\r\n..\r\n.\r\n"),
    (b"\r\n.\r\n.\r\n", b"\r\n..\r\n..\r\n.\r\n"),
    (b"", b".\r\n"),
]


def in_body(codec: ModuleType) -> ClientConnection:
    conn = ready(codec)
    conn.send_all(
        [Command.mail("a@example.org"), Command.rcpt("b@example.org"), Command.simple("DATA")]
    )
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    return conn


@pytest.mark.parametrize(("body", "wire"), DOT_VECTORS)
def test_dot_stuffing_vectors(backend: ModuleType, body: bytes, wire: bytes) -> None:
    conn = in_body(backend)
    assert conn.send_data(body) + conn.end_data() == wire


@pytest.mark.parametrize(("body", "wire"), DOT_VECTORS)
def test_dot_stuffing_is_the_same_at_every_split(
    backend: ModuleType, body: bytes, wire: bytes
) -> None:
    for split in range(len(body) + 1):
        conn = in_body(backend)
        out = conn.send_data(body[:split]) + conn.send_data(body[split:]) + conn.end_data()
        assert out == wire, split


def test_content_ends_only_at_the_client_terminator(backend: ModuleType) -> None:
    body = b"a\r\n.\r\nMAIL FROM:<x@evil.test>\r\n.\n\r.\r"
    conn = in_body(backend)
    wire = conn.send_data(body) + conn.end_data()
    assert wire.endswith(b"\r\n.\r\n")
    assert wire[:-3].count(b"\r\n.\r\n") == 0
    assert b"\r\n" not in wire.replace(b"\r\n", b"")  # no bare CR or LF survives
    assert all(b"\r" not in piece and b"\n" not in piece for piece in wire.split(b"\r\n"))


def test_354_with_no_accepted_recipient_sends_just_a_dot(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.send_all(
        [Command.mail("a@example.org"), Command.rcpt("b@example.org"), Command.simple("DATA")]
    )
    conn.receive_data(b"250 ok\r\n550 no\r\n354 go\r\n")
    assert conn.accepted_recipients == []
    assert conn.end_data() == b".\r\n"


def test_refused_data_leaves_a_transaction_to_reset(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.send_all(
        [Command.mail("a@example.org"), Command.rcpt("b@example.org"), Command.simple("DATA")]
    )
    conn.receive_data(b"250 ok\r\n550 no\r\n554 no valid recipients\r\n")
    assert conn.needs_reset and conn.phase is Phase.MAIL
    with pytest.raises(LocalProtocolError):
        conn.mail("a@example.org")
    conn.rset()
    conn.receive_data(b"250 ok\r\n")
    assert not conn.needs_reset and conn.phase is Phase.READY


def test_refused_mail_without_pipelined_followers_ends_the_transaction(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.mail("a@example.org")
    conn.receive_data(b"550 5.7.1 go away\r\n")
    assert conn.phase is Phase.READY and not conn.needs_reset


# --- BDAT ----------------------------------------------------------------------------------


def test_bdat_chunks_normalize_line_ends_and_count_octets(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.send_all([Command.mail("a@example.org"), Command.rcpt("b@example.org")])
    # The trailing CR is held back: it may be the start of a CRLF split across chunks.
    assert conn.send_bdat(b"Subject: x\n\n.line\r") == b"BDAT 19\r\nSubject: x\r\n\r\n.line"
    assert conn.send_bdat(b"\nend", last=True) == b"BDAT 7 LAST\r\n\r\nend\r\n"
    events = conn.receive_data(b"250 ok\r\n250 ok\r\n250 chunk\r\n250 2.0.0 queued\r\n")
    assert [(e.command, e.argument) for e in responses(events)][-2:] == [
        ("BDAT", ""),
        ("BDAT", "LAST"),
    ]
    assert conn.phase is Phase.READY and not conn.needs_reset


def test_bdat_needs_chunking_and_a_recipient(backend: ModuleType) -> None:
    conn = ready(backend, b"250-mx.test\r\n250 PIPELINING\r\n")
    conn.mail("a@example.org")
    conn.rcpt("b@example.org")
    with pytest.raises(ExtensionNotSupported):
        conn.send_bdat(b"x", last=True)
    conn2 = ready(backend)
    conn2.mail("a@example.org")
    with pytest.raises(LocalProtocolError):
        conn2.send_bdat(b"x", last=True)


def test_bdat_lone_cr_chunk_produces_nothing_until_the_next(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.send_all([Command.mail("a@example.org"), Command.rcpt("b@example.org")])
    assert conn.send_bdat(b"\r") == b""
    assert conn.send_bdat(b"x", last=True) == b"BDAT 5 LAST\r\n\r\nx\r\n"


def test_refused_bdat_chunk_requires_reset(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.send_all([Command.mail("a@example.org"), Command.rcpt("b@example.org")])
    conn.send_bdat(b"part one\r\n")
    conn.receive_data(b"250 ok\r\n250 ok\r\n552 5.3.4 too big\r\n")
    assert conn.needs_reset
    conn.rset()
    conn.receive_data(b"250 ok\r\n")
    assert not conn.needs_reset


# --- LMTP ----------------------------------------------------------------------------------


def test_lmtp_gives_one_reply_per_accepted_recipient(backend: ModuleType) -> None:
    conn = ready(backend, b"250-lmtp.test\r\n250 PIPELINING\r\n", lmtp=True)
    with pytest.raises(LocalProtocolError):
        conn.helo("client.test")
    conn.send_all(
        [
            Command.mail("a@example.org"),
            Command.rcpt("b@example.org"),
            Command.rcpt("c@example.org"),
            Command.rcpt("d@example.org"),
            Command.simple("DATA"),
        ]
    )
    conn.receive_data(b"250 ok\r\n250 ok\r\n550 unknown\r\n250 ok\r\n354 go\r\n")
    conn.send_data(b"hello\r\n")
    conn.end_data()
    events = conn.receive_data(b"250 2.0.0 b delivered\r\n452 4.2.2 d over quota\r\n")
    assert [(e.command, e.argument, e.code) for e in responses(events)] == [
        (".", "b@example.org", 250),
        (".", "d@example.org", 452),
    ]
    assert conn.outstanding == 0


def test_smtp_session_cannot_send_lhlo(backend: ModuleType) -> None:
    conn = ClientConnection(codec=backend)
    conn.receive_data(b"220 hi\r\n")
    with pytest.raises(LocalProtocolError):
        conn.lhlo("client.test")


# --- Greeting, HELO, AUTH exchange --------------------------------------------------------


def test_refused_greeting_allows_only_quit(backend: ModuleType) -> None:
    conn = ClientConnection(codec=backend)
    conn.receive_data(b"554 5.7.1 no service for you\r\n")
    assert conn.phase is Phase.REFUSED
    with pytest.raises(LocalProtocolError):
        conn.ehlo("client.test")
    assert conn.quit() == b"QUIT\r\n"


def test_helo_session_has_no_extensions(backend: ModuleType) -> None:
    conn = ClientConnection(codec=backend)
    conn.receive_data(b"220 hi\r\n")
    conn.ehlo("client.test")
    conn.receive_data(b"502 EHLO not implemented\r\n")
    assert conn.phase is Phase.UNIDENTIFIED
    conn.helo("client.test")
    conn.receive_data(b"250 hello\r\n")
    assert conn.phase is Phase.READY and not conn.esmtp
    with pytest.raises(ExtensionNotSupported):
        conn.mail("a@example.org", {"SIZE": "1"})


def test_auth_exchange(backend: ModuleType) -> None:
    conn = ready(backend)
    assert conn.auth("LOGIN", "dXNlcg==") == b"AUTH LOGIN dXNlcg==\r\n"
    conn.receive_data(b"334 UGFzc3dvcmQ6\r\n")
    assert conn.phase is Phase.AUTH_CHALLENGE
    with pytest.raises(LocalProtocolError):
        conn.mail("a@example.org")
    assert conn.auth_response("cGFzcw==") == b"cGFzcw==\r\n"
    conn.receive_data(b"235 2.7.0 Authentication successful\r\n")
    assert conn.authenticated and conn.phase is Phase.READY


def test_auth_cancel(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.auth("CRAM-MD5")
    conn.receive_data(b"334 PDEyMzQ+\r\n")
    assert conn.auth_response("*") == b"*\r\n"
    conn.receive_data(b"501 5.7.0 cancelled\r\n")
    assert not conn.authenticated and conn.phase is Phase.READY


def test_quit_closes(backend: ModuleType) -> None:
    conn = ready(backend)
    conn.quit()
    (event,) = responses(conn.receive_data(b"221 bye\r\n"))
    assert event.command == "QUIT" and conn.closed


def _words_outside_quotes(text: str) -> list[str]:
    """How a server splits a command's argument into words: on spaces outside a quoted
    string (with backslash escapes inside it)."""
    words, word, quoted, escaped = [], "", False, False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char in " \t" and not quoted:
            if word:
                words.append(word)
            word = ""
            continue
        word += char
    return [*words, word] if word else words


@given(argument=st.text(alphabet=st.sampled_from('ab.@<>" =\\;:,\t-é'), min_size=1, max_size=30))
@settings(max_examples=2000, deadline=None)
def test_an_accepted_vrfy_argument_is_one_word(argument: str) -> None:
    """Whatever VRFY/EXPN accepts reaches the server as one word, so no parameter can
    follow it (``a@b> AUTH=<c@d>`` is refused), and angle brackets only ever enclose a
    whole mailbox."""
    try:
        command = Command.query("VRFY", argument, smtputf8=True)
    except ValueError:
        return
    words = _words_outside_quotes(argument)
    assert len(words) == 1, (argument, words)
    suffix = "" if argument.isascii() else " SMTPUTF8"
    assert command.line == f"VRFY {argument}{suffix}\r\n".encode()
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', "", argument)
    assert unquoted.count("<") == unquoted.count(">") <= 1


def test_vrfy_expn_help_format(backend: ModuleType) -> None:
    conn = ready(backend)
    assert conn.vrfy("postmaster") == b"VRFY postmaster\r\n"
    conn.receive_data(b"252 maybe\r\n")
    assert conn.expn('"staff list"') == b'EXPN "staff list"\r\n'  # a name with a space
    conn.receive_data(b"250 ok\r\n")
    assert conn.vrfy("пример") == "VRFY пример SMTPUTF8\r\n".encode()
    conn.receive_data(b"252 maybe\r\n")
    assert conn.help() == b"HELP\r\n"
    conn.receive_data(b"214 help\r\n")
    with pytest.raises(ValueError):
        conn.help("two words")


@given(
    body=st.binary(max_size=200).map(lambda b: b.translate(bytes.maketrans(b"abc", b"\r\n."))),
    splits=st.lists(st.integers(min_value=0, max_value=200), max_size=4),
)
@settings(max_examples=300, deadline=None)
def test_any_content_has_crlf_line_ends_and_one_terminator(body: bytes, splits: list[int]) -> None:
    """Security checklist B2: whatever the bytes (biased towards CR, LF and dots) and
    however they are fed, the DATA wire form has no bare CR or LF, contains CRLF.CRLF
    only at its very end, and unstuffs back to the normalized body."""
    for codec_name in ("rust", "pure"):
        conn = in_body(load_backend(codec_name))
        wire = b""
        start = 0
        for cut in sorted(min(s, len(body)) for s in splits):
            wire += conn.send_data(body[start:cut])
            start = cut
        wire += conn.send_data(body[start:]) + conn.end_data()
        lines = wire.split(b"\r\n")
        assert lines[-1] == b"" and lines[-2] == b"."
        assert all(b"\r" not in line and b"\n" not in line for line in lines)
        assert b"\r\n.\r\n" not in wire[:-3] and not (len(lines) > 2 and lines[0] == b".")
        unstuffed = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines[:-2])
        normalized = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        if normalized and not normalized.endswith(b"\r\n"):
            normalized += b"\r\n"
        assert unstuffed + (b"\r\n" if lines[:-2] else b"") == normalized


# --- Regressions found by tests/protocol/test_client_stateful.py ---------------------------


@pytest.mark.parametrize("size", ["²", "١٢٣", "9" * 30, "-1", "1e3"])
def test_ehlo_size_that_is_not_ascii_digits_is_no_limit(backend: ModuleType, size: str) -> None:
    """``str.isdigit()`` takes "²" (which ``int()`` refuses: a ValueError escaped
    receive_data and left the session half-updated) and "١٢٣" (which ``int()`` reads as
    123). RFC 1870's SIZE is ASCII digits; anything else is no limit we can check."""
    conn = ready(backend, f"250-mx.test\r\n250-PIPELINING\r\n250 SIZE {size}\r\n".encode())
    assert conn.max_size is None and conn.pipelining
    assert conn.mail("a@example.org", {"SIZE": "5000000"})


def test_size_parameter_that_is_not_ascii_digits_is_never_read_as_a_number(
    backend: ModuleType,
) -> None:
    """Unicode digits are no SIZE (``int()`` would read them): refused as the server
    refuses them, and never compared with the limit when sent unchecked."""
    conn = ready(backend)  # SIZE 1000
    with pytest.raises(MessageTooLarge):
        conn.mail("a@example.org", {"SIZE": "1001"})
    with pytest.raises(ValueError, match="invalid value for ESMTP parameter SIZE"):
        conn.mail("a@example.org", {"SIZE": "١٢٣٤٥", "SMTPUTF8": None})
    unchecked = ClientConnection(codec=backend, check_params=False)
    unchecked.receive_data(b"220 mx.test\r\n")
    unchecked.ehlo("client.test")
    unchecked.receive_data(EHLO_REPLY)
    assert unchecked.mail("a@example.org", {"SIZE": "١٢٣٤٥", "SMTPUTF8": None})


def test_replies_to_commands_pipelined_before_quit_all_arrive(backend: ModuleType) -> None:
    """The phase is CLOSED as soon as QUIT is sent; replies to the commands pipelined
    before it were dropped (and with them the reply to QUIT, whose waiter then hung)."""
    conn = ready(backend)
    conn.send_all([Command.mail("a@example.org"), Command.rcpt("b@example.org")])
    conn.quit()
    events = conn.receive_data(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n221 2.0.0 bye\r\n")
    assert [(e.command, e.code) for e in responses(events)] == [
        ("MAIL", 250),
        ("RCPT", 250),
        ("QUIT", 221),
    ]
    assert conn.closed and conn.outstanding == 0
    conn = ready(backend)
    conn.send_all([Command.mail("a@example.org"), Command.rcpt("b@example.org")])
    conn.quit()
    events = conn.receive_data(b"250 ok\r\n")  # one read at a time
    events += conn.receive_data(b"250 ok\r\n221 bye\r\n")
    assert [e.command for e in responses(events)] == [
        "MAIL",
        "RCPT",
        "QUIT",
    ] and conn.outstanding == 0


def test_an_empty_read_changes_nothing_even_before_the_tls_handshake(backend: ModuleType) -> None:
    """``receive_data(b"")`` raised "data received after the 220 reply to STARTTLS"
    although nothing was received."""
    conn = ready(backend)
    conn.starttls()
    conn.receive_data(b"220 go ahead\r\n")
    assert conn.receive_data(b"") == []
    assert conn.phase is Phase.TLS_HANDSHAKE
    conn.tls_started()
    assert conn.phase is Phase.UNIDENTIFIED


def test_other_commands_only_between_transactions_and_never_pipelined(
    backend: ModuleType,
) -> None:
    conn = ready(backend)
    etrn = Command.other("ETRN example.org")
    assert conn.send(etrn) == b"ETRN example.org\r\n"
    with pytest.raises(LocalProtocolError, match="wait for the reply"):
        conn.noop()  # not pipelined: its reply may change what the server expects
    (reply,) = responses(conn.receive_data(b"250 queuing started\r\n"))
    assert reply.command == "OTHER" and reply.code == 250 and conn.phase is Phase.READY
    conn.mail("a@example.org")
    conn.receive_data(b"250 ok\r\n")
    with pytest.raises(LocalProtocolError, match="not allowed now"):
        conn.send(etrn)  # inside a transaction: the server's state would be unknown
    assert conn.outstanding == 0 and conn.phase is Phase.MAIL
    for modelled in ("MAIL FROM:<a@b>", "data", "StartTLS", "AUTH PLAIN", "LHLO x", "BDAT 1"):
        with pytest.raises(ValueError, match="changes the session"):
            Command.other(modelled)
    for bad in ("", " ", "ETRN\r\nRSET", "X\x00", "X" * 511, "(ETRN)"):
        with pytest.raises(ValueError):
            Command.other(bad)
