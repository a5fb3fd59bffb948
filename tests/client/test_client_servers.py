"""The client against real servers in-process: aiosmtpd's Controller and ferrosmtp.Server.

The same scenarios run against both: plain sending, STARTTLS with a test-time CA, AUTH
PLAIN and LOGIN through each server's authenticator, SMTPUTF8, and the dot-stuffing
vectors of the security checklist (B2), each of which must arrive as one message whose
content is the normalized input.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trustme

from ferrosmtp.client import Client
from ferrosmtp.errors import SMTPAuthenticationError, SMTPException

from .conftest import run
from .tls import client_context, server_context

SERVERS = ["aiosmtpd", "ferrosmtp"]
USERS = {"alice": "wonderland", "jösé": "pässwörd"}


@dataclass
class Stored:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    tls: bool
    login: Any


class Recorder:
    """A handler for both servers: keeps every message, thread-safe."""

    def __init__(self) -> None:
        self.messages: list[Stored] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        with self.lock:
            self.messages.append(
                Stored(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(content),
                    list(envelope.mail_options),
                    session.ssl is not None,
                    getattr(session, "login_data", None) or getattr(session, "auth_data", None),
                )
            )
        return "250 2.0.0 OK stored"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    """aiosmtpd's authenticator protocol; ferrosmtp.Server accepts the same."""
    if "ferrosmtp" in type(server).__module__:
        from ferrosmtp.server import AuthResult
    else:
        from aiosmtpd.smtp import AuthResult
    login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
    password = auth_data.password
    if isinstance(password, bytes):
        password = password.decode()
    return AuthResult(success=USERS.get(login) == password, handled=False, auth_data=auth_data)


@contextlib.contextmanager
def aiosmtpd_server(recorder: Recorder, **options: Any) -> Iterator[int]:
    from aiosmtpd.controller import Controller

    from tests.peers import free_port

    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@contextlib.asynccontextmanager
async def ferrosmtp_server(recorder: Recorder, **options: Any) -> AsyncIterator[int]:
    from ferrosmtp.server import Server

    server = Server(recorder, hostname="server.test", **options)
    await server.start("127.0.0.1", 0)
    try:
        yield server.port
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


@contextlib.asynccontextmanager
async def serving(kind: str, recorder: Recorder, **options: Any) -> AsyncIterator[int]:
    if kind == "aiosmtpd":
        with aiosmtpd_server(recorder, **options) as port:
            yield port
    else:
        async with ferrosmtp_server(recorder, **options) as port:
            yield port


def connect(port: int, **options: Any) -> Client:
    options.setdefault("timeout", 5)
    options.setdefault("local_hostname", "client.test")
    return Client("127.0.0.1", port, **options)


@pytest.mark.parametrize("kind", SERVERS)
def test_sendmail_and_send_message(kind: str) -> None:
    recorder = Recorder()

    async def main() -> None:
        async with serving(kind, recorder) as port, connect(port) as c:
            refused, reply = await c.sendmail(
                "a@example.org", ["b@example.org", "c@example.org"], b"Subject: one\r\n\r\nbody\r\n"
            )
            assert refused == {} and "OK stored" in reply
            message = email.message.EmailMessage()
            message["From"] = "Alice <a@example.org>"
            message["To"] = "Bob <b@example.org>"
            message["Subject"] = "two"
            message.set_content("second\n")
            await c.send_message(message)
        first, second = recorder.messages
        assert (first.mail_from, first.rcpt_tos) == (
            "a@example.org",
            ["b@example.org", "c@example.org"],
        )
        assert first.content == b"Subject: one\r\n\r\nbody\r\n"
        assert second.rcpt_tos == ["b@example.org"] and b"Subject: two\r\n" in second.content

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_many_messages_on_one_connection_concurrently(kind: str) -> None:
    recorder = Recorder()

    async def main() -> None:
        async with serving(kind, recorder) as port, connect(port) as c:
            await asyncio.gather(
                *(
                    c.sendmail(
                        "a@example.org", [f"r{i}@example.org"], f"Subject: {i}\r\n\r\n{i}\r\n"
                    )
                    for i in range(30)
                )
            )
        assert sorted(m.rcpt_tos[0] for m in recorder.messages) == sorted(
            f"r{i}@example.org" for i in range(30)
        )
        for m in recorder.messages:
            number = m.rcpt_tos[0][1:].split("@")[0]
            assert m.content == f"Subject: {number}\r\n\r\n{number}\r\n".encode()

    run(main())


B2_VECTORS = [b"a\n.\nb", b"a\r.\rb", b"a\n.\r\nb", b".", b".\r\n", b"x\r\n.", b"\r\n.\r\n.\r\n"]


def normalize(body: bytes) -> bytes:
    text = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return text if text.endswith(b"\r\n") or not text else text + b"\r\n"


