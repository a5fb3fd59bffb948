"""The delivery side against misbehaving and busy next hops, driven through the library
(``Deliverer``) so timeouts can be short: a next hop that never greets, one that hangs
after the message, the per-destination concurrency limit and connection reuse."""

from __future__ import annotations

import asyncio
import socket
import time

from ferrosmtp.relay.delivery import Deliverer, DeliveryConfig
from ferrosmtp.relay.queue import Envelope, Outcome, QueueEntry, Recipient
from ferrosmtp.relay.routing import Hop
from tests.relay.support import message, next_hop, run


def entry(n: int = 0) -> QueueEntry:
    return QueueEntry(f"ID{n}", Envelope("a@x.test", [Recipient("b@y.test")]), 10, time.time())


def test_a_next_hop_that_never_greets_is_cut_by_the_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)  # accepts (in the kernel) and never says a word
        port = silent.getsockname()[1]
        deliverer = Deliverer(DeliveryConfig(helo="relay.test", connect_timeout=1, timeout=1))

        async def main() -> list[object]:
            started = time.monotonic()
            result = await deliverer.deliver(
                entry(), message(), [Recipient("b@y.test")], [Hop("h", "127.0.0.1", port)]
            )
            assert time.monotonic() - started < 5
            return result  # type: ignore[return-value]

        (attempt,) = run(main())
    assert attempt.result.outcome is Outcome.PENDING  # type: ignore[attr-defined]
    assert "127.0.0.1" in attempt.result.diagnostic  # type: ignore[attr-defined]


def test_a_next_hop_that_hangs_after_the_message_is_cut_by_the_data_timeout() -> None:
    with next_hop() as (hop, port):
        hop.hang = 30
        deliverer = Deliverer(DeliveryConfig(helo="relay.test", timeout=5, data_timeout=1))

        async def main() -> object:
            started = time.monotonic()
            (attempt,) = await deliverer.deliver(
                entry(), message(), [Recipient("b@y.test")], [Hop("h", "127.0.0.1", port)]
            )
            assert time.monotonic() - started < 10
            await deliverer.close()
            return attempt

        attempt = run(main())
        assert attempt.result.outcome is Outcome.PENDING  # type: ignore[attr-defined]


def test_concurrency_per_destination_is_limited_and_connections_are_reused() -> None:
    with next_hop() as (hop, port):
        hop.hang = 0.1
        deliverer = Deliverer(DeliveryConfig(helo="relay.test", concurrency=3))
        hops = [Hop("h", "127.0.0.1", port)]

        async def main() -> None:
            results = await asyncio.gather(
                *(
                    deliverer.deliver(entry(i), message(f"m{i}"), [Recipient("b@y.test")], hops)
                    for i in range(30)
                )
            )
            assert all(r[0].result.outcome is Outcome.SENT for r in results)
            await deliverer.close()

        run(main())
        assert len(hop.messages) == 30
        assert hop.most_busy == 3
        assert len(hop.sessions) == 3  # 30 messages over 3 reused connections


def test_a_hop_that_comes_back_is_used_at_once() -> None:
    """While a hop is down only one message a second tries it; the moment it answers
    again, every message waiting goes through (no stale 'down' verdict)."""
    from tests.peers import free_port

    port = free_port()
    deliverer = Deliverer(DeliveryConfig(helo="relay.test", probe_interval=0.5))
    hops = [Hop("h", "127.0.0.1", port)]

    async def batch(n: int) -> list[Outcome]:
        results = await asyncio.gather(
            *(
                deliverer.deliver(entry(i), message(), [Recipient("b@y.test")], hops)
                for i in range(n)
            )
        )
        return [r[0].result.outcome for r in results]

    async def main() -> None:
        assert set(await batch(50)) == {Outcome.PENDING}
        with next_hop(port=port) as (hop, _):
            await asyncio.sleep(0.6)
            assert set(await batch(20)) == {Outcome.SENT}
            assert len(hop.messages) == 20
        await deliverer.close()

    run(main())


def test_a_fast_hop_carries_several_transactions_at_once_on_one_connection() -> None:
    """To a hop that answers fast, transactions share a connection (pipelined: each
    message's content goes with the next one's envelope); each message arrives whole."""
    with next_hop() as (hop, port):
        config = DeliveryConfig(helo="relay.test", concurrency=4, pipeline_under=60)
        deliverer = Deliverer(config)
        hops = [Hop("h", "127.0.0.1", port)]

        async def main() -> None:
            (first,) = await deliverer.deliver(entry(), message("m0"), [Recipient("x@y")], hops)
            assert first.result.outcome is Outcome.SENT
            results = await asyncio.gather(
                *(
                    deliverer.deliver(entry(i), message(f"m{i}"), [Recipient("b@y.test")], hops)
                    for i in range(1, 5)
                )
            )
            assert all(r[0].result.outcome is Outcome.SENT for r in results)
            await deliverer.close()

        run(main())
        assert sorted(m.message["Subject"] for m in hop.messages) == [f"m{i}" for i in range(5)]
        assert len(hop.sessions) == 1  # all five over the first connection


def test_big_bodies_go_alone_on_their_connection() -> None:
    """Over PIPELINE_MAX_BODY, a transaction does not share a connection even to a fast
    hop (a peer's replies to pipelined big transactions can wait 40 ms on Nagle)."""
    from ferrosmtp.relay.delivery import PIPELINE_MAX_BODY

    with next_hop() as (hop, port):
        config = DeliveryConfig(helo="relay.test", concurrency=4, pipeline_under=60)
        deliverer = Deliverer(config)
        hops = [Hop("h", "127.0.0.1", port)]
        big = "x" * 998 + "\r\n"
        lines = PIPELINE_MAX_BODY // len(big) + 1

        async def main() -> None:
            (first,) = await deliverer.deliver(entry(), message("m0"), [Recipient("x@y")], hops)
            assert first.result.outcome is Outcome.SENT
            results = await asyncio.gather(
                *(
                    deliverer.deliver(
                        entry(i), message(f"m{i}", body=big * lines), [Recipient("b@y.test")], hops
                    )
                    for i in range(1, 5)
                )
            )
            assert all(r[0].result.outcome is Outcome.SENT for r in results)
            await deliverer.close()

        run(main())
        assert sorted(m.message["Subject"] for m in hop.messages) == [f"m{i}" for i in range(5)]
        assert len(hop.sessions) == 4  # the first connection, and three more


def test_transactions_behind_a_closed_connection_go_again_on_a_new_one() -> None:
    """The hop answers the first message 421 and closes: that message is deferred, the
    ones pipelined behind it on the same connection go through on a new one."""
    with next_hop() as (hop, port):
        config = DeliveryConfig(helo="relay.test", concurrency=4, pipeline_under=60)
        deliverer = Deliverer(config)
        hops = [Hop("h", "127.0.0.1", port)]

        async def main() -> list[Outcome]:
            (first,) = await deliverer.deliver(entry(), message("m"), [Recipient("x@y")], hops)
            assert first.result.outcome is Outcome.SENT  # the connection the others join
            hop.data_replies = ["421 4.3.2 Service shutting down"]
            results = await asyncio.gather(
                *(
                    deliverer.deliver(entry(i), message(f"m{i}"), [Recipient("b@y.test")], hops)
                    for i in range(4)
                )
            )
            await deliverer.close()
            return [r[0].result.outcome for r in results]

        outcomes = run(main())
        assert outcomes == [Outcome.PENDING, Outcome.SENT, Outcome.SENT, Outcome.SENT]
        assert sorted(m.message["Subject"] for m in hop.messages) == ["m", "m1", "m2", "m3"]
