"""Issue 10, faults 8-10 and 15: what ``ferrosmtp serve`` does with the messages it
accepts. Memory per message is bounded (mbox and stdout stream through a temporary file),
mbox locking waits and breaks stale locks as Postfix does, Maildir's ``tmp/`` is cleaned
at start, and ``--stdout`` never passes terminal control characters to the terminal.
Every test drives a real server over a socket, and each failed before the fix."""

from __future__ import annotations

import contextlib
import mailbox
import os
import re
import smtplib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferrosmtp import handlers
from ferrosmtp.mbox import FromQuoting
from tests.security.support import (
    PYTHON,
    ROOT,
    ServerProcess,
    _stop,
    _wait_for_port,
    cli_server,
)
from tests.server.support import HOST, running

MIB = 1 << 20


def send(port: int, body: bytes, sender: str = "a@b.example", timeout: float = 60) -> None:
    with smtplib.SMTP(HOST, port, timeout=timeout) as client:
        client.sendmail(sender, ["c@d.example"], body)


def big_message(size: int) -> bytes:
    line = b"x" * 998 + b"\r\n"
    return b"Subject: big\r\n\r\n" + line * (size // len(line))


# -- fault 8: memory per message is bounded --------------------------------------------------


@pytest.mark.parametrize("store", ["--mbox", "--stdout"])
def test_fault8_a_30_mib_message_costs_a_bounded_amount_of_memory(
    tmp_path: Path, store: str
) -> None:
    """The mbox handler cost about 13 times the message (30 MiB: +404 MiB)."""
    args = [store, str(tmp_path / "box")] if store == "--mbox" else [store]
    body = big_message(30 * MIB)
    with cli_server(*args, "--max-size", "64M") as server:
        send(server.port, b"Subject: warm-up\r\n\r\nx\r\n")  # imports and buffers in place
        server.reset_hwm()
        base = server.hwm()
        send(server.port, body)
        growth = server.hwm() - base
    assert growth < 16 * 1024, f"peak grew by {growth} KiB for a 30 MiB message"
    if store == "--mbox":
        messages = list(mailbox.mbox(tmp_path / "box"))
        assert len(messages) == 2 and len(messages[1].get_payload()) > 29 * MIB


# -- the mbox form: Postfix's, streamed ------------------------------------------------------


def mbox_form(content: bytes) -> bytes:
    """What FromQuoting must produce, computed on the whole message at once."""
    parts = content.replace(b"\r\n", b"\n").split(b"\n")
    body = b"\n".join(b">" + p if p.startswith(b"From ") else p for p in parts)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return body + b"\n"


@settings(max_examples=300, deadline=None)
@given(
    content=st.lists(
        st.sampled_from([b"From ", b"Fro", b"m ", b"\r", b"\n", b"\r\n", b"x", b">"])
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
)
def test_from_quoting_is_the_same_whatever_the_chunking(content: bytes, cuts: list[int]) -> None:
    quoting = FromQuoting()
    out = b""
    start = 0
    for cut in sorted(cuts):
        out += quoting.feed(content[start:cut])
        start = max(start, cut)
    out += quoting.feed(content[start:]) + quoting.end()
    assert out == mbox_form(content)


def test_mbox_is_readable_by_pythons_mailbox(tmp_path: Path) -> None:
    box = tmp_path / "mail.mbox"
    with running(handlers.Mailbox(box, received=False)) as c:
        send(c.port, b"Subject: one\r\n\r\nFrom here\r\n>From there\r\nend\r\n")
        send(c.port, b"Subject: two\r\n\r\nbody\r\n", sender="")
    first, second = mailbox.mbox(box)
    assert first.get_from().startswith("a@b.example ")
    assert first.get_payload() == ">From here\n>From there\nend\n"  # mboxo, as Postfix
    assert second.get_from().startswith("MAILER-DAEMON ")
    assert box.read_bytes().count(b"\nFrom ") == 1  # the only From_ line inside the file


# -- fault 9: mbox locking -------------------------------------------------------------------


def test_fault9_a_small_message_during_a_big_delivery_waits_its_turn(tmp_path: Path) -> None:
    """It got 451 (dot-lock busy) while a 20 MiB message was being appended."""
    box = tmp_path / "box"
    with cli_server("--mbox", str(box), "--max-size", "64M") as server:
        big = threading.Thread(target=send, args=(server.port, big_message(20 * MIB)))
        big.start()
        time.sleep(0.2)
        for _ in range(5):  # small ones, meanwhile
            send(server.port, b"Subject: small\r\n\r\nx\r\n")
        big.join(60)
    assert len(list(mailbox.mbox(box))) == 6


def test_fault9_a_busy_lock_is_waited_for(tmp_path: Path) -> None:
    """Another writer (a mail client, another server) holds the dot-lock for a moment."""
    box = tmp_path / "box"
    lock = tmp_path / "box.lock"
    with running(handlers.Mailbox(box, lock_timeout=10)) as c:
        lock.write_text("12345\n")
        threading.Timer(1.0, lock.unlink).start()
        started = time.monotonic()
        send(c.port, b"Subject: waited\r\n\r\nx\r\n")
        assert time.monotonic() - started >= 0.9
    assert [m["Subject"] for m in mailbox.mbox(box)] == ["waited"]


def test_fault9_a_stale_lock_is_broken(tmp_path: Path) -> None:
    """After a kill -9 mid-delivery the dot-lock stayed, and every delivery failed."""
    box = tmp_path / "box"
    lock = tmp_path / "box.lock"
    lock.write_text("99999\n")
    old = time.time() - 600  # older than Postfix's stale_lock_time (500 s)
    os.utime(lock, (old, old))
    with cli_server("--mbox", str(box)) as server:
        send(server.port, b"Subject: after the crash\r\n\r\nx\r\n")
    assert [m["Subject"] for m in mailbox.mbox(box)] == ["after the crash"]
    assert not lock.exists()


def test_fault9_a_lock_held_for_too_long_is_a_temporary_failure(tmp_path: Path) -> None:
    box = tmp_path / "box"
    (tmp_path / "box.lock").write_text("12345\n")
    with running(handlers.Mailbox(box, lock_timeout=0.5)) as c:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(c.port, b"Subject: x\r\n\r\nx\r\n")
        assert refused.value.smtp_code == 451
    assert not box.exists() or box.read_bytes() == b""


def test_fault9_a_kill_during_delivery_leaves_no_partial_message(tmp_path: Path) -> None:
    """The dot-lock of a killed writer is stale only after 500 s: until then deliveries
    wait; what a writer that failed half-way appended is truncated away."""
    box = tmp_path / "box"
    box.write_bytes(b"From x Thu Jan  1 00:00:00 1970\nSubject: old\n\nold\n\n")
    size = box.stat().st_size

    class Broken:
        def __init__(self) -> None:
            self.writes = 0

        def read(self, n: int = -1) -> bytes:
            self.writes += 1
            if self.writes > 2:
                raise OSError(28, "No space left on device")
            return b"Subject: half\n\n" + b"y" * 100

        def seek(self, *args: object) -> int:
            return 0

    from ferrosmtp import mbox

    with pytest.raises(OSError):
        mbox.append(box, "a@b.example", Broken())  # type: ignore[arg-type]
    assert box.stat().st_size == size
    assert not (tmp_path / "box.lock").exists()


# -- fault 10: Maildir tmp/ --------------------------------------------------------------------


def test_fault10_maildir_tmp_files_older_than_36_hours_are_removed_at_start(
    tmp_path: Path,
) -> None:
    maildir = tmp_path / "maildir"
    (maildir / "tmp").mkdir(parents=True)
    crashed = maildir / "tmp" / "1700000000.M1P1Q1.host"
    recent = maildir / "tmp" / "1700000001.M1P1Q2.host"
    crashed.write_bytes(b"half a message")
    recent.write_bytes(b"a delivery in progress elsewhere")
    old = time.time() - 37 * 3600
    os.utime(crashed, (old, old))
    with cli_server("--maildir", str(maildir)) as server:
        send(server.port, b"Subject: x\r\n\r\nx\r\n")
    assert not crashed.exists()
    assert recent.exists()
    assert len(list((maildir / "new").iterdir())) == 1


# -- fault 15: serve --stdout escapes terminal control characters -----------------------------


SERVE_STDOUT = [PYTHON, "-m", "ferrosmtp", "serve", "--host", HOST, "--port", "0", "--stdout"]


@contextlib.contextmanager
def stdout_server(out: Path) -> Iterator[ServerProcess]:
    with out.open("wb") as sink:
        popen = subprocess.Popen(
            # normalize: a bare CR is then data, and reaches the handler
            [*SERVE_STDOUT, "--bare-newline", "normalize"],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.PIPE,
        )
        try:
            assert popen.stderr is not None
            port = _wait_for_port(popen, re.compile(rb"listening on [\d.]+:(\d+)"), popen.stderr)
            yield ServerProcess(popen, port)
        finally:
            _stop(popen)


def test_fault15_stdout_escapes_terminal_control_characters(tmp_path: Path) -> None:
    out = tmp_path / "stdout"
    evil = (
        "Subject: \x1b]0;pwned\x07\r\n\r\n"
        "\x1b[2J\x1b[31mred\x1b[0m \x9b6n bell\x07 back\x08 del\x7f tab\there\r\n"
        "bare\rcr ünïcödé\r\n"
    ).encode()
    with stdout_server(out) as server:
        send(server.port, evil)
    printed = out.read_bytes().decode("utf-8")
    controls = [c for c in printed if (ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) < 0xA0]
    assert controls == []
    assert "\\x1b]0;pwned\\x07" in printed and "\\x1b[2J\\x1b[31mred" in printed
    assert "\\x9b6n" in printed and "bare\\x0dcr ünïcödé" in printed and "tab\there" in printed
