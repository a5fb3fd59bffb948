"""Checklist B15: reply injection through a handler's status text, EHLO name injection,
and what reaches the Received: header."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferrosmtp import handlers
from tests.security.support import codes
from tests.server.support import Raw, running


class Says:
    """A RCPT hook that answers with a fixed status string (as if built from input)."""

    def __init__(self, status: Any) -> None:
        self.status = status

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> Any:
        envelope.rcpt_tos.append(address)
        return self.status


def rcpt_then_noop(status: Any) -> tuple[bytes, bytes]:
    """(the server's answer to RCPT, its answer to the NOOP sent with it)."""
    noop = b"250 2.0.0 OK\r\n"
    with running(Says(status)) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"EHLO client.example\r\n")
        raw.reply()
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert raw.reply() == b"250 2.1.0 OK\r\n"
        raw.send(b"RCPT TO:<b@example.net>\r\nNOOP\r\n")  # NOOP may end a group
        try:
            wire = raw.read_until(noop)
        except ConnectionError:  # closed before the NOOP was answered
            wire = raw.buf
        if wire.endswith(noop):
            return wire[: -len(noop)], noop
        return wire, b""


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("250 ok\r\n250 fake", b"250-2.1.5 ok\r\n250 2.1.5 fake\r\n"),
        ("250 ok\n250 fake", b"250-2.1.5 ok\r\n250 2.1.5 fake\r\n"),
        ("250-ok\r\n250 fine", b"250-2.1.5 ok\r\n250 2.1.5 fine\r\n"),
        ("ok\r\n250 fake", b"451 4.3.0 Error: internal server error\r\n"),
        ("250 ok\r\n354 fake", b"451 4.3.0 Error: internal server error\r\n"),
        ("250 ok\r\n\r\n250 fake", b"451 4.3.0 Error: internal server error\r\n"),
        ("", b"451 4.3.0 Error: internal server error\r\n"),
        ("2500 x", b"451 4.3.0 Error: internal server error\r\n"),
        (42, b"451 4.3.0 Error: internal server error\r\n"),
    ],
)
def test_a_status_with_line_breaks_is_one_reply(status: Any, expected: bytes) -> None:
    """The client sees exactly one reply to RCPT (multi-line, or a 451), never two; the
    session stays in step (NOOP gets its own 250)."""
    first, after = rcpt_then_noop(status)
    assert first == expected
    assert after == b"250 2.0.0 OK\r\n"


CONTROL = ["250 ok\r250 fake", "250 ok\x00x", "250 ok\x1b[31mred", "250 tab\tok\x7f"]


@pytest.mark.parametrize("status", CONTROL)
def test_control_characters_in_a_status_never_reach_the_wire(status: str) -> None:
    first, after = rcpt_then_noop(status)
    assert len(codes(first)) == 1, first
    wire = first + after
    for byte in (b"\x00", b"\x1b", b"\x7f"):
        assert byte not in wire
    assert b"\r" not in wire.replace(b"\r\n", b"")
    assert b"fake" not in wire.split(b"\r\n")[0][:4]


@pytest.mark.parametrize("status", [*CONTROL, "600 out of range", "199 too low"])
def test_a_status_with_control_characters_does_not_end_the_session(status: str) -> None:
    """Checklist B15: control bytes are replaced, an impossible code is a 451; either way
    the session goes on."""
    first, after = rcpt_then_noop(status)
    assert codes(first)[0] in (250, 451), first
    assert after == b"250 2.0.0 OK\r\n"


@pytest.mark.parametrize(
    "name",
    [
        b"evil\x01",
        b"(a)",
        b"a..b",
        b"evil\x00.example",
        b"evil\x1b[2J",
        b"evil\x7f",
        b"a b c",
        "ünïcode.example".encode(),
        b"-lead.example",
        b"x" * 64 + b".example",
        b"[256.1.1.1]",
        b"evil\rRCPT",
        b"",
    ],
)
def test_bad_ehlo_names_are_refused(name: bytes) -> None:
    with running(handlers.Sink()) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"EHLO " + name + b"\r\n")
        reply = raw.reply()
        assert reply[:4] in (b"500 ", b"501 "), reply
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert raw.reply().startswith(b"503 ")  # the bad EHLO did not open a session


@pytest.mark.parametrize("name", [b"[IPv6:2001:db8::5]", b"[192.0.2.1]", b"Mixed-Case.Example"])
def test_odd_valid_ehlo_names_give_one_received_header_line(tmp_path: Path, name: bytes) -> None:
    with running(handlers.Maildir(tmp_path / "md")) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"EHLO " + name + b"\r\n")
        assert raw.reply().startswith(b"250-")
        raw.send(
            b'MAIL FROM:<"odd \\"quoted\\" local"@example.com>\r\n'
            b"RCPT TO:<@route.example:b@example.net>\r\nDATA\r\n"
        )
        assert [r[:3] for r in raw.replies(3)] == [b"250", b"250", b"354"]
        raw.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert raw.reply().startswith(b"250 ")
    [stored] = list((tmp_path / "md" / "new").iterdir())
    header, _, rest = stored.read_bytes().partition(b"Subject: x\r\n")
    assert rest == b"\r\nbody\r\n"
    # One header: the first line starts with "Received:", every other line is folded.
    lines = header.split(b"\r\n")
    assert lines[0].startswith(b"Received: from " + name + b" ([127.0.0.1])")
    assert lines[-1] == b""
    assert all(line.startswith(b"\t") for line in lines[1:-1]), lines
    assert b"for <b@example.net>" in header  # the route is not part of the mailbox
