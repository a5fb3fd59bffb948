"""Client over real loopback sockets against a scriptable fake server (fakeserver.py).

These tests look at the bytes the server received, read by read: they prove pipelining
(MAIL, RCPT and DATA in one read), that nothing is sent after a refusal that should stop
the client, and how the client reacts to servers that misbehave.
"""

from __future__ import annotations

import asyncio
import email.message
from pathlib import Path
from types import ModuleType

import pytest
import trustme

import ferrosmtp.client.auth as auth_module
from ferrosmtp.client import Client, SMTPResponse, send
from ferrosmtp.errors import (
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPServiceUnavailable,
)

from .conftest import run
from .fakeserver import FakeServer, fake_server, verbs
from .tls import client_context, server_context

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: test\r\n\r\nHello.\r\n"


def client(server: FakeServer, **options: object) -> Client:
    options.setdefault("timeout", 5)
    options.setdefault("local_hostname", "client.test")
    return Client("127.0.0.1", server.port, **options)  # type: ignore[arg-type]


# --- Pipelining and reply matching ------------------------------------------------------


def test_mail_rcpt_data_arrive_in_one_read(backend: ModuleType) -> None:
    async def main() -> None:
        async with fake_server() as server, client(server) as c:
            result = await c.sendmail("a@example.org", ["b@example.org", "c@example.org"], MESSAGE)
            assert result == ({}, "2.0.0 Ok: queued")
            chunk = server.read_containing(b"MAIL FROM:", b"RCPT TO:<b@", b"RCPT TO:<c@", b"DATA")
            assert chunk is not None, server.reads
            assert chunk.startswith(b"MAIL FROM:<a@example.org> SIZE=")
            (message,) = server.messages
            assert message.content == MESSAGE
            assert message.rcpt_to == ["b@example.org", "c@example.org"]

    run(main())


def test_without_pipelining_commands_go_one_by_one(backend: ModuleType) -> None:
    async def main() -> None:
        async with fake_server(capabilities=["SIZE 100000"]) as server, client(server) as c:
            await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert server.read_containing(b"MAIL FROM:", b"RCPT TO:") is None
            assert server.read_containing(b"RCPT TO:", b"DATA") is None
            assert len(server.messages) == 1

    run(main())


def test_refused_recipient_is_reported_and_others_get_the_message() -> None:
    async def main() -> None:
        refusal = b"550 5.1.1 <c@example.org>: Recipient address rejected\r\n"
        async with fake_server(reject_rcpt={"c@example.org": refusal}) as server:
            async with client(server) as c:
                refused, reply = await c.sendmail(
                    "a@example.org", ["b@example.org", "c@example.org"], MESSAGE
                )
                assert refused == {
                    "c@example.org": SMTPResponse(
                        550, "5.1.1 <c@example.org>: Recipient address rejected"
                    )
                }
                assert reply == "2.0.0 Ok: queued"
                assert server.messages[0].rcpt_to == ["b@example.org", "c@example.org"]

    run(main())


def test_all_recipients_refused_raises_and_resets() -> None:
    async def main() -> None:
        no = b"550 5.1.1 no such user\r\n"
        async with fake_server(reject_rcpt={"b@example.org": no, "c@example.org": no}) as server:
            async with client(server) as c:
                with pytest.raises(SMTPRecipientsRefused) as info:
                    await c.sendmail("a@example.org", ["b@example.org", "c@example.org"], MESSAGE)
                assert [r.recipient for r in info.value.recipients] == [
                    "b@example.org",
                    "c@example.org",
                ]
                assert [r.code for r in info.value.recipients] == [550, 550]
                assert verbs(server)[-1] == b"RSET"
                assert not server.messages
                # the connection is still good for the next message
                await c.sendmail("a@example.org", ["d@example.org"], MESSAGE)
                assert len(server.messages) == 1

    run(main())


