"""``ferrosmtp.compat.aiosmtplib``: aiosmtplib's behaviour where it differs from
``ferrosmtp.Client``, and the defences it keeps all the same. Over loopback sockets,
against the scriptable fake server and aiosmtpd. (aiosmtplib's own suite runs against this
module too: tests/incumbents/run.py.)
"""

from __future__ import annotations

import inspect
import ssl
from typing import Any

import aiosmtplib
import pytest
import trustme

import ferrosmtp.client.auth as auth_module
from ferrosmtp.client import Client
from ferrosmtp.compat import aiosmtplib as compat

from .conftest import run
from .fakeserver import FakeServer, fake_server, verbs
from .tls import server_context

MESSAGE = b"Subject: test\r\n\r\nHello.\r\n"


def smtp(server: FakeServer, **options: Any) -> compat.SMTP:
    options.setdefault("timeout", 5)
    options.setdefault("local_hostname", "client.test")
    options.setdefault("start_tls", False)
    return compat.SMTP(hostname="127.0.0.1", port=server.port, **options)


def test_the_public_names_and_signatures_are_aiosmtplibs() -> None:
    assert set(aiosmtplib.__all__) <= set(compat.__all__)
    for name in aiosmtplib.__all__:
        theirs = getattr(aiosmtplib, name)
        if isinstance(theirs, type) and issubclass(theirs, Exception):
            ours = getattr(compat, name)  # the same hierarchy, by name
            assert [b.__name__ for b in ours.__bases__] == [b.__name__ for b in theirs.__bases__]
    assert issubclass(compat.SMTP, Client)  # the same engine, not a copy
    for method in ("__init__", "connect", "sendmail", "send_message", "starttls", "mail", "rcpt"):
        theirs = inspect.signature(getattr(aiosmtplib.SMTP, method)).parameters
        ours = inspect.signature(getattr(compat.SMTP, method)).parameters
        for name, parameter in theirs.items():
            assert name in ours, (method, name)
            assert ours[name].kind == parameter.kind, (method, name)
            if name != "timeout" or method == "__init__":
                assert repr(ours[name].default) == repr(parameter.default), (method, name)
    send_theirs = inspect.signature(aiosmtplib.send).parameters
    send_ours = inspect.signature(compat.send).parameters
    assert list(send_theirs) == list(send_ours)
    with pytest.raises(TypeError):
        compat.SMTP("localhost")  # type: ignore[misc]  # keyword-only, as aiosmtplib


def test_starttls_sends_no_ehlo_and_forgets_the_extensions(ca: trustme.CA) -> None:
    async def main() -> None:
        async with fake_server(
            capabilities=["STARTTLS", "SIZE 1000"], tls_context=server_context(ca)
        ) as server:
            async with smtp(server, validate_certs=False) as client:
                await client.ehlo()
                assert client.supports_extension("size")
                response = await client.starttls()
                assert response.code == 220 and client.is_tls
                assert client.esmtp_extensions == {} and not client.supports_esmtp
                assert verbs(server)[-1] == b"STARTTLS"  # no EHLO of its own
                await client.noop()  # the next command greets the server again
            assert verbs(server)[-3:] == [b"EHLO", b"NOOP", b"QUIT"]

    run(main())


def test_a_421_to_ehlo_raises_smtp_helo_error() -> None:
    async def main() -> None:
        async with fake_server(reply_421_after="EHLO") as server:
            client = smtp(server)
            await client.connect()
            with pytest.raises(compat.SMTPHeloError) as info:
                await client.ehlo()
            assert info.value.code == 421 and not client.is_connected
            assert client.protocol is None

    run(main())


@pytest.mark.parametrize(
    ("verb", "error"),
    [
        ("MAIL", compat.SMTPSenderRefused),
        ("RCPT", compat.SMTPRecipientRefused),
        ("DATA", compat.SMTPDataError),
        ("NOOP", None),
    ],
)
def test_a_421_raises_the_commands_own_error(verb: str, error: type[Exception] | None) -> None:
    async def main() -> None:
        async with fake_server(reply_421_after=verb) as server:
            client = smtp(server)
            await client.connect()
            await client.ehlo()
            if error is None:  # execute_command returns the reply, as aiosmtplib
                assert await client.execute_command(b"NOOP") == (421, "4.3.2 Service shutting down")
            else:
                with pytest.raises(error) as info:
                    if verb != "MAIL":
                        await client.mail("a@example.org")
                    if verb == "DATA":
                        await client.rcpt("b@example.org")
                        await client.data(MESSAGE)
                    else:
                        await getattr(client, verb.lower())("b@example.org")
                assert info.value.code == 421  # type: ignore[attr-defined]
            assert not client.is_connected

    run(main())


