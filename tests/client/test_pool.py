"""ferrosmtp.Pool: a fixed number of reused connections shared by many tasks."""

from __future__ import annotations

import asyncio
import collections

import pytest

from ferrosmtp.client import Pool
from ferrosmtp.errors import SMTPException, SMTPRecipientsRefused, SMTPServerDisconnected

from .conftest import run
from .fakeserver import FakeServer, fake_server

MESSAGE = b"Subject: pooled\r\n\r\nbody\r\n"


def pool(server: FakeServer, **options: object) -> Pool:
    options.setdefault("timeout", 5)
    options.setdefault("local_hostname", "client.test")
    return Pool("127.0.0.1", server.port, **options)  # type: ignore[arg-type]


def quits(server: FakeServer) -> int:
    return sum(1 for line in server.commands if line == b"QUIT")


def test_many_tasks_every_message_delivered_exactly_once() -> None:
    async def main() -> None:
        async with fake_server() as server:
            async with pool(server, size=5) as p:

                async def worker(w: int) -> None:
                    for i in range(10):
                        result = await p.sendmail(
                            "a@example.org", [f"w{w}m{i}@example.org"], MESSAGE
                        )
                        assert result == ({}, "2.0.0 Ok: queued")

                await asyncio.gather(*(worker(w) for w in range(20)))
                assert p.idle_connections == 5
            counts = collections.Counter(m.rcpt_to[0] for m in server.messages)
            assert len(counts) == 200 and set(counts.values()) == {1}
            assert len(server.sessions) == 5  # never more than size connections
            assert quits(server) == 5  # closing the pool QUITs each one

    run(main())


def test_connections_open_lazily_and_are_reused() -> None:
    async def main() -> None:
        async with fake_server() as server:
            async with pool(server, size=8) as p:
                assert len(server.sessions) == 0
                for i in range(5):
                    await p.sendmail("a@example.org", [f"r{i}@example.org"], MESSAGE)
                assert len(server.sessions) == 1  # sequential sends reuse one connection
                verbs = [line.split(b" ")[0] for line in server.commands]
                assert verbs.count(b"EHLO") == 1 and b"RSET" not in verbs

    run(main())


def test_reconnects_after_the_server_closed_idle_connections() -> None:
    async def main() -> None:
        async with fake_server() as server:
            async with pool(server, size=3) as p:
                await asyncio.gather(
                    *(p.sendmail("a@example.org", [f"a{i}@example.org"], MESSAGE) for i in range(6))
                )
                for session in server.sessions:
                    session.close()
                await asyncio.sleep(0.05)
                await asyncio.gather(
                    *(p.sendmail("a@example.org", [f"b{i}@example.org"], MESSAGE) for i in range(6))
                )
            assert len(server.messages) == 12
            assert len(server.sessions) > 3

    run(main())


def test_stale_connection_detected_mid_send_is_retried_once_on_a_new_one() -> None:
    async def main() -> None:
        async with fake_server() as server:
            async with pool(server, size=1) as p:
                await p.sendmail("a@example.org", ["first@example.org"], MESSAGE)
                # The server drops the (reused) connection when our MAIL arrives, before
                # anything of the message went out: safe to retry on a fresh connection.
                server.behaviour.close_after_once = "MAIL"
                await p.sendmail("a@example.org", ["second@example.org"], MESSAGE)
            assert [m.rcpt_to[0] for m in server.messages] == [
                "first@example.org",
                "second@example.org",
            ]
            assert len(server.sessions) == 2

    run(main())


def test_no_retry_once_content_was_sent() -> None:
    async def main() -> None:
        async with fake_server() as server:
            async with pool(server, size=1) as p:
                await p.sendmail("a@example.org", ["first@example.org"], MESSAGE)
                server.behaviour.final_reply = b""  # swallow the reply to the content...
                server.behaviour.final_delay = 0.0
                sessions = len(server.sessions)

                async def drop_soon() -> None:
                    await asyncio.sleep(0.2)
                    server.sessions[-1].close()  # ...then drop the connection

                dropper = asyncio.ensure_future(drop_soon())
                with pytest.raises(SMTPServerDisconnected):
                    await p.sendmail("a@example.org", ["second@example.org"], MESSAGE)
                await dropper
                # the message may have been accepted: it must not be sent twice
                assert len(server.sessions) == sessions
                assert [m.rcpt_to[0] for m in server.messages].count("second@example.org") == 1

    run(main())