def test_refused_sender_raises_and_connection_stays_usable() -> None:
    async def main() -> None:
        async with fake_server(reject_mail=b"553 5.7.1 sender rejected\r\n") as server:
            async with client(server) as c:
                with pytest.raises(SMTPSenderRefused) as info:
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert (info.value.code, info.value.sender) == (553, "a@example.org")
                server.behaviour.reject_mail = None
                assert (await c.sendmail("a@example.org", ["b@example.org"], MESSAGE))[0] == {}

    run(main())


def test_354_despite_refused_recipients_sends_only_a_dot() -> None:
    async def main() -> None:
        async with fake_server(
            reject_rcpt={"b@example.org": b"550 no\r\n"}, data_without_recipients=True
        ) as server:
            async with client(server) as c:
                with pytest.raises(SMTPRecipientsRefused):
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                # RFC 2920 §3.1: the client sends a lone "." and the content never goes out
                assert [m.content for m in server.messages] == [b""]
                assert b"Hello." not in b"".join(server.reads)
                assert (await c.sendmail("a@example.org", ["c@example.org"], MESSAGE))[0] == {}

    run(main())


def test_data_refused() -> None:
    async def main() -> None:
        async with fake_server(data_reply=b"451 4.3.0 try later\r\n") as server:
            async with client(server) as c:
                with pytest.raises(SMTPDataError) as info:
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert info.value.code == 451
                assert verbs(server)[-1] == b"RSET"

    run(main())


def test_final_reply_refused() -> None:
    async def main() -> None:
        async with fake_server(final_reply=b"554 5.7.1 spam\r\n") as server, client(server) as c:
            with pytest.raises(SMTPDataError) as info:
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert (info.value.code, info.value.message) == (554, "5.7.1 spam")
            assert await c.noop() == SMTPResponse(250, "2.0.0 Ok")

    run(main())


def test_concurrent_senders_share_one_connection_and_hand_over() -> None:
    """Content of one message and the next envelope go out in one write."""

    async def main() -> None:
        async with fake_server() as server, client(server) as c:
            results = await asyncio.gather(
                *(c.sendmail("a@example.org", [f"r{i}@example.org"], MESSAGE) for i in range(12))
            )
            assert all(r == ({}, "2.0.0 Ok: queued") for r in results)
            assert sorted(m.rcpt_to[0] for m in server.messages) == sorted(
                f"r{i}@example.org" for i in range(12)
            )
            assert len(server.sessions) == 1
            handed_over = [r for r in server.reads if b"\r\n.\r\nMAIL FROM:" in r]
            assert handed_over, server.reads

    run(main())


# --- Extensions declared for the message ------------------------------------------------


def test_size_is_declared_and_a_too_big_message_is_refused_before_sending() -> None:
    async def main() -> None:
        async with fake_server(capabilities=["PIPELINING", "SIZE 100"]) as server:
            async with client(server) as c:
                await c.sendmail("a@example.org", ["b@example.org"], b"x" * 50)
                assert server.messages[0].mail_params == "SIZE=52"  # CRLF added
                with pytest.raises(SMTPSenderRefused) as info:
                    await c.sendmail("a@example.org", ["b@example.org"], b"x" * 200)
                assert info.value.code == 552
                assert verbs(server).count(b"MAIL") == 1  # the big one never went out

    run(main())


def test_8bitmime_declared_only_for_8bit_content() -> None:
    async def main() -> None:
        async with fake_server() as server, client(server) as c:
            await c.sendmail("a@example.org", ["b@example.org"], "Subject: x\n\nhéllo\n")
            await c.sendmail("a@example.org", ["b@example.org"], "Subject: x\n\nhello\n")
            assert "BODY=8BITMIME" in server.messages[0].mail_params
            assert "BODY" not in server.messages[1].mail_params

    run(main())


