"""The client against Postfix: smtp-sink (SMTP and LMTP) and a real smtpd (tests/peers.py).

Loopback only. A full Postfix needs root; peers.py skips (or, in CI, fails) without it.
"""

from __future__ import annotations

import asyncio
import email.message
from collections.abc import Callable
from typing import Any

import pytest

from ferrosmtp.client import Client, Pool
from ferrosmtp.errors import (
    SMTPAuthenticationError,
    SMTPException,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServiceUnavailable,
)
from tests.peers import PEER_SASL_PASSWORD, PEER_SASL_USER, PostfixServer, SmtpSink

from .conftest import run

pytestmark = pytest.mark.interop

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: postfix\r\n\r\n.dot\r\nbody\r\n"


def connect(port: int, **options: Any) -> Client:
    options.setdefault("timeout", 10)
    options.setdefault("local_hostname", "client.test")
    return Client("127.0.0.1", port, **options)


# --- smtp-sink ------------------------------------------------------------------------------


def test_smtp_sink_receives_pipelined_messages(smtp_sink: SmtpSink) -> None:
    async def main() -> None:
        async with connect(smtp_sink.port) as c:
            assert c.supports_extension("pipelining")
            for i in range(5):
                await c.sendmail("a@example.org", [f"r{i}@example.org", "x@example.org"], MESSAGE)
            await asyncio.gather(
                *(c.sendmail("a@example.org", [f"c{i}@example.org"], MESSAGE) for i in range(20))
            )

    run(main())
    messages = smtp_sink.wait_messages(25)
    assert len(messages) == 25
    assert all(m.content == MESSAGE.replace(b"\r\n", b"\n") for m in messages)
    assert {m.rcpt_tos[0] for m in messages} >= {f"c{i}@example.org" for i in range(20)}


def test_smtp_sink_without_pipelining(smtp_sink_factory: Callable[..., SmtpSink]) -> None:
    sink = smtp_sink_factory(pipelining=False, dump=True)

    async def main() -> None:
        async with connect(sink.port) as c:
            assert not c.supports_extension("pipelining")
            await asyncio.gather(
                *(c.sendmail("a@example.org", [f"r{i}@example.org"], MESSAGE) for i in range(5))
            )

    run(main())
    assert len(sink.wait_messages(5)) == 5


def test_smtp_sink_refusals(smtp_sink_factory: Callable[..., SmtpSink]) -> None:
    sink = smtp_sink_factory(reject=["RCPT"])

    async def main() -> None:
        async with connect(sink.port) as c:
            with pytest.raises(SMTPRecipientsRefused) as info:
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert info.value.recipients[0].code == 500
            assert (await c.noop()).code == 250  # still in step after the refusal

    run(main())


def test_smtp_sink_421(smtp_sink_factory: Callable[..., SmtpSink]) -> None:
    sink = smtp_sink_factory(reply_421=["RCPT"])

    async def main() -> None:
        async with connect(sink.port) as c:
            with pytest.raises(SMTPServiceUnavailable):
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert not c.is_connected

    run(main())


def test_smtp_sink_lmtp_per_recipient(smtp_sink_factory: Callable[..., SmtpSink]) -> None:
    sink = smtp_sink_factory(lmtp=True, dump=True)

    async def main() -> None:
        async with connect(sink.port, lmtp=True) as c:
            for _ in range(3):
                result = await c.sendmail(
                    "a@example.org", ["b@example.org", "c@example.org", "d@example.org"], MESSAGE
                )
                assert result.refused == {}
                assert list(result.delivered) == ["b@example.org", "c@example.org", "d@example.org"]

    run(main())
    assert len(sink.wait_messages(3)) == 3


def test_pool_against_smtp_sink(smtp_sink: SmtpSink) -> None:
    async def main() -> None:
        async with Pool(
            "127.0.0.1", smtp_sink.port, size=4, timeout=10, local_hostname="c.test"
        ) as pool:
            await asyncio.gather(
                *(pool.sendmail("a@example.org", [f"p{i}@example.org"], MESSAGE) for i in range(40))
            )

    run(main())
    assert len(smtp_sink.wait_messages(40)) == 40


# --- A real Postfix smtpd -----------------------------------------------------------------


def test_postfix_starttls_and_delivery(postfix_server: PostfixServer) -> None:
    async def main() -> None:
        async with connect(
            postfix_server.port, tls_context=postfix_server.client_ssl_context()
        ) as c:
            assert c.is_tls
            assert c.supports_extension("chunking") and c.supports_extension("dsn")
            await c.sendmail("a@example.org", ["bob@example.net"], MESSAGE)
            # the CA is not in the system store: verification fails by default
        with pytest.raises(SMTPException):
            await connect(postfix_server.port).connect()

    run(main())
    (delivered,) = postfix_server.wait_messages(1)
    assert delivered.recipient == "bob@example.net"
    assert delivered.body == b".dot\nbody\n"
    assert b"(using TLS" in delivered.content  # Postfix's Received header


def test_postfix_bdat_dsn_smtputf8_and_size(
    postfix_server_factory: Callable[..., PostfixServer],
) -> None:
    server = postfix_server_factory(message_size_limit=200_000)

    async def main() -> None:
        async with connect(server.port, start_tls=False) as c:
            body = b"Subject: chunked\n\n" + b"line\n" * 10_000
            await c.sendmail(
                "a@example.org",
                ["bdat@example.net"],
                body,
                use_bdat=True,
                ret="HDRS",
                envid="env 1",
                notify=["FAILURE"],
                orcpt=True,
            )
            message = email.message.EmailMessage()
            message["From"] = "δοκιμή@example.org"
            message["To"] = "пример@example.net"
            message["Subject"] = "ünïcødé"
            message.set_content("тело\n")
            await c.send_message(message)
            with pytest.raises(SMTPSenderRefused) as info:
                await c.sendmail("a@example.org", ["big@example.net"], b"x" * 300_000)
            assert info.value.code == 552  # refused by us from SIZE, before sending

    run(main())
    delivered = {m.recipient: m for m in server.wait_messages(2)}
    assert delivered["bdat@example.net"].body == b"line\n" * 10_000
    assert "пример@example.net" in delivered
    log = server.maillog()
    assert "big@example.net" not in log


def test_postfix_auth_after_starttls(postfix_auth_server: PostfixServer) -> None:
    server = postfix_auth_server

    async def main() -> None:
        context = server.client_ssl_context()
        async with connect(
            server.port, tls_context=context, username=PEER_SASL_USER, password=PEER_SASL_PASSWORD
        ) as c:
            assert c.is_tls and "plain" in c.server_auth_methods
            await c.sendmail("a@example.org", ["bob@example.net"], MESSAGE)
        for method in ("auth_plain", "auth_login"):
            async with connect(server.port, tls_context=context) as c:
                assert (await getattr(c, method)(PEER_SASL_USER, PEER_SASL_PASSWORD)).code == 235
        async with connect(server.port, tls_context=context) as c:
            with pytest.raises(SMTPAuthenticationError) as info:
                await c.login(PEER_SASL_USER, "wrong")
            assert info.value.code == 535
        # without TLS, Postfix does not offer AUTH (smtpd_tls_auth_only) and we never ask
        async with connect(server.port, start_tls=False) as c:
            with pytest.raises(SMTPException, match="AUTH extension is not supported"):
                await c.login(PEER_SASL_USER, PEER_SASL_PASSWORD)

    run(main(), timeout=60)
    (delivered,) = server.wait_messages(1)
    assert delivered.recipient == "bob@example.net"