def test_refused_message_keeps_the_connection() -> None:
    async def main() -> None:
        async with fake_server(reject_rcpt={"bad@example.org": b"550 5.1.1 unknown\r\n"}) as server:
            async with pool(server, size=2) as p:
                with pytest.raises(SMTPRecipientsRefused):
                    await p.sendmail("a@example.org", ["bad@example.org"], MESSAGE)
                await p.sendmail("a@example.org", ["good@example.org"], MESSAGE)
                with pytest.raises(ValueError):
                    await p.sendmail("a@example.org", ["bad\r\n@example.org"], MESSAGE)
                await p.sendmail("a@example.org", ["good@example.org"], MESSAGE)
            assert len(server.sessions) == 1
            assert len(server.messages) == 2

    run(main())


def test_idle_connections_are_closed_after_idle_timeout() -> None:
    async def main() -> None:
        async with fake_server() as server:
            async with pool(server, size=4, idle_timeout=0.2) as p:
                await asyncio.gather(
                    *(p.sendmail("a@example.org", [f"r{i}@example.org"], MESSAGE) for i in range(8))
                )
                opened = len(server.sessions)
                assert p.idle_connections == opened
                await asyncio.sleep(0.6)
                assert p.idle_connections == 0
                assert quits(server) == opened  # closed politely
                await p.sendmail("a@example.org", ["later@example.org"], MESSAGE)  # reopens
            assert len(server.sessions) == opened + 1

    run(main())


def test_close_waits_for_in_flight_sends_and_refuses_new_ones() -> None:
    async def main() -> None:
        async with fake_server(final_delay=0.3) as server:
            p = pool(server, size=2)
            sends = [
                asyncio.ensure_future(p.sendmail("a@example.org", [f"r{i}@example.org"], MESSAGE))
                for i in range(4)
            ]
            await asyncio.sleep(0.1)
            await p.close()
            assert all(s.done() and s.result()[0] == {} for s in sends)
            assert len(server.messages) == 4
            with pytest.raises(SMTPException, match="closed"):
                await p.sendmail("a@example.org", ["late@example.org"], MESSAGE)
            await asyncio.sleep(0.05)
            assert quits(server) == len(server.sessions)

    run(main())


def test_send_message_through_the_pool() -> None:
    import email.message

    async def main() -> None:
        async with fake_server() as server, pool(server, size=2) as p:
            message = email.message.EmailMessage()
            message["From"] = "a@example.org"
            message["To"] = "b@example.org"
            message["Subject"] = "hi"
            message.set_content("hello\n")
            await p.send_message(message)
            assert server.messages[0].rcpt_to == ["b@example.org"]

    run(main())


def test_bad_options_fail_at_construction() -> None:
    with pytest.raises(ValueError):
        Pool("127.0.0.1", 25, size=0)
    with pytest.raises(ValueError):
        Pool("127.0.0.1", 25, use_tls=True, start_tls=True)


def test_connections_carry_two_messages_before_more_are_opened() -> None:
    async def main() -> None:
        async with fake_server() as server:
            async with pool(server, size=4) as p:

                async def worker(w: int) -> None:
                    for i in range(5):
                        await p.sendmail("a@example.org", [f"w{w}m{i}@example.org"], MESSAGE)

                await asyncio.gather(*(worker(w) for w in range(4)))
            assert len(server.sessions) == 2  # 4 tasks: 2 connections, 2 messages each
            assert len(server.messages) == 20
            # one message's content and the next envelope went out in one write
            assert any(b"\r\n.\r\nMAIL FROM:" in chunk for chunk in server.reads)
        async with fake_server() as server:
            async with pool(server, size=4, pipeline_depth=1) as p:
                await asyncio.gather(
                    *(p.sendmail("a@example.org", [f"r{i}@example.org"], MESSAGE) for i in range(4))
                )
            assert len(server.sessions) == 4
        async with fake_server(capabilities=["SIZE 100000"]) as server:  # no PIPELINING
            async with pool(server, size=4) as p:
                await p.connect()
                await asyncio.gather(
                    *(p.sendmail("a@example.org", [f"r{i}@example.org"], MESSAGE) for i in range(4))
                )
            assert len(server.messages) == 4

    run(main())


def test_connect_fails_fast() -> None:
    async def main() -> None:
        async with fake_server(greeting=b"554 5.7.1 not you\r\n") as server:
            p = pool(server)
            with pytest.raises(SMTPException):
                await p.connect()
            assert p.connections == 0
            await p.close()

    run(main())