def test_smtputf8_added_for_utf8_addresses_and_refused_without_it() -> None:
    async def main() -> None:
        async with fake_server() as server, client(server) as c:
            await c.sendmail("δοκιμή@παράδειγμα.δοκιμή", ["пример@example.org"], MESSAGE)
            assert "SMTPUTF8" in server.messages[0].mail_params
            assert server.messages[0].rcpt_to == ["пример@example.org"]
        async with fake_server(capabilities=["PIPELINING", "8BITMIME"]) as server:
            async with client(server) as c:
                with pytest.raises(SMTPNotSupported):
                    await c.sendmail("a@example.org", ["пример@example.org"], MESSAGE)
                assert b"MAIL" not in verbs(server)

    run(main())


def test_dsn_options() -> None:
    async def main() -> None:
        caps = ["PIPELINING", "DSN", "SIZE 100000"]
        async with fake_server(capabilities=caps) as server, client(server) as c:
            await c.sendmail(
                "a@example.org",
                ["b@example.org", "c@example.org"],
                MESSAGE,
                ret="HDRS",
                envid="QQ314159 +=x",
                notify=["SUCCESS", "FAILURE"],
                orcpt={"c@example.org": "old+c@example.org"},
            )
            (message,) = server.messages
            assert "RET=HDRS" in message.mail_params
            assert "ENVID=QQ314159+20+2B+3Dx" in message.mail_params
            assert message.rcpt_params == [
                "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.org",
                "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;old+2Bc@example.org",
            ]
        async with fake_server(capabilities=["PIPELINING"]) as server, client(server) as c:
            with pytest.raises(SMTPNotSupported):
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE, notify=["NEVER"])
            assert b"MAIL" not in verbs(server)

    run(main())


@pytest.mark.parametrize(
    "options",
    [
        {"notify": ["SOMETIMES"]},
        {"notify": ["NEVER", "SUCCESS"]},
        {"ret": "ALL"},
        {"orcpt": {"stranger@example.org": "x@example.org"}},
        {"mail_options": ["SIZE=1 BODY=8BITMIME"]},
        {"mail_options": ["X=\r\n"]},
        {"rcpt_options": ["NOTIFY=NEVER\r\nRSET"]},
    ],
)
def test_bad_options_raise_value_error_before_sending(options: dict[str, object]) -> None:
    async def main() -> None:
        async with fake_server(capabilities=["PIPELINING", "DSN"]) as server:
            async with client(server) as c:
                with pytest.raises(ValueError):
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE, **options)  # type: ignore[arg-type]
                assert b"MAIL" not in verbs(server)

    run(main())


@pytest.mark.parametrize(
    ("sender", "recipient"),
    [
        ("a@example.org\r\nRCPT TO:<x@evil.test>", "b@example.org"),
        ("a@example.org", "b@example.org\r\nDATA"),
        ("a@example.org", "b@example.org> NOTIFY=NEVER"),
        ("a@example.org\x00", "b@example.org"),
        ("a@example.org", "Bob <b@example.org>"),
    ],
)
def test_injection_through_sendmail_writes_nothing(sender: str, recipient: str) -> None:
    async def main() -> None:
        async with fake_server() as server, client(server) as c:
            with pytest.raises(ValueError):
                await c.sendmail(sender, [recipient], MESSAGE)
            with pytest.raises(ValueError):
                await c.vrfy("postmaster\r\nRSET")
            assert verbs(server) == [b"EHLO"]
            assert c.is_connected

    run(main())


# --- BDAT ----------------------------------------------------------------------------------


