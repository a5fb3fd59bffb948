"""``pipeline_bdat=True``: a message of one chunk goes as ``BDAT n LAST`` in the same write
as MAIL and RCPT (RFC 3030), one round trip per message; against the fake server and a real
Postfix smtpd, including refusals that arrive after the chunk has been sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from ferrosmtp.client import Client, Pool
from ferrosmtp.errors import SMTPDataError, SMTPRecipientsRefused, SMTPSenderRefused
from tests.peers import PostfixServer

from .conftest import run
from .fakeserver import fake_server

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: along\r\n\r\n.dot\r\nbody\r\n"
CHUNKING = ["PIPELINING", "CHUNKING", "SIZE 10485760", "8BITMIME"]


def client(port: int, **options: Any) -> Client:
    options.setdefault("timeout", 10)
    options.setdefault("local_hostname", "client.test")
    options.setdefault("pipeline_bdat", True)
    return Client("127.0.0.1", port, **options)


class Timeline:
    """What the client wrote and read, in order: ``"w"`` per write, ``"r"`` per read."""

    def __init__(self, c: Client) -> None:
        protocol: Any = c._protocol
        self.events: list[str] = []
        self.written: list[bytes] = []
        write, received = protocol.write, protocol.data_received

        def on_write(data: bytes) -> None:
            self.events.append("w")
            self.written.append(data)
            write(data)

        def on_read(data: bytes) -> None:
            self.events.append("r")
            received(data)

        protocol.write, protocol.data_received = on_write, on_read

    def round_trips(self) -> int:
        """Each write that follows a read starts another round trip."""
        trips, last = 0, "r"
        for event in self.events:
            if event == "w" and last == "r":
                trips += 1
            last = event
        return trips

    def clear(self) -> None:
        self.events.clear()
        self.written.clear()


# --- the fake server ------------------------------------------------------------------------


def test_the_chunk_rides_with_the_envelope() -> None:
    async def main() -> None:
        async with fake_server(capabilities=CHUNKING) as server:
            async with client(server.port) as c:
                timeline = Timeline(c)
                for i in range(3):
                    timeline.clear()
                    result = await c.sendmail("a@example.org", [f"r{i}@example.org"], MESSAGE)
                    assert result == ({}, "2.0.0 Ok: queued")
                    assert timeline.events[0] == "w" and timeline.round_trips() == 1
                    (wire,) = timeline.written
                    assert wire.startswith(b"MAIL FROM:<a@example.org> SIZE=")
                    rcpt = f"RCPT TO:<r{i}@example.org>\r\nBDAT {len(MESSAGE)} LAST\r\n"
                    assert rcpt.encode() in wire
                    assert wire.endswith(MESSAGE)
            assert [m.via for m in server.messages] == ["BDAT"] * 3
            assert all(m.content == MESSAGE for m in server.messages)

    run(main())


def test_refused_recipients_after_the_chunk_was_sent() -> None:
    async def main() -> None:
        refusal = b"550 5.1.1 <no@example.org>: Recipient address rejected\r\n"
        async with fake_server(capabilities=CHUNKING, reject_rcpt={"no@example.org": refusal}) as s:
            async with client(s.port) as c:
                with pytest.raises(SMTPRecipientsRefused) as info:
                    await c.sendmail("a@example.org", ["no@example.org"], MESSAGE)
                assert info.value.recipients[0].code == 550
                # Some refused, some taken: the message goes to the others.
                result = await c.sendmail(
                    "a@example.org", ["no@example.org", "yes@example.org"], MESSAGE
                )
                assert set(result.refused) == {"no@example.org"}
                assert list(result.delivered) == ["yes@example.org"]
                # The session goes on: nothing to reset, BDAT LAST ended the transaction.
                await c.sendmail("a@example.org", ["after@example.org"], MESSAGE)
            verbs = [line.split(b" ")[0] for line in s.commands]
            assert b"RSET" not in verbs
            assert s.messages[-1].rcpt_to == ["after@example.org"]

    run(main())


def test_refused_sender_after_the_chunk_was_sent() -> None:
    async def main() -> None:
        refusal = b"553 5.7.1 <a@example.org>: Sender address rejected\r\n"
        async with fake_server(capabilities=CHUNKING, reject_mail=refusal) as s:
            async with client(s.port) as c:
                with pytest.raises(SMTPSenderRefused) as info:
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert info.value.code == 553 and info.value.sender == "a@example.org"
                s.behaviour.reject_mail = None
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            # (this fake server takes RCPT and BDAT after a refused MAIL; Postfix does not)
            assert s.messages[-1].mail_from == "a@example.org"

    run(main())


def test_a_refused_chunk_is_a_data_error() -> None:
    async def main() -> None:
        async with fake_server(
            capabilities=CHUNKING, final_reply=b"554 5.7.1 Message refused\r\n"
        ) as s:
            async with client(s.port) as c:
                with pytest.raises(SMTPDataError) as info:
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert info.value.code == 554

    run(main())


def test_without_chunking_or_when_asked_not_to_it_is_data() -> None:
    async def main() -> None:
        async with fake_server() as s:  # PIPELINING, no CHUNKING
            async with client(s.port) as c:
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
        async with fake_server(capabilities=CHUNKING) as s2:
            async with client(s2.port) as c:
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE, use_bdat=False)
                await c.sendmail("a@example.org", ["b@example.org"], b"x" * (2 << 20))
        assert [m.via for m in s.messages] == ["DATA"]
        # Over 1 MiB the usual rules hold (DATA below bdat_threshold, BDAT chunks sent
        # once a recipient is accepted).
        assert [m.via for m in s2.messages] == ["DATA", "DATA"]

    run(main())


def test_off_by_default() -> None:
    async def main() -> None:
        async with fake_server(capabilities=CHUNKING) as s:
            async with client(s.port, pipeline_bdat=False) as c:
                timeline = Timeline(c)
                await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert timeline.round_trips() == 2  # the envelope, then the content
        assert [m.via for m in s.messages] == ["DATA"]

    run(main())


def test_pool_and_tasks_sharing_a_client() -> None:
    async def main() -> None:
        async with fake_server(capabilities=CHUNKING) as s:
            async with Pool(
                "127.0.0.1", s.port, size=3, pipeline_bdat=True, local_hostname="client.test"
            ) as pool:
                await asyncio.gather(
                    *(
                        pool.sendmail("a@example.org", [f"p{i}@example.org"], MESSAGE)
                        for i in range(30)
                    )
                )
            async with client(s.port) as c:
                await asyncio.gather(
                    *(
                        c.sendmail("a@example.org", [f"c{i}@example.org"], MESSAGE)
                        for i in range(10)
                    )
                )
        received = sorted(m.rcpt_to[0] for m in s.messages)
        expected = [f"p{i}@example.org" for i in range(30)] + [
            f"c{i}@example.org" for i in range(10)
        ]
        assert received == sorted(expected)
        assert {m.via for m in s.messages} == {"BDAT"}

    run(main())


# --- a real Postfix -------------------------------------------------------------------------


@pytest.mark.interop
def test_postfix_one_round_trip_per_message(
    postfix_server_factory: Callable[..., PostfixServer],
) -> None:
    server = postfix_server_factory(
        main_cf={
            "smtpd_delay_reject": "no",  # refuse the sender at MAIL, not at RCPT
            "smtpd_sender_restrictions": "check_sender_access inline:{refused@example.org=REJECT}",
            "smtpd_recipient_restrictions": (
                "check_recipient_access inline:{nobody@example.net=REJECT}, permit"
            ),
        }
    )

    async def main() -> None:
        async with client(server.port, start_tls=False) as c:
            await c.ehlo()
            assert c.supports_extension("chunking") and c.supports_extension("pipelining")
            timeline = Timeline(c)
            for i in range(3):
                timeline.clear()
                await c.sendmail("a@example.org", [f"along{i}@example.net"], MESSAGE)
                assert timeline.events[0] == "w" and timeline.round_trips() == 1
                assert len(timeline.written) == 1  # MAIL, RCPT, BDAT LAST and the chunk
            # Refusals with the chunk already on the wire: Postfix reads the chunk and
            # discards it, and the session goes on in step.
            timeline.clear()
            with pytest.raises(SMTPRecipientsRefused):
                await c.sendmail(
                    "a@example.org", ["nobody@example.net"], b"Subject: x\r\n\r\n1\r\n"
                )
            assert timeline.round_trips() == 1
            with pytest.raises(SMTPSenderRefused):
                await c.sendmail(
                    "refused@example.org", ["b@example.net"], b"Subject: y\r\n\r\n2\r\n"
                )
            result = await c.sendmail(
                "a@example.org", ["nobody@example.net", "some@example.net"], MESSAGE
            )
            assert set(result.refused) == {"nobody@example.net"}
            await c.sendmail("a@example.org", ["last@example.net"], MESSAGE)

    run(main())
    delivered = server.wait_messages(5)
    assert sorted(m.recipient for m in delivered) == [
        "along0@example.net",
        "along1@example.net",
        "along2@example.net",
        "last@example.net",
        "some@example.net",
    ]
    assert all(m.body == b".dot\nbody\n" for m in delivered)
    log = server.maillog()
    assert "nobody@example.net" in log and "refused@example.org" in log  # the refusals
    assert "unknown command" not in log.lower()  # no chunk was read as commands
