"""Faults: handlers that raise, clients that vanish, storage that fails, a server that is
killed. The promise under test (issue 5): a message acknowledged with 250 is never lost,
and nothing half-done is ever delivered or left behind."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import smtplib
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from ferrosmtp import handlers
from ferrosmtp.server import Controller
from tests.security.support import cli_server, server_process
from tests.server.support import HOST, Certs, Raw, running

MESSAGE = b"Subject: fault\r\n\r\nbody\r\n"
INTERNAL = b"451 4.3.0 Error: internal server error\r\n"


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.exists() else []


# -- handlers that raise -------------------------------------------------------------------


class Raises:
    """Each hook named in ``fail`` raises the first time it is called, then works."""

    def __init__(self, *fail: str) -> None:
        self.fail = set(fail)
        self.delivered: list[bytes] = []

    def _maybe(self, name: str) -> None:
        if name in self.fail:
            self.fail.discard(name)
            raise RuntimeError(f"boom in {name}")

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self._maybe("EHLO")
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self._maybe("MAIL")
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self._maybe("RCPT")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        self._maybe("NOOP")
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self._maybe("DATA")
        self.delivered.append(envelope.content)
        return "250 OK"


@pytest.mark.parametrize("hook", ["EHLO", "MAIL", "RCPT", "NOOP", "DATA"])
def test_a_raising_hook_gets_451_and_the_session_goes_on(hook: str) -> None:
    handler = Raises(hook)
    with running(handler) as c, Raw(c.port) as raw:
        raw.reply()
        steps = [
            (b"EHLO client.example\r\n", "EHLO"),
            (b"NOOP\r\n", "NOOP"),
            (b"MAIL FROM:<a@example.com>\r\n", "MAIL"),
            (b"RCPT TO:<b@example.net>\r\n", "RCPT"),
        ]
        for command, name in steps:
            raw.send(command)
            reply = raw.reply()
            if name == hook:
                assert reply == INTERNAL
                raw.send(command)  # the same command again now works
                reply = raw.reply()
            assert reply.startswith(b"250"), (name, reply)
        raw.send(b"DATA\r\n")
        assert raw.reply().startswith(b"354")
        raw.send(MESSAGE + b".\r\n")
        if hook == "DATA":
            assert raw.reply() == INTERNAL
            raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
            assert [r[:3] for r in raw.replies(3)] == [b"250", b"250", b"354"]
            raw.send(MESSAGE + b".\r\n")
        assert raw.reply().startswith(b"250")
        raw.send(b"QUIT\r\n")
        assert raw.read_to_eof() == b"221 2.0.0 Bye\r\n"
    assert handler.delivered == [MESSAGE]


# -- clients that vanish -----------------------------------------------------------------------


class SlowMaildir(handlers.Maildir):
    """A Maildir whose RCPT hook takes a while: a client can vanish while it runs."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        await asyncio.sleep(0.1)
        envelope.rcpt_tos.append(address)
        return "250 OK"


def run_in_loop(controller: Controller, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, controller.loop).result(5)


async def count_tasks() -> int:
    return len(asyncio.all_tasks()) - 1  # not this one


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (a crashed client or a middlebox)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def vanish_mid_data(port: int, rst: bool) -> None:
    raw = Raw(port)
    raw.greet()
    raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
    raw.replies(3)
    raw.send(b"Subject: half\r\n\r\n" + b"x" * 200_000)
    time.sleep(0.05)
    if rst:
        reset(raw.sock)
    else:
        raw.close()


def vanish_mid_bdat(port: int) -> None:
    with Raw(port) as raw:
        raw.greet()
        raw.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 100\r\n" + b"y" * 100
        )
        raw.replies(3)
        raw.send(b"BDAT 500000 LAST\r\n" + b"z" * 1000)
        time.sleep(0.05)