def test_a_str_message_must_be_ascii() -> None:
    async def main() -> None:
        async with fake_server() as server, smtp(server) as client:
            with pytest.raises(UnicodeEncodeError):
                await client.sendmail("a@example.org", ["b@example.org"], "Subject: é\r\n\r\n")
            await client.sendmail("a@example.org", ["b@example.org"], "Subject: e\r\n\r\n")
        assert len(server.messages) == 1

    run(main())


def test_tls_failures_raise_what_aiosmtplib_raises(ca: trustme.CA) -> None:
    async def main() -> None:
        async with fake_server(capabilities=["STARTTLS"], tls_context=server_context(ca)) as s:
            client = smtp(s)  # the system trust store does not know the test CA
            await client.connect()
            with pytest.raises(ssl.SSLError):
                await client.starttls()
            assert not client.is_connected
        # The server hangs up after its 220.
        async with fake_server(capabilities=["STARTTLS"], close_after="STARTTLS") as s:
            s.behaviour.close_after = None
            s.behaviour.starttls_reply = b"220 go ahead\r\n"
            client = smtp(s)
            await client.connect()
            s.behaviour.close_after_once = "STARTTLS"
            with pytest.raises(compat.SMTPServerDisconnected):
                await client.starttls()

    run(main())


def test_utf8_addresses_follow_the_encoding_argument() -> None:
    async def main() -> None:
        async with fake_server(capabilities=["8BITMIME"]) as server, smtp(server) as client:
            with pytest.raises(UnicodeEncodeError):
                await client.mail("tést@exåmple.com", options=["SMTPUTF8"])
            await client.mail("a@example.org")
            with pytest.raises(UnicodeEncodeError):
                await client.rcpt("tést@exåmple.com", options=["SMTPUTF8"])
            assert b"RCPT" not in verbs(server)

    run(main())


def test_options_go_out_even_without_their_extension() -> None:
    """NOTIFY= without DSN: aiosmtplib sends it and the server decides (ferrosmtp.Client
    refuses it before sending, SMTPNotSupported)."""

    async def main() -> None:
        async with fake_server(capabilities=["8BITMIME"]) as server, smtp(server) as client:
            await client.sendmail(
                "a@example.org", ["b@example.org"], MESSAGE, rcpt_options=["NOTIFY=NEVER"]
            )
        assert server.messages[0].rcpt_params == ["NOTIFY=NEVER"]

    run(main())


def test_send_message_declares_smtputf8_then_8bitmime() -> None:
    import email.message

    message = email.message.EmailMessage()
    message["From"] = "séndër@exåmple.com"
    message["To"] = "b@example.org"
    message.set_content("ascii body\n")

    async def main() -> None:
        async with fake_server() as server, smtp(server) as client:
            await client.send_message(message)
        params = server.messages[0].mail_params.split()
        assert params[0].startswith("SIZE=") and params[1:] == ["SMTPUTF8", "BODY=8BITMIME"]

    run(main())


def test_send_takes_aiosmtplibs_arguments() -> None:
    async def main() -> None:
        async with fake_server() as server:
            with pytest.raises(ValueError, match="Recipients must be provided"):
                await compat.send(MESSAGE, sender="a@example.org", port=server.port)
            refused, reply = await compat.send(
                MESSAGE,
                sender="a@example.org",
                recipients="b@example.org",
                hostname="127.0.0.1",
                port=server.port,
                start_tls=False,
            )
            assert refused == {} and "queued" in reply

    run(main())


# --- What compat does not relax -----------------------------------------------------------


def test_compat_keeps_the_defences(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argument injection, a bare LF in a reply and AUTH in cleartext to a remote peer are
    refused here as in ferrosmtp.Client, though aiosmtplib lets them through."""
    monkeypatch.setattr(auth_module, "_is_loopback", lambda peer: False)

    async def main() -> None:
        async with fake_server(capabilities=["AUTH PLAIN"], auth=lambda _: b"235 ok\r\n") as server:
            async with smtp(server) as client:
                with pytest.raises(ValueError):
                    await client.vrfy("a@example.org> AUTH=<evil@example.org>")
                with pytest.raises(compat.SMTPException, match="unencrypted"):
                    await client.login("u", "p")
            assert b"VRFY" not in verbs(server) and b"AUTH" not in verbs(server)
        async with fake_server(ehlo_reply=b"250-fake.test\n250 PIPELINING\r\n") as server:
            client = smtp(server)
            await client.connect()
            with pytest.raises(compat.SMTPServerDisconnected, match="bare CR, LF"):
                await client.ehlo()
            assert not client.is_connected

    run(main())