@pytest.mark.parametrize("kind", SERVERS)
def test_dot_stuffing_vectors_arrive_as_one_normalized_message(kind: str) -> None:
    recorder = Recorder()

    async def main() -> None:
        async with serving(kind, recorder) as port, connect(port) as c:
            for body in B2_VECTORS:
                await c.sendmail("a@example.org", ["b@example.org"], body)
        assert [m.content for m in recorder.messages] == [normalize(b) for b in B2_VECTORS]

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_starttls(kind: str, ca: trustme.CA) -> None:
    recorder = Recorder()

    async def main() -> None:
        async with serving(
            kind, recorder, tls_context=server_context(ca), require_starttls=True
        ) as port:
            async with connect(port, tls_context=client_context(ca)) as c:
                assert c.is_tls
                await c.sendmail("a@example.org", ["b@example.org"], b"Subject: tls\r\n\r\nx\r\n")
            with pytest.raises(SMTPException):  # the test CA is not in the system store
                await connect(port).connect()
        assert recorder.messages[0].tls

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize("method", ["auth_plain", "auth_login", "login"])
def test_auth(kind: str, method: str, ca: trustme.CA) -> None:
    recorder = Recorder()

    async def main() -> None:
        async with serving(
            kind,
            recorder,
            authenticator=authenticator,
            auth_require_tls=True,
            tls_context=server_context(ca),
        ) as port:
            async with connect(port, tls_context=client_context(ca)) as c:
                response = await getattr(c, method)("jösé", "pässwörd")
                assert response.code == 235
                await c.sendmail("a@example.org", ["b@example.org"], b"Subject: auth\r\n\r\nx\r\n")
            async with connect(port, tls_context=client_context(ca)) as c:
                with pytest.raises(SMTPAuthenticationError) as info:
                    await getattr(c, method)("alice", "wrong")
                assert info.value.code == 535
            # and through the constructor, as aiosmtplib users do
            async with connect(
                port, tls_context=client_context(ca), username="alice", password="wonderland"
            ):
                pass
        assert len(recorder.messages) == 1

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_smtputf8(kind: str) -> None:
    recorder = Recorder()

    async def main() -> None:
        async with serving(kind, recorder) as port, connect(port) as c:
            message = email.message.EmailMessage()
            message["From"] = "δοκιμή@παράδειγμα.δοκιμή"
            message["To"] = "пример@example.org"
            message["Subject"] = "ünïcødé"
            message.set_content("тело\n")
            await c.send_message(message)
        (stored,) = recorder.messages
        assert stored.mail_from == "δοκιμή@παράδειγμα.δοκιμή"
        assert stored.rcpt_tos == ["пример@example.org"]
        assert "SMTPUTF8" in [o.upper() for o in stored.mail_options]
        assert "Subject: ünïcødé".encode() in stored.content

    run(main())


def test_bdat_against_ferrosmtp_server() -> None:
    recorder = Recorder()

    async def main() -> None:
        async with ferrosmtp_server(recorder) as port, connect(port, use_bdat=True) as c:
            assert c.supports_extension("chunking")
            body = b"Subject: bdat\n\n.leading dot\r\n" + b"x" * (3 << 20) + b"\r\nend"
            await c.sendmail("a@example.org", ["b@example.org"], body)
            await c.sendmail("a@example.org", ["c@example.org"], b"small\r\n")
        big, small = recorder.messages
        assert big.content == normalize(body)
        assert small.content == b"small\r\n"

    run(main())


def test_lmtp_against_ferrosmtp_server() -> None:
    """ferrosmtp.Server in LMTP mode answers once per recipient after the content."""
    recorder = Recorder()

    async def main() -> None:
        async with ferrosmtp_server(recorder, lmtp=True) as port, connect(port, lmtp=True) as c:
            result = await c.sendmail(
                "a@example.org", ["b@example.org", "c@example.org"], b"Subject: l\r\n\r\nx\r\n"
            )
            assert result.refused == {}
            assert set(result.delivered) == {"b@example.org", "c@example.org"}
        assert recorder.messages[0].rcpt_tos == ["b@example.org", "c@example.org"]

    run(main())


def test_sync_helpers() -> None:
    recorder = Recorder()
    with aiosmtpd_server(recorder) as port:
        result = connect(port).sendmail_sync(
            "a@example.org", ["b@example.org"], b"Subject: s\r\n\r\nx\r\n"
        )
        assert result[0] == {}
        message = email.message.EmailMessage()
        message["From"] = "a@example.org"
        message["To"] = "c@example.org"
        message.set_content("sync\n")
        assert connect(port).send_message_sync(message)[0] == {}
    assert [m.rcpt_tos for m in recorder.messages] == [["b@example.org"], ["c@example.org"]]