def test_bdat_when_asked_and_above_the_threshold() -> None:
    async def main() -> None:
        caps = ["PIPELINING", "CHUNKING", "SIZE 100000000"]
        async with fake_server(capabilities=caps) as server:
            async with client(server, use_bdat=True) as c:
                await c.sendmail("a@example.org", ["b@example.org"], b"Subject: x\n\n.hi\n")
            async with client(server, bdat_threshold=3000) as c:
                await c.sendmail("a@example.org", ["b@example.org"], b"y" * 2999)
                big = b"Subject: big\n\n" + b"z" * 100 + b"\r\n.\r\n" + b"w" * 3 * (1 << 20)
                await c.sendmail("a@example.org", ["b@example.org"], big)
            first, small, large = server.messages
            assert first.via == "BDAT" and first.content == b"Subject: x\r\n\r\n.hi\r\n"
            assert small.via == "DATA"
            assert large.via == "BDAT"
            assert large.content == big.replace(b"\n\n", b"\r\n\r\n", 1) + b"\r\n"
            bdat_lines = [line for line in server.commands if line.startswith(b"BDAT")]
            assert bdat_lines[-1].endswith(b" LAST") and len(bdat_lines) == 1 + 4

    run(main())


def test_bdat_not_used_without_chunking() -> None:
    async def main() -> None:
        async with fake_server() as server, client(server, use_bdat=True) as c:
            await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert server.messages[0].via == "DATA"

    run(main())


# --- LMTP ----------------------------------------------------------------------------------


def test_lmtp_reports_each_recipient() -> None:
    async def main() -> None:
        behaviour = {
            "lmtp": True,
            "capabilities": ["PIPELINING", "ENHANCEDSTATUSCODES"],
            "lmtp_replies": {"c@example.org": b"452 4.2.2 <c@example.org> mailbox full\r\n"},
            "reject_rcpt": {"d@example.org": b"550 5.1.1 <d@example.org> unknown\r\n"},
        }
        async with fake_server(**behaviour) as server:
            async with client(server, lmtp=True) as c:
                rcpts = ["b@example.org", "c@example.org", "d@example.org", "e@example.org"]
                result = await c.sendmail("a@example.org", rcpts, MESSAGE)
                assert set(result.refused) == {"c@example.org", "d@example.org"}
                assert result.refused["c@example.org"].code == 452
                assert result.refused["d@example.org"].code == 550
                assert set(result.delivered) == {"b@example.org", "e@example.org"}
                assert result.message == "2.0.0 delivered"
                # and again on the same connection: the reply count stays in step
                server.behaviour.lmtp_replies = {}
                result = await c.sendmail(
                    "a@example.org", ["b@example.org", "c@example.org"], MESSAGE
                )
                assert result.refused == {} and len(result.delivered) == 2
                assert verbs(server)[0] == b"LHLO"

    run(main())


def test_lmtp_all_deliveries_failed_raises() -> None:
    async def main() -> None:
        async with fake_server(
            lmtp=True, lmtp_replies={"b@example.org": b"550 5.2.1 disabled\r\n"}
        ) as server:
            async with client(server, lmtp=True) as c:
                with pytest.raises(SMTPRecipientsRefused) as info:
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert info.value.recipients[0].code == 550

    run(main())


# --- EHLO / HELO ---------------------------------------------------------------------------


def test_helo_fallback_when_ehlo_is_refused() -> None:
    async def main() -> None:
        async with fake_server(ehlo_reply=b"502 5.5.2 EHLO not implemented\r\n") as server:
            async with client(server) as c:
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert not c.supports_esmtp and c.last_helo_response is not None
                assert verbs(server)[:3] == [b"EHLO", b"HELO", b"MAIL"]
                assert server.messages[0].mail_params == ""

    run(main())


def test_helo_refused_too() -> None:
    async def main() -> None:
        async with fake_server(ehlo_reply=b"502 no\r\n", helo_ok=False) as server:
            with pytest.raises(SMTPHeloError):
                await client(server).connect()  # connect greets to look for STARTTLS
            c = client(server, start_tls=False)
            await c.connect()  # no greeting yet: it happens before the first message
            with pytest.raises(SMTPHeloError):
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)

    run(main())


