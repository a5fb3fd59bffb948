"""Regressions of the client, each over a real loopback socket: the client faults found by
running aiosmtplib's own test suite against ferrosmtp (issue 9) and by an outside attack
(issue 10, fault 14). Each test failed before its fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

import ferrosmtp.client.auth as auth_module
from ferrosmtp.client import Client
from ferrosmtp.errors import (
    SMTPConnectError,
    SMTPException,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)

from .conftest import run
from .fakeserver import Behaviour, FakeServer, fake_server, verbs
from .tls import server_context

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: test\r\n\r\nHello.\r\n"


def client(server: FakeServer, **options: Any) -> Client:
    options.setdefault("timeout", 5)
    options.setdefault("local_hostname", "client.test")
    return Client("127.0.0.1", server.port, **options)


# --- Fault 14 (issue 10): no AUTH exchange in cleartext to a remote peer --------------------


def cram_md5_auth(line: bytes) -> bytes:
    if line.startswith(b"AUTH CRAM-MD5"):
        return b"334 PDEyMzQ1QHRlc3Q+\r\n"
    return b"235 2.7.0 ok\r\n"


@pytest.mark.parametrize("mechanisms", ["CRAM-MD5", "CRAM-MD5 PLAIN LOGIN"])
def test_no_cram_md5_in_cleartext_to_a_remote_peer(
    mechanisms: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``start_tls=None`` and a username, to a server that offers CRAM-MD5 and no
    STARTTLS: connecting fails before any AUTH command is sent (CRAM-MD5 shows the user
    name and a crackable digest). The peer is loopback, seen as remote."""
    monkeypatch.setattr(auth_module, "_is_loopback", lambda peer: False)

    async def main() -> None:
        async with fake_server(capabilities=[f"AUTH {mechanisms}"], auth=cram_md5_auth) as server:
            with pytest.raises(SMTPException, match="unencrypted"):
                await client(server, username="u", password="p").connect()
            assert b"AUTH" not in verbs(server)
            async with client(server) as c:  # the methods themselves, called directly
                with pytest.raises(SMTPException, match="unencrypted"):
                    await c.auth_crammd5("u", "p")
                with pytest.raises(SMTPException, match="unencrypted"):
                    await c.login("u", "p")
            assert b"AUTH" not in verbs(server)
            # Allowed explicitly, it goes ahead.
            async with client(server, username="u", password="p", allow_insecure_auth=True):
                pass
            assert verbs(server).count(b"AUTH") == 1

    run(main())


# --- Issue 9: the client fixes of every namespace -----------------------------------------


@pytest.mark.parametrize("verb", ["vrfy", "expn"])
@pytest.mark.parametrize(
    "argument",
    [
        "test@example.com> AUTH=<attacker@example.com>",
        "test@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;<attacker@example.com",
        "test@example.com> SIZE=1",
        "postmaster SMTPUTF8",
        "test@example.com\r\nRSET",
    ],
)
def test_vrfy_and_expn_refuse_argument_injection(verb: str, argument: str) -> None:
    async def main() -> None:
        async with fake_server() as server, client(server) as c:
            with pytest.raises(ValueError):
                await getattr(c, verb)(argument)
            response = await getattr(c, verb)("test@example.com")  # the session is intact
            assert response.code == 252
            for allowed in ("postmaster", '"John Smith"', "<test@example.com>"):
                assert (await getattr(c, verb)(allowed)).code == 252
        sent = [line for line in server.commands if line[:4].upper() in (b"VRFY", b"EXPN")]
        assert [line[5:] for line in sent] == [
            b"test@example.com",
            b"postmaster",
            b'"John Smith"',
            b"<test@example.com>",
        ]

    run(main())