def vanish_in_a_slow_hook(port: int) -> None:
    with Raw(port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n")
        time.sleep(0.05)  # gone while handle_RCPT sleeps


def vanish_after_data_without_content(port: int) -> None:
    with Raw(port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        raw.replies(3)


def vanish_mid_auth(port: int) -> None:
    with Raw(port) as raw:
        raw.greet()
        raw.send(b"AUTH LOGIN\r\n")
        raw.reply()


def vanish_after_starttls(port: int) -> None:
    with Raw(port) as raw:
        raw.greet()
        raw.send(b"STARTTLS\r\n")
        raw.reply()
        raw.send(b"\x16\x03\x01\x00")  # the start of a ClientHello, then gone


def test_vanishing_clients_leave_no_message_task_or_file(tmp_path: Path) -> None:
    box = tmp_path / "md"
    certs = Certs()
    with running(
        SlowMaildir(box),
        authenticator=lambda *a: None,
        auth_require_tls=False,
        tls_context=certs.server_context(),
        tls_handshake_timeout=1,
    ) as c:
        assert c.server is not None
        time.sleep(0.1)
        baseline = run_in_loop(c, count_tasks())
        for _ in range(3):
            vanish_mid_data(c.port, rst=False)
            vanish_mid_data(c.port, rst=True)
            vanish_mid_bdat(c.port)
            vanish_in_a_slow_hook(c.port)
            vanish_after_data_without_content(c.port)
            vanish_mid_auth(c.port)
            vanish_after_starttls(c.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if c.server.connections == 0 and run_in_loop(c, count_tasks()) <= baseline:
                break
            time.sleep(0.1)
        assert c.server.connections == 0
        assert run_in_loop(c, count_tasks()) <= baseline
        assert c.server._per_ip == {}  # the per-address counters went back to nothing
        assert files(box / "new") == []
        assert files(box / "tmp") == []
        # and the server still works
        with smtplib.SMTP(HOST, c.port, timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
    assert len(files(box / "new")) == 1
    assert files(box / "tmp") == []


# -- storage that fails ------------------------------------------------------------------------


BIG = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 300  # 300 KB


def test_file_size_limit_mid_message_answers_4xx_and_delivers_nothing(tmp_path: Path) -> None:
    """A real storage fault (RLIMIT_FSIZE in the server process: EFBIG while streaming
    into tmp/): a 4xx, nothing in new/, and the next message on the session is stored."""
    box = tmp_path / "md"
    with server_process("maildir", maildir=box, fsize=100_000) as srv:
        with smtplib.SMTP(HOST, srv.port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPDataError) as info:
                client.sendmail("a@example.com", ["b@example.net"], BIG)
            assert info.value.smtp_code in (451, 452)
            assert client.sendmail("a@example.com", ["b@example.net"], MESSAGE) == {}
    [stored] = files(box / "new")
    assert stored.read_bytes().endswith(MESSAGE)


def test_file_size_limit_mid_message_leaves_no_partial_file_in_tmp(tmp_path: Path) -> None:
    """The handler removes its partial file when a chunk cannot be written (it used to
    stay in tmp/ for good, SECURITY-findings F2)."""
    box = tmp_path / "md"
    with server_process("maildir", maildir=box, fsize=100_000) as srv:
        with smtplib.SMTP(HOST, srv.port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPDataError):
                client.sendmail("a@example.com", ["b@example.net"], BIG)
    assert files(box / "tmp") == []


class NoSpaceAfter(handlers.Maildir):
    """A Maildir on a disk that fills up after ``room`` bytes of a message."""

    room = 50_000

    def _open(self, server: Any, session: Any, envelope: Any) -> Any:
        f, tmp, name = super()._open(server, session, envelope)
        real_write = f.write
        written = [0]

        def write(data: Any) -> int:
            written[0] += len(data)
            if written[0] > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(data)

        f.write = write  # type: ignore[method-assign,assignment]
        return f, tmp, name


def test_disk_full_while_streaming_answers_452(tmp_path: Path) -> None:
    """ENOSPC in the middle of a message: the handler's 452 4.3.1 (not a generic 451), and
    no file anywhere."""
    box = tmp_path / "md"
    with running(NoSpaceAfter(box)) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("a@example.com", ["b@example.net"], BIG)
        assert files(box / "new") == []
        assert (info.value.smtp_code, info.value.smtp_error) == (
            452,
            b"4.3.1 Error: insufficient system storage",
        )
        assert files(box / "tmp") == []


def test_disk_full_while_streaming_delivers_nothing(tmp_path: Path) -> None:
    box = tmp_path / "md"
    with running(NoSpaceAfter(box)) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("a@example.com", ["b@example.net"], BIG)
        assert info.value.smtp_code in (451, 452)
        assert client.noop()[0] == 250
    assert files(box / "new") == []


def test_unusable_tmp_directory_answers_451(tmp_path: Path) -> None:
    """tmp/ replaced by a file (root ignores permission bits, so no chmod here)."""
    box = handlers.Maildir(tmp_path / "md")
    (tmp_path / "md" / "tmp").rmdir()
    (tmp_path / "md" / "tmp").write_bytes(b"")
    with running(box) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
        assert info.value.smtp_code == 451
        assert client.noop()[0] == 250
    assert files(tmp_path / "md" / "new") == []


# -- a server that dies ------------------------------------------------------------------------


def test_sigkill_mid_transaction_gives_the_client_a_clear_error(tmp_path: Path) -> None:
    box = tmp_path / "md"
    with cli_server("--maildir", str(box)) as srv:
        client = smtplib.SMTP(HOST, srv.port, timeout=10)
        try:
            client.ehlo("client.example")
            client.mail("a@example.com")
            client.rcpt("b@example.net")
            assert client.docmd("DATA")[0] == 354
            client.send(b"Subject: cut\r\n\r\nfirst half\r\n")
            time.sleep(0.1)
            os.kill(srv.pid, signal.SIGKILL)
            srv.popen.wait(5)
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.send(b"second half\r\n.\r\n")
                client.getreply()
        finally:
            client.close()
    assert files(box / "new") == []  # a message never acknowledged is never delivered


@pytest.mark.parametrize("connections", [1, 4])
def test_every_acknowledged_message_survives_sigkill(tmp_path: Path, connections: int) -> None:
    """N messages to ``ferrosmtp serve --maildir``; SIGKILL right after the last 250:
    every acknowledged message is in new/, complete."""
    box = tmp_path / "md"
    n = 40
    acknowledged: list[bytes] = []
    with cli_server("--maildir", str(box)) as srv:
        clients = [smtplib.SMTP(HOST, srv.port, timeout=10) for _ in range(connections)]
        try:
            for i in range(n):
                body = b"Subject: durable %d\r\n\r\n" % i + b"line %d\r\n" % i * 50
                clients[i % connections].sendmail("a@example.com", ["b@example.net"], body)
                acknowledged.append(body)
            os.kill(srv.pid, signal.SIGKILL)  # no shutdown, no flush: a power cut for Python
            srv.popen.wait(5)
        finally:
            for client in clients:
                client.close()
    stored = [path.read_bytes() for path in files(box / "new")]
    assert len(stored) == n
    assert sorted(s.split(b"Subject: ", 1)[1] for s in stored) == sorted(
        b.split(b"Subject: ", 1)[1] for b in acknowledged
    )