def test_basic_commands() -> None:
    async def main() -> None:
        async with fake_server() as server, client(server) as c:
            assert (await c.ehlo()).code == 250
            assert c.supports_extension("pipelining") and c.esmtp_extensions["size"] == "10485760"
            assert await c.noop() == SMTPResponse(250, "2.0.0 Ok")
            assert await c.rset() == SMTPResponse(250, "2.0.0 Ok")
            assert (await c.vrfy("postmaster")).code == 252
            assert (await c.expn("staff")).code == 252
            assert await c.help() == "2.0.0 help yourself"
            assert (await c.mail("a@example.org")).code == 250
            assert (await c.rcpt("b@example.org")).code == 250
            assert (await c.data(MESSAGE)).code == 250
            assert server.messages[0].content == MESSAGE
            assert (await c.quit()).code == 221
            assert not c.is_connected

    run(main())


# --- Misbehaving servers (B7) --------------------------------------------------------------


def test_unsolicited_reply_is_never_paired_with_the_next_command() -> None:
    async def main() -> None:
        async with fake_server(extra_after={"NOOP": b"250 2.1.5 fake recipient ok\r\n"}) as server:
            async with client(server) as c:
                assert (await c.noop()).code == 250
                await asyncio.sleep(0.05)  # the extra reply arrives while the client is idle
                with pytest.raises(SMTPProtocolError, match="unsolicited"):
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert not c.is_connected
                assert b"MAIL" not in verbs(server)

    run(main())


def test_421_mid_transaction_is_a_disconnect() -> None:
    async def main() -> None:
        async with fake_server(reply_421_after="RCPT") as server, client(server) as c:
            with pytest.raises(SMTPServerDisconnected) as info:
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert isinstance(info.value, SMTPServiceUnavailable)
            assert info.value.code == 421
            assert not c.is_connected
            with pytest.raises(SMTPServerDisconnected):
                await c.noop()

    run(main())


def test_server_drops_the_connection() -> None:
    async def main() -> None:
        async with fake_server(close_after="MAIL") as server, client(server) as c:
            with pytest.raises(SMTPServerDisconnected):
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert not c.is_connected

    run(main())


def test_read_timeout_closes_the_connection() -> None:
    async def main() -> None:
        async with fake_server(silent_after="MAIL") as server:
            async with client(server, timeout=0.3) as c:
                loop = asyncio.get_running_loop()
                start = loop.time()
                with pytest.raises(SMTPReadTimeoutError):
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert 0.25 < loop.time() - start < 2
                assert not c.is_connected

    run(main())


def test_data_timeout_bounds_the_final_reply() -> None:
    async def main() -> None:
        async with fake_server(final_reply=b"") as server:
            async with client(server, timeout=30, data_timeout=0.3) as c:
                loop = asyncio.get_running_loop()
                start = loop.time()
                with pytest.raises(SMTPReadTimeoutError):
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert loop.time() - start < 2

    run(main())


def test_cancelled_mid_transaction_closes_the_connection() -> None:
    async def main() -> None:
        async with fake_server(silent_after="MAIL") as server, client(server) as c:
            task = asyncio.ensure_future(c.sendmail("a@example.org", ["b@example.org"], MESSAGE))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not c.is_connected  # its state is unknown: never reuse it

    run(main())


# --- Connecting -----------------------------------------------------------------------------


def test_greeting_refused() -> None:
    async def main() -> None:
        async with fake_server(greeting=b"554 5.3.2 go away\r\n") as server:
            with pytest.raises(SMTPConnectResponseError) as info:
                await client(server).connect()
            assert info.value.code == 554

    run(main())


def test_greeting_timeout() -> None:
    async def main() -> None:
        async with fake_server(greeting=b"") as server:
            with pytest.raises(SMTPConnectTimeoutError):
                await client(server, timeout=0.3).connect()

    run(main())


def test_connection_refused() -> None:
    async def main() -> None:
        async with fake_server() as server:
            port = server.port
        with pytest.raises(SMTPConnectError):
            await Client("127.0.0.1", port, timeout=2).connect()

    run(main())


def test_connect_twice_raises() -> None:
    async def main() -> None:
        async with fake_server() as server, client(server) as c:
            with pytest.raises(SMTPException, match="already connected"):
                await c.connect()

    run(main())