@pytest.mark.parametrize("pipelining", [False, True])
def test_refused_sender_raises_sender_refused_and_resets(pipelining: bool) -> None:
    """Without PIPELINING the client used to go on to RCPT after a refused MAIL and fail
    with a bare SMTPException; now no RCPT follows, the refusal is SMTPSenderRefused with
    the server's code and text and the sender, and RSET is sent."""
    capabilities = ["SIZE 10485760", "8BITMIME"] + (["PIPELINING"] if pipelining else [])

    async def main() -> None:
        async with fake_server(
            capabilities=capabilities, reject_mail=b"553 5.1.8 sender rejected\r\n"
        ) as server:
            async with client(server) as c:
                with pytest.raises(SMTPSenderRefused) as info:
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert info.value.args == (553, "5.1.8 sender rejected", "a@example.org")
                assert (await c.noop()).code == 250  # still in step
            sent = verbs(server)
            assert sent[sent.index(b"MAIL") + (3 if pipelining else 1)] == b"RSET"
            if not pipelining:
                assert b"RCPT" not in sent and b"DATA" not in sent

    run(main())


def test_no_data_without_pipelining_when_every_recipient_is_refused() -> None:
    async def main() -> None:
        async with fake_server(
            capabilities=["8BITMIME"], reject_rcpt={"b@example.org": b"550 5.1.1 no\r\n"}
        ) as server:
            async with client(server) as c:
                with pytest.raises(Exception, match="550") as info:
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert type(info.value).__name__ == "SMTPRecipientsRefused"
            sent = verbs(server)
            assert b"DATA" not in sent and sent[sent.index(b"RCPT") + 1] == b"RSET"

    run(main())


class _Help:
    """An aiosmtpd handler that records the RSETs it sees."""

    def __init__(self) -> None:
        self.resets = 0

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.resets += 1
        return "250 OK"


@contextlib.contextmanager
def aiosmtpd(handler: Any) -> Iterator[int]:
    from aiosmtpd.controller import Controller

    from tests.peers import free_port

    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def test_help_returns_the_text_of_a_250_reply_and_aiosmtpd_refusals_reset() -> None:
    """aiosmtpd answers HELP with 250 (not 214), and refuses unknown MAIL parameters with
    555 without offering PIPELINING: a real peer for both fixes."""
    handler = _Help()

    async def main(port: int) -> None:
        async with Client("127.0.0.1", port, timeout=5, local_hostname="client.test") as c:
            text = await c.help()
            assert text.startswith("Supported commands:") and "EHLO" in text
            with pytest.raises(SMTPSenderRefused) as info:
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE, mail_options=["X=1"])
            assert info.value.code == 555 and info.value.sender == "a@example.org"
            assert handler.resets == 1
            refused, _ = await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert refused == {}

    with aiosmtpd(handler) as port:
        run(main(port))


def test_after_a_read_timeout_the_next_command_meets_a_closed_connection() -> None:
    async def main() -> None:
        async with fake_server(silent_after="NOOP") as server:
            c = client(server)
            await c.connect()
            with pytest.raises(SMTPReadTimeoutError):
                await c.noop(timeout=0.2)
            assert not c.is_connected
            with pytest.raises(SMTPServerDisconnected) as info:
                await c.noop()
            assert not isinstance(info.value, SMTPReadTimeoutError)
            assert verbs(server).count(b"NOOP") == 1  # nothing more was written
            c.close()

    run(main())


def test_connect_takes_oauth_token_generator() -> None:
    lines: list[bytes] = []

    def xoauth2(line: bytes) -> bytes:
        lines.append(line)
        return b"235 2.7.0 ok\r\n"

    async def token() -> str:
        return "tok3n"

    async def main() -> None:
        async with fake_server(capabilities=["AUTH XOAUTH2"], auth=xoauth2) as server:
            c = client(server)
            await c.connect(username="u@example.org", oauth_token_generator=token)
            assert c.oauth_token_generator is token
            await c.quit()
        assert len(lines) == 1 and lines[0].startswith(b"AUTH XOAUTH2 ")
        import base64

        decoded = base64.b64decode(lines[0].split()[2])
        assert decoded == b"user=u@example.org\x01auth=Bearer tok3n\x01\x01"

    run(main())


