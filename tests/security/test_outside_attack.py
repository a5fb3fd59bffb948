"""Issue 10: the faults an outside review and an adversarial probe found, each replayed
over a real socket against a live server (both codec backends where the codec is
involved). Every test here failed on the code before the fix.

Faults 4-6 and 11-12 (PROXY protocol, AUTH) are in ``test_outside_attack_auth.py``;
7 (error counting) in ``test_floods.py``; 8-10 and 15 (storage) in
``tests/server/test_storage.py``; 13 in ``tests/server/test_passwd.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ferrosmtp import _core, _pure
from ferrosmtp.handlers import Sink
from tests.security.support import cli_server
from tests.server.support import Raw, running

BACKENDS = pytest.mark.parametrize("backend", [_core, _pure], ids=["rust", "pure"])


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]


# -- fault 1: SIZE= with Unicode digits ------------------------------------------------------


@BACKENDS
@pytest.mark.parametrize("size", ["²", "1²", "١٢٣", "𝟗", "٣" * 30, "12" + "\u0663"])
def test_fault1_unicode_digits_in_size_are_a_syntax_error(
    backend: ModuleType, size: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``str.isdigit()`` took "²", and ``int()`` then raised: 421 and a traceback."""
    caplog.set_level(logging.INFO)
    with running(Sink(), codec=backend) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(f"MAIL FROM:<a@b.example> SMTPUTF8 SIZE={size}\r\n".encode())
        assert raw.reply() == b"501 5.5.4 Syntax error in SIZE parameter\r\n"
        raw.send(b"MAIL FROM:<a@b.example> SIZE=100\r\n")  # the session goes on
        assert raw.reply() == b"250 2.1.0 OK\r\n"
    no_traceback(caplog)


# -- fault 2: a refused BDAT transaction stays refused ---------------------------------------


class Spy:
    def __init__(self) -> None:
        self.messages: list[tuple[Any, list[str], Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def test_fault2_rcpt_and_data_after_a_refused_chunk_are_refused() -> None:
    spy = Spy()
    with running(spy, data_size_limit=1024) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<a@b.example>\r\n")
        assert raw.reply() == b"250 2.1.0 OK\r\n"
        raw.send(b"RCPT TO:<c@d.example>\r\n")
        assert raw.reply() == b"250 2.1.5 OK\r\n"
        raw.send(b"BDAT 10\r\n0123456789")
        assert raw.reply() == b"250 2.0.0 10 octets received\r\n"
        raw.send(b"BDAT 2000\r\n" + b"x" * 2000)  # over the size limit: refused, skipped
        assert raw.reply().startswith(b"552 5.3.4 ")
        # Postfix: nothing but BDAT and RSET until the transaction ends
        raw.send(b"RCPT TO:<e@f.example>\r\n")
        assert raw.reply() == b"503 5.5.1 Error: RCPT after BDAT\r\n"
        raw.send(b"DATA\r\n")
        assert raw.reply() == b"503 5.5.1 Error: DATA after BDAT\r\n"
        raw.send(b"MAIL FROM:<g@h.example>\r\n")
        assert raw.reply() == b"503 5.5.1 Error: nested MAIL command\r\n"
        raw.send(b"BDAT 3 LAST\r\nabc")
        assert raw.reply() == b"503 5.5.1 Error: this message was refused; send RSET\r\n"
        raw.send(b"RSET\r\n")
        assert raw.reply() == b"250 2.0.0 OK\r\n"
    assert spy.messages == []


def test_fault2_serve_maildir_stores_nothing_from_a_refused_bdat(tmp_path: Path) -> None:
    maildir = tmp_path / "maildir"
    with (
        cli_server("--maildir", str(maildir), "--max-size", "1K") as server,
        Raw(server.port) as raw,
    ):
        raw.greet()
        raw.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
        assert raw.replies(2) == [b"250 2.1.0 OK\r\n", b"250 2.1.5 OK\r\n"]
        raw.send(b"BDAT 2000\r\n" + b"x" * 2000)
        assert raw.reply().startswith(b"552 ")
        raw.send(b"RCPT TO:<e@f.example>\r\n")
        assert raw.reply().startswith(b"503 ")
        raw.send(b"DATA\r\n")
        assert raw.reply().startswith(b"503 ")
        raw.send(b"QUIT\r\n")
        assert raw.reply().startswith(b"221 ")
    assert list((maildir / "new").iterdir()) == []
    assert list((maildir / "tmp").iterdir()) == []


# -- fault 3: an unparseable BDAT line of any length -----------------------------------------


@BACKENDS
@pytest.mark.parametrize("length", [600, 5000, 100_000])
def test_fault3_an_overlong_bdat_line_closes_instead_of_smuggling(
    backend: ModuleType, length: int
) -> None:
    """Its chunk was read as commands: ``NOOP smuggled`` got 250."""
    with running(Sink(), codec=backend) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
        assert raw.replies(2) == [b"250 2.1.0 OK\r\n", b"250 2.1.5 OK\r\n"]
        raw.send(b"BDAT 15 " + b"X" * length + b"\r\nNOOP smuggled\r\n")
        assert raw.read_to_eof() == b"521 5.5.4 Syntax: BDAT count [LAST]\r\n"


@BACKENDS
@pytest.mark.parametrize(
    "line",
    [b"BDAT 1x", b"BDAT 15 LAST x", b"BDAT \xff", b"bdat -1", b"BDAT 99999999999999999999999"],
)
def test_fault3_any_unparseable_bdat_line_closes(backend: ModuleType, line: bytes) -> None:
    with running(Sink(), codec=backend) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(line + b"\r\nNOOP smuggled\r\n")
        assert raw.read_to_eof() == b"521 5.5.4 Syntax: BDAT count [LAST]\r\n"