def test_send_helper_with_message_object() -> None:
    async def main() -> None:
        async with fake_server() as server:
            message = email.message.EmailMessage()
            message["From"] = "Alice <a@example.org>"
            message["To"] = "b@example.org, Carol <c@example.org>"
            message["Bcc"] = "secret@example.org"
            message["Subject"] = "hi"
            message.set_content("body\n")
            result = await send(message, hostname="127.0.0.1", port=server.port, timeout=5)
            assert result == ({}, "2.0.0 Ok: queued")
            (got,) = server.messages
            assert got.mail_from == "a@example.org"
            assert got.rcpt_to == ["b@example.org", "c@example.org", "secret@example.org"]
            assert b"secret@example.org" not in got.content and b"Bcc" not in got.content
            assert verbs(server)[-1] == b"QUIT"
            with pytest.raises(ValueError):
                await send(b"raw", hostname="127.0.0.1", port=server.port)

    run(main())


# --- STARTTLS and AUTH (B6) -----------------------------------------------------------------


def plain_auth(line: bytes) -> bytes:
    return (
        b"235 2.7.0 Authentication successful\r\n"
        if line.startswith(b"AUTH PLAIN ")
        else b"535 no\r\n"
    )


def test_starttls_response_injection_aborts_before_tls_and_auth(ca: trustme.CA) -> None:
    async def main() -> None:
        async with fake_server(
            capabilities=["PIPELINING", "STARTTLS", "AUTH PLAIN LOGIN"],
            starttls_reply=b"220 Ready\r\n250-evil\r\n250 AUTH LOGIN\r\n",
            tls_context=server_context(ca),
            auth=plain_auth,
        ) as server:
            c = client(server, username="u", password="p", tls_context=client_context(ca))
            with pytest.raises(SMTPProtocolError, match="STARTTLS"):
                await c.connect()
            await asyncio.sleep(0.1)
            assert server.tls_completed == 0  # the client never did the handshake
            assert b"AUTH" not in verbs(server)
            assert not c.is_connected

    run(main())


def test_starttls_required_but_not_offered_aborts_before_auth() -> None:
    async def main() -> None:
        async with fake_server(
            capabilities=["PIPELINING", "AUTH PLAIN"], auth=plain_auth
        ) as server:
            c = client(server, start_tls=True, username="u", password="p")
            with pytest.raises(SMTPException, match="STARTTLS"):
                await c.connect()
            assert verbs(server) == [b"EHLO"]

    run(main())


def test_starttls_upgrade_then_ehlo_again_and_auth(ca: trustme.CA) -> None:
    async def main() -> None:
        async with fake_server(
            capabilities=["PIPELINING", "STARTTLS", "AUTH PLAIN"],
            tls_context=server_context(ca),
            auth=plain_auth,
        ) as server:
            c = client(server, username="u", password="p", tls_context=client_context(ca))
            async with c:
                assert c.is_tls and server.tls_started == 1
                assert c.get_transport_info("ssl_object") is not None
                # after TLS the capabilities come from the second EHLO only
                server.behaviour.capabilities = ["PIPELINING", "AUTH PLAIN"]
                assert "starttls" in c.esmtp_extensions  # from the post-TLS EHLO of connect
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert verbs(server) == [
                b"EHLO",
                b"STARTTLS",
                b"EHLO",
                b"AUTH",
                b"MAIL",
                b"RCPT",
                b"DATA",
                b"QUIT",
            ]
            assert server.messages[0].content == MESSAGE

    run(main())


def test_certificate_is_verified_by_default(ca: trustme.CA) -> None:
    async def main() -> None:
        async with fake_server(capabilities=["STARTTLS"], tls_context=server_context(ca)) as server:
            with pytest.raises(SMTPConnectError, match="TLS"):
                await client(server).connect()  # system trust store: the test CA is unknown
            async with client(server, validate_certs=False) as c:
                assert c.is_tls

    run(main())