def test_local_hostnames_with_surrounding_spaces_are_stripped() -> None:
    async def main() -> None:
        async with fake_server() as server:
            async with client(server, local_hostname="  me.example.com\t") as c:
                assert c.local_hostname == "me.example.com"
                await c.ehlo(hostname=" other.example.com ")
                await c.helo(hostname="\tthird.example.com")
            with pytest.raises(ValueError):
                Client("127.0.0.1", server.port, local_hostname="bad name.example")
        hellos = [line for line in server.commands if line[:4] in (b"EHLO", b"HELO")]
        assert hellos == [
            b"EHLO me.example.com",
            b"EHLO other.example.com",
            b"HELO third.example.com",
        ]

    run(main())


def test_tls_handshake_failures_keep_the_ssl_error_as_cause(ca: trustme.CA) -> None:
    """The server's certificate is signed by a CA the client does not trust."""

    async def main() -> None:
        async with fake_server(capabilities=["STARTTLS"], tls_context=server_context(ca)) as s:
            with pytest.raises(SMTPConnectError) as info:
                await client(s, start_tls=True).connect()
            assert isinstance(info.value.__cause__, ssl.SSLError)
        async with FakeServer(Behaviour(), implicit_tls=server_context(ca)) as s:
            with pytest.raises(SMTPConnectError) as info:
                await client(s, use_tls=True).connect()
            assert isinstance(info.value.__cause__, ssl.SSLError)

    run(main())


def test_replies_before_an_unsolicited_one_still_count() -> None:
    """A server answers NOOP, then says an unasked ``221`` and closes (aiosmtplib's
    suite does this): the NOOP's reply is good and is returned; the next command meets
    the closed connection. The extra reply is never paired with a command."""

    async def main() -> None:
        async with fake_server() as server:
            c = client(server)
            await c.connect()
            session = server.sessions[0]
            original = session._reply_to

            def noop_then_bye(verb: str, arg: str, line: bytes) -> None:
                if verb == "NOOP":
                    session.write(b"250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n")
                    return
                original(verb, arg, line)

            session._reply_to = noop_then_bye  # type: ignore[method-assign]
            assert (await c.noop()).code == 250
            await asyncio.sleep(0.05)
            with pytest.raises(SMTPProtocolError, match="unsolicited"):
                await c.rset()
            assert verbs(server).count(b"RSET") == 0
            c.close()

    run(main())


def test_concurrent_connects_take_turns() -> None:
    """Two tasks connect one client at once: the second waits until the first connection
    is closed, then opens its own (as aiosmtplib's connect lock); it used to open a second
    connection at once, overwriting (and leaking) the first. A cancelled connect leaves
    nothing behind, and a dead connection does not block the next connect."""

    async def main() -> None:
        async with fake_server() as server:
            c = client(server)
            first, second = asyncio.ensure_future(c.connect()), asyncio.ensure_future(c.connect())
            await first
            await asyncio.sleep(0.1)
            assert not second.done() and len(server.sessions) == 1
            await c.noop()
            await c.quit()
            assert (await asyncio.wait_for(second, 5)).code == 220
            assert len(server.sessions) == 2 and server.sessions[0].transport is None
            with pytest.raises(Exception, match="already connected"):
                await c.connect()
            server.sessions[1].close()  # the server hangs up: the next connect goes ahead
            await asyncio.sleep(0.1)
            server.behaviour.greeting = b""  # a server that never greets
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.connect(), 0.2)
            server.behaviour.greeting = b"220 fake.test ESMTP ready\r\n"
            await asyncio.wait_for(c.connect(), 5)
            assert c.is_connected
            await c.quit()

    run(main())


def test_tasks_entering_async_with_at_once_take_turns() -> None:
    """aiosmtplib's suite enters ``async with`` on one client from several tasks at
    once: each gets the connection in turn, one connection open at a time."""
    open_at_each_message: list[int] = []

    async def main() -> None:
        async with fake_server() as server:
            server.behaviour.on_message = lambda _: open_at_each_message.append(
                sum(1 for session in server.sessions if session.transport is not None)
            )
            c = client(server)

            async def one(n: int) -> None:
                async with c:
                    await c.sendmail("a@example.org", [f"r{n}@example.org"], MESSAGE)

            await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(5))), 10)
            assert not c.is_connected
            assert len(server.sessions) == 5 and len(server.messages) == 5
            assert open_at_each_message == [1] * 5
            assert verbs(server).count(b"QUIT") == 5

    run(main())
