"""Checklist B3: early talkers and pipelining violations (RFC 2920 §3.1, RFC 5321 §3.3).

A command that must end a pipelined group (EHLO, HELO, DATA, NOOP, VRFY, EXPN, and AUTH
without an initial response) with bytes behind it in the same read gets 554 5.5.0 and the
connection closes; the bytes behind it are never executed. A client that talks before the
banner (greeting_delay) gets 554 and never sees a 220.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from tests.server.support import Raw, running

SYNC_554 = b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<a@example.com>\r\n"
RCPT = b"RCPT TO:<b@example.net>\r\n"


class Spy:
    def __init__(self) -> None:
        self.log: list[str] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.log.append(f"MAIL {address}")
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.log.append(f"DATA {envelope.content!r}")
        return "250 OK"


def login(*args: Any) -> Any:
    return None  # every AUTH fails; these tests never get that far


@pytest.mark.parametrize(
    ("before", "group"),
    [
        ([], EHLO + MAIL),
        ([], b"HELO client.example\r\n" + MAIL),
        ([EHLO], EHLO + MAIL),
        ([EHLO], b"NOOP\r\n" + MAIL),
        ([EHLO], b"VRFY postmaster\r\n" + MAIL),
        ([EHLO], b"EXPN list\r\n" + MAIL),
        ([EHLO], b"AUTH LOGIN\r\n" + MAIL),
        ([EHLO], MAIL + RCPT + b"DATA\r\nSubject: before the 354\r\n\r\n.\r\n"),
        ([EHLO], MAIL + RCPT + b"DATA\r\n" + MAIL),
        ([EHLO], b"NOOP\r\n\r\n"),  # even an empty line counts as bytes behind it
    ],
    ids=[
        "ehlo",
        "helo",
        "ehlo-again",
        "noop",
        "vrfy",
        "expn",
        "auth",
        "data-body",
        "data-mail",
        "noop-crlf",
    ],
)
def test_sync_point_with_bytes_behind_it(before: list[bytes], group: bytes) -> None:
    spy = Spy()
    with (
        running(spy, authenticator=login, auth_require_tls=False) as c,
        Raw(c.port) as raw,
    ):
        raw.reply()
        for command in before:
            raw.send(command)
            raw.reply()
        raw.send(group)
        rest = raw.read_to_eof()
    assert rest.endswith(SYNC_554), rest
    assert b"354" not in rest
    # Nothing after the sync point ran: at most the MAIL that came before it in the group.
    assert spy.log in ([], ["MAIL a@example.com"])
    assert not any(entry.startswith("DATA") for entry in spy.log)


def test_a_legal_group_is_answered_in_order() -> None:
    """RFC 2920 §3.2: MAIL, RCPT, RCPT, DATA in one write get 250, 250, 250, 354."""
    with running(Spy()) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(EHLO)
        raw.reply()
        raw.send(MAIL + RCPT + b"RCPT TO:<c@example.net>\r\nDATA\r\n")
        assert [r[:3] for r in raw.replies(4)] == [b"250", b"250", b"250", b"354"]
        raw.send(b"x\r\n.\r\n" + MAIL + b"QUIT\r\n")  # commands may follow the end of data
        assert raw.read_to_eof() == b"250 2.0.0 OK\r\n250 2.1.0 OK\r\n221 2.0.0 Bye\r\n"


def test_helo_clients_may_not_pipeline() -> None:
    spy = Spy()
    with running(spy) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"HELO client.example\r\n")
        raw.reply()
        raw.send(MAIL + RCPT + b"QUIT\r\n")
        rest = raw.read_to_eof()
    assert rest.endswith(SYNC_554), rest
    assert spy.log == []


def test_early_talker_never_sees_the_banner() -> None:
    spy = Spy()
    with running(spy, greeting_delay=0.5) as c, Raw(c.port) as raw:
        raw.send(EHLO + MAIL)
        assert raw.read_to_eof() == SYNC_554
    assert spy.log == []


def test_early_talker_one_byte_is_enough() -> None:
    with running(Spy(), greeting_delay=0.5) as c, Raw(c.port) as raw:
        raw.send(b"\r\n")
        assert raw.read_to_eof() == SYNC_554


def test_patient_client_is_served_after_the_greeting_delay() -> None:
    with running(Spy(), greeting_delay=0.3) as c, Raw(c.port) as raw:
        started = time.monotonic()
        assert raw.reply().startswith(b"220 mx.test ")
        assert time.monotonic() - started >= 0.25
        raw.send(EHLO)
        assert raw.reply().startswith(b"250-mx.test")


def test_a_client_gone_before_the_banner_leaves_no_connection_behind() -> None:
    with running(Spy(), greeting_delay=0.3) as c:
        assert c.server is not None
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", c.port))
            sock.close()
        time.sleep(0.8)
        assert c.server.connections == 0