def test_cleartext_password_refused_to_a_remote_plaintext_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth_module, "_is_loopback", lambda peer: False)

    async def main() -> None:
        async with fake_server(capabilities=["AUTH PLAIN LOGIN"], auth=plain_auth) as server:
            with pytest.raises(SMTPException, match="unencrypted"):
                await client(server, username="u", password="p").connect()
            assert b"AUTH" not in verbs(server)
            async with client(server, username="u", password="p", allow_insecure_auth=True):
                pass
            assert b"AUTH" in verbs(server)

    run(main())


def test_login_tries_the_next_mechanism() -> None:
    """CRAM-MD5 and PLAIN are refused; LOGIN (username as initial response, then the
    password to the "Password:" challenge) succeeds."""
    seen: list[bytes] = []

    def only_login(line: bytes) -> bytes:
        seen.append(line)
        if line.startswith(b"AUTH LOGIN dQ=="):  # base64("u")
            return b"334 UGFzc3dvcmQ6\r\n"
        if line == b"cA==":  # base64("p")
            return b"235 2.7.0 ok\r\n"
        if line.startswith(b"AUTH CRAM-MD5"):
            return b"334 PDEyMzQ1QHRlc3Q+\r\n"
        return b"535 5.7.8 no\r\n"

    async def main() -> None:
        async with fake_server(
            capabilities=["AUTH CRAM-MD5 PLAIN LOGIN"], auth=only_login
        ) as server:
            async with client(server) as c:
                response = await c.login("u", "p")
                assert response.code == 235
        assert [line.split(b" ")[:2] for line in seen if line.startswith(b"AUTH")] == [
            [b"AUTH", b"CRAM-MD5"],
            [b"AUTH", b"PLAIN"],
            [b"AUTH", b"LOGIN"],
        ]

    run(main())


def test_authentication_failure() -> None:
    async def main() -> None:
        async with fake_server(
            capabilities=["AUTH PLAIN"], auth=lambda line: b"535 5.7.8 bad credentials\r\n"
        ) as server:
            with pytest.raises(SMTPException) as info:
                await client(server, username="u", password="wrong").connect()
            assert getattr(info.value, "code", None) == 535

    run(main())


def test_other_commands_interleave_safely_with_pipelined_senders() -> None:
    """A NOOP queued behind a message must not jump ahead of the envelope that message
    already put on the wire (it would have to be sent before that envelope's content)."""

    async def main() -> None:
        async with fake_server() as server, client(server) as c:
            sends = [c.sendmail("a@example.org", [f"r{i}@example.org"], MESSAGE) for i in range(6)]
            results = await asyncio.gather(*sends[:3], c.noop(), c.rset(), *sends[3:])
            assert all(
                r == ({}, "2.0.0 Ok: queued") for i, r in enumerate(results) if i not in (3, 4)
            )
            noop, rset = results[3], results[4]
            assert isinstance(noop, SMTPResponse) and isinstance(rset, SMTPResponse)
            assert noop.code == 250 and rset.code == 250
            assert len(server.messages) == 6
            assert len(server.sessions) == 1

    run(main())


def test_cancelling_a_handed_over_transaction_closes_cleanly() -> None:
    async def main() -> None:
        async with fake_server(final_delay=0.2) as server:
            c = client(server)
            await c.connect()
            first = asyncio.ensure_future(c.sendmail("a@example.org", ["one@example.org"], MESSAGE))
            second = asyncio.ensure_future(
                c.sendmail("a@example.org", ["two@example.org"], MESSAGE)
            )
            await asyncio.sleep(0.1)  # the second envelope went out with the first content
            assert server.read_containing(b"\r\n.\r\nMAIL FROM:") is not None
            second.cancel()
            results = await asyncio.gather(first, second, return_exceptions=True)
            assert isinstance(results[1], asyncio.CancelledError)
            # its envelope was on the wire: the session state is unknown, so it is closed
            assert not c.is_connected
            await c.connect()  # and the client is usable again (no lock left held)
            await c.sendmail("a@example.org", ["three@example.org"], MESSAGE)
            assert server.messages[-1].rcpt_to == ["three@example.org"]
            await c.quit()

    run(main())


