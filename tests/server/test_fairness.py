"""One connection's pipelined flood gives the event loop back every EVENTS_PER_TURN events
(checklist B10), on the synchronous path and when every event runs an async hook that
never suspends; and the replies are all there, in order, in the end. Driven through a fake
transport, so the count of replies between two turns of the loop is exact."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from ferrosmtp.server import EVENTS_PER_TURN, Server


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []
        self.reading = True

    def write(self, data: Any) -> None:
        self.chunks.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def replies(self) -> list[bytes]:
        return b"".join(self.chunks).splitlines()


class RcptHook:
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 hooked"  # an async hook that never suspends


@pytest.mark.parametrize("handler", [object(), RcptHook()], ids=["no hook", "async hook"])
def test_a_flood_yields_to_the_loop_every_turn(handler: object) -> None:
    count = 3 * EVENTS_PER_TURN + 10

    async def main() -> None:
        server = Server(handler, hostname="mx.test")
        protocol = server.factory()
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"EHLO c.example\r\n")  # EHLO is a sync point (RFC 2920)
        await asyncio.sleep(0)
        ehlo_lines = len(transport.replies()) - 1
        total = 1 + ehlo_lines + 1 + count
        turns: list[int] = []  # replies written each time the loop got control back

        def tick() -> None:
            turns.append(len(transport.replies()))
            if len(transport.replies()) < total:
                asyncio.get_running_loop().call_soon(tick)

        asyncio.get_running_loop().call_soon(tick)
        # One pipelined group (RFC 2920): MAIL and many RCPTs, under max_recipients.
        protocol.data_received(
            b"MAIL FROM:<a@b.example>\r\n" + b"RCPT TO:<c@d.example>\r\n" * count
        )
        for _ in range(100):
            await asyncio.sleep(0)
            if len(transport.replies()) >= total:
                break
        replies = transport.replies()
        turns.append(len(replies))
        assert len(replies) == 1 + ehlo_lines + 1 + count  # greeting, EHLO, MAIL, RCPTs
        expected = b"250 2.1.5 hooked" if isinstance(handler, RcptHook) else b"250 2.1.5 OK"
        assert replies[-count:] == [expected] * count
        # The loop ran between batches, and no batch held more than a turn's events.
        steps = [b - a for a, b in itertools.pairwise(turns) if b > a]
        assert len(steps) >= 3, turns
        assert max(steps) <= EVENTS_PER_TURN, turns

    asyncio.run(main())
