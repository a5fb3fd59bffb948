"""``Client.execute_command`` and ``SMTPStatus``: aiosmtplib's low-level command call,
kept in step with the session (over real loopback sockets, both codec backends)."""

from __future__ import annotations

from types import ModuleType

import pytest

import ferrosmtp
from ferrosmtp.client import Client, SMTPResponse, SMTPStatus
from ferrosmtp.errors import SMTPServerDisconnected

from .conftest import run
from .fakeserver import fake_server

MESSAGE = b"Subject: x\r\n\r\nHello.\r\n"


def test_any_reply_code_is_returned_and_the_session_goes_on(backend: ModuleType) -> None:
    async def main() -> None:
        async with fake_server() as server:
            async with Client("127.0.0.1", server.port, timeout=5, start_tls=False) as c:
                assert await c.execute_command(b"NOOP") == SMTPResponse(250, "2.0.0 Ok")
                refused = await c.execute_command(b"ETRN", b"example.org")
                assert refused.code == SMTPStatus.command_not_implemented
                assert (await c.execute_command("VRFY", "postmaster")).code == 252
                assert (await c.execute_command(b"HELP")).code == SMTPStatus.help_message
                assert (await c.execute_command(b"RSET")).code == 250
                # The session is still in step: a whole transaction works after them.
                assert await c.sendmail("a@example.org", ["b@example.org"], MESSAGE) == (
                    {},
                    "2.0.0 Ok: queued",
                )
                assert (await c.execute_command(b"QUIT")).code == SMTPStatus.closing
                assert not c.is_connected
            assert b"ETRN example.org" in server.commands

    run(main())


@pytest.mark.parametrize(
    "args",
    [
        (b"MAIL FROM:<a@example.org>",),
        (b"DATA",),
        (b"STARTTLS",),
        (b"AUTH", b"PLAIN"),
        (b"ehlo x",),
        (b"NOOP", b"extra"),
        (b"ETRN x\r\nRSET",),
        (b"X\x00",),
        (b"",),
        (b"X" * 600,),
        (b"\xff",),
    ],
)
def test_commands_that_would_desynchronize_or_inject_write_nothing(
    backend: ModuleType, args: tuple[bytes, ...]
) -> None:
    async def main() -> None:
        async with fake_server() as server:
            async with Client("127.0.0.1", server.port, timeout=5, start_tls=False) as c:
                before = list(server.commands)
                with pytest.raises(ValueError):
                    await c.execute_command(*args)
                assert server.commands == before
                assert (await c.noop()).code == 250  # still usable

    run(main())


def test_not_connected_is_a_disconnect_error() -> None:
    async def main() -> None:
        with pytest.raises(SMTPServerDisconnected):
            await Client("127.0.0.1", 1, timeout=1).execute_command(b"NOOP")

    run(main())


def test_smtp_status_matches_aiosmtplib() -> None:
    import aiosmtplib  # a test dependency: the API ferrosmtp's client follows

    assert {m.name: m.value for m in ferrosmtp.SMTPStatus} == {
        m.name: m.value for m in aiosmtplib.SMTPStatus
    }