def test_a_server_that_stops_reading_mid_content_times_out() -> None:
    async def main() -> None:
        async with fake_server(stop_reading_after="DATA") as server:
            async with client(server, timeout=0.5) as c:
                loop = asyncio.get_running_loop()
                start = loop.time()
                with pytest.raises(SMTPReadTimeoutError):
                    await c.sendmail("a@example.org", ["b@example.org"], b"x" * (8 << 20))
                assert loop.time() - start < 5
                assert not c.is_connected

    run(main(), timeout=30)


def test_implicit_tls(ca: trustme.CA) -> None:
    async def main() -> None:
        async with FakeServer(implicit_tls=server_context(ca)) as server:
            async with client(server, use_tls=True, tls_context=client_context(ca)) as c:
                assert c.is_tls and c.get_transport_info("ssl_object") is not None
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert verbs(server) == [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT"]  # no STARTTLS
            with pytest.raises(SMTPConnectError):
                await client(server, use_tls=True).connect()  # unknown CA: refused

    run(main())


def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "smtp.sock")

    async def main() -> None:
        async with FakeServer(unix_path=path) as server:
            async with Client(socket_path=path, timeout=5, local_hostname="client.test") as c:
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert server.messages[0].content == MESSAGE
        with pytest.raises(ValueError):
            Client(port=25, socket_path=path)

    run(main())


def test_xoauth2_and_token_generator() -> None:
    import base64

    seen: list[bytes] = []

    def xoauth2(line: bytes) -> bytes:
        seen.append(line)
        if line.startswith(b"AUTH XOAUTH2 "):
            decoded = base64.b64decode(line.split()[2])
            if decoded == b"user=u@example.org\x01auth=Bearer good-token\x01\x01":
                return b"235 2.7.0 Accepted\r\n"
            return b"334 eyJzdGF0dXMiOiI0MDEifQ==\r\n"  # {"status":"401"}
        if line == b"":
            return b"535 5.7.8 Username and Password not accepted\r\n"
        return b"501 what\r\n"

    async def main() -> None:
        async with fake_server(capabilities=["AUTH XOAUTH2 PLAIN"], auth=xoauth2) as server:
            async with client(server) as c:
                assert (await c.auth_xoauth2("u@example.org", "good-token")).code == 235
            async with client(server) as c:
                with pytest.raises(SMTPException) as info:
                    await c.auth_xoauth2("u@example.org", "expired")
                assert getattr(info.value, "code", None) == 535  # after the empty response

            async def token() -> str:
                return "good-token"

            async with client(server, username="u@example.org", oauth_token_generator=token):
                pass
        assert seen[-1].startswith(b"AUTH XOAUTH2 ")
        assert b"" in seen  # the empty line answering the error challenge

    run(main())


def test_cram_md5_success() -> None:
    import base64
    import hmac

    challenge = b"<4711.1234@fake.test>"

    def cram(line: bytes) -> bytes:
        if line == b"AUTH CRAM-MD5":
            return b"334 " + base64.b64encode(challenge) + b"\r\n"
        expected = b"u " + hmac.new(b"secret", challenge, "md5").hexdigest().encode()
        if base64.b64decode(line) == expected:
            return b"235 2.7.0 ok\r\n"
        return b"535 5.7.8 no\r\n"

    async def main() -> None:
        async with fake_server(capabilities=["AUTH CRAM-MD5"], auth=cram) as server:
            async with client(server) as c:
                assert (await c.auth_crammd5("u", "secret")).code == 235
            async with client(server, username="u", password="secret") as c:
                assert c.connection is not None and c.connection.authenticated

    run(main())
