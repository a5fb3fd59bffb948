"""DestinationLimits over slots counted in the process (the SQLite spool's): the limit
holds, waiters are served first come first served, and a thousand waiting deliveries
cost one fetcher, not a thousand polls."""

from __future__ import annotations

import asyncio
import math
import time

from ferrosmtp.relay.limits import DestinationLimits, LocalSlots
from tests.relay.support import run


class CountingSlots(LocalSlots):
    def __init__(self) -> None:
        super().__init__()
        self.takes = 0

    async def take_slots(self, destination: str, want: int, limit: int, lease: float) -> list[int]:
        self.takes += 1
        return list(await super().take_slots(destination, want, limit, lease))


def test_the_limit_holds_and_waiters_are_served_in_order() -> None:
    async def main() -> None:
        source = CountingSlots()
        limits = DestinationLimits(source, 3, tenure=math.inf)
        running = most = 0
        order: list[int] = []

        async def deliver(n: int) -> None:
            nonlocal running, most
            async with limits.slot("hop:25"):
                order.append(n)
                running += 1
                most = max(most, running)
                await asyncio.sleep(0.01)
                running -= 1

        tasks = []
        for n in range(30):
            tasks.append(asyncio.ensure_future(deliver(n)))
            await asyncio.sleep(0)  # queue up in this order
        await asyncio.gather(*tasks)
        assert most == 3
        assert order == list(range(30))
        await limits.close()
        assert await source.take_slots("hop:25", 3, 3, 60) == [0, 1, 2]  # all given back

    run(main())


def test_a_thousand_waiters_are_one_fetcher() -> None:
    async def main() -> tuple[int, float]:
        source = CountingSlots()
        limits = DestinationLimits(source, 20, tenure=math.inf, poll=0.05)

        async def deliver() -> None:
            async with limits.slot("hop:25"):
                await asyncio.sleep(0.02)

        started = time.process_time()
        await asyncio.gather(*(deliver() for _ in range(1000)))
        cpu = time.process_time() - started
        await limits.close()
        return source.takes, cpu

    takes, cpu = run(main())
    assert takes < 50, takes  # not a query per waiter and poll
    assert cpu < 2.0, cpu
