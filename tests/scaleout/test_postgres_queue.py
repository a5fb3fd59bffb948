"""What only the PostgreSQL queue has, against a real server on loopback: the versioned
schema, group commit, bodies streamed in chunks, leases across nodes (SKIP LOCKED, expiry,
renewal), attempts, NOTIFY, destination slots across nodes, and a database that goes
away and comes back. (The queue interface itself runs against it in tests/relay.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ferrosmtp.relay.limits import DestinationLimits
from ferrosmtp.relay.postgres import SCHEMA_VERSION, PostgresQueue
from ferrosmtp.relay.queue import (
    Envelope,
    Outcome,
    QueueEntry,
    QueueError,
    Recipient,
    RecipientResult,
)
from tests.relay.support import run
from tests.scaleout.services import PostgresCluster

pytestmark = pytest.mark.interop


async def put(queue: PostgresQueue, data: bytes, **kw: Any) -> QueueEntry:
    body = queue.new_body()
    for i in range(0, len(data), 4096):
        await body.write(data[i : i + 4096])
    return await queue.put(Envelope("a@x.test", [Recipient("b@y.test")]), body, **kw)


def test_schema_is_created_once_versioned_and_a_newer_one_refused(
    queue_url: str, postgres: PostgresCluster
) -> None:
    schema = queue_url.rsplit("%3D", 1)[1]

    async def main() -> None:
        for _ in range(2):  # the second open finds the schema in place
            queue = PostgresQueue(queue_url)
            await queue.open()
            assert await queue.schema_version() == SCHEMA_VERSION
            await queue.close()

    run(main())
    rows = postgres.psql(f"SELECT version, description FROM {schema}.relay_migrations")
    assert rows.splitlines() == [
        f"{SCHEMA_VERSION}|messages, body chunks, attempts, destination slots"
    ]
    postgres.psql(f"INSERT INTO {schema}.relay_migrations VALUES (99, 'from the future')")

    async def newer() -> None:
        queue = PostgresQueue(queue_url)
        with pytest.raises(QueueError, match="version 99"):
            await queue.open()

    run(newer())


def test_concurrent_puts_share_commits(queue_url: str) -> None:
    async def main() -> int:
        queue = PostgresQueue(queue_url)
        await queue.open()
        try:
            before = queue.commits
            await asyncio.gather(*(put(queue, b"m\r\n") for _ in range(50)))
            assert len(await queue.list()) == 50
            return queue.commits - before
        finally:
            await queue.close()

    commits = run(main())
    assert commits < 25, f"50 concurrent puts took {commits} commits"


def test_big_bodies_are_streamed_in_chunks_before_the_put(
    queue_url: str, postgres: PostgresCluster
) -> None:
    schema = queue_url.rsplit("%3D", 1)[1]
    data = bytes(range(256)) * 40  # 10240 octets: ten chunks of 1000 and a tail

    async def main() -> None:
        queue = PostgresQueue(queue_url, chunk_size=1000)
        await queue.open()
        try:
            body = queue.new_body()
            for i in range(0, len(data), 700):
                await body.write(data[i : i + 700])
                assert len(body._buffer) <= 1000  # memory per message: one chunk
            stored = postgres.psql(
                f"SELECT count(*) FROM {schema}.relay_bodies WHERE message_id = '{body.id}'"
            )
            assert int(stored) == 10  # in the database while the client still sends
            assert await queue.list() == []  # but not a message before its put
            entry = await queue.put(Envelope("a@x.test", [Recipient("b@y.test")]), body)
            assert entry.body is None
            (leased,) = await queue.lease(1, 60)
            assert leased.body is None
            assert await queue.read_body(leased) == data
            small = await put(queue, b"s" * 1000)  # one chunk: kept in the entry
            assert small.body == b"s" * 1000
        finally:
            await queue.close()

    run(main())


def test_a_body_with_a_missing_chunk_is_never_acknowledged(
    queue_url: str, postgres: PostgresCluster
) -> None:
    schema = queue_url.rsplit("%3D", 1)[1]

    async def main() -> None:
        queue = PostgresQueue(queue_url, chunk_size=100)
        await queue.open()
        try:
            body = queue.new_body()
            await body.write(b"x" * 450)
            # As if the database had lost an unflushed chunk in a crash.
            postgres.psql(
                f"DELETE FROM {schema}.relay_bodies WHERE message_id = '{body.id}' AND seq = 2"
            )
            with pytest.raises(QueueError, match=r"4 body chunk\(s\) stored, 5 expected$"):
                await queue.put(Envelope("a@x.test", [Recipient("b@y.test")]), body)
            assert await queue.list() == []
            fine = await put(queue, b"y" * 450)  # the next one is not affected
            assert [e.id for e in await queue.list()] == [fine.id]
        finally:
            await queue.close()

    run(main())


def test_two_nodes_never_lease_the_same_message(queue_url: str) -> None:
    async def main() -> None:
        a = PostgresQueue(queue_url, node="a")
        b = PostgresQueue(queue_url, node="b")
        await a.open()
        await b.open()
        try:
            ids = {e.id for e in await asyncio.gather(*(put(a, b"x\r\n") for _ in range(200)))}
            got: dict[str, list[str]] = {"a": [], "b": []}

            async def drain(queue: PostgresQueue, name: str) -> None:
                while True:
                    leased = await queue.lease(7, 60)
                    if not leased:
                        return
                    got[name].extend(e.id for e in leased)

            await asyncio.gather(drain(a, "a"), drain(b, "b"), drain(a, "a"), drain(b, "b"))
            assert not set(got["a"]) & set(got["b"])
            assert sorted(got["a"] + got["b"]) == sorted(ids)
            assert got["a"] and got["b"]
        finally:
            await a.close()
            await b.close()

    run(main())


def test_leases_expire_for_other_nodes_unless_renewed(queue_url: str) -> None:
    async def main() -> None:
        a = PostgresQueue(queue_url, node="a")
        b = PostgresQueue(queue_url, node="b")
        await a.open()
        await b.open()
        try:
            first = await put(a, b"1\r\n")
            second = await put(a, b"2\r\n")
            leased = await a.lease(10, 1.0)
            assert {e.id for e in leased} == {first.id, second.id}
            assert await b.lease(10, 60) == []
            await a.renew([second.id], 30)
            await asyncio.sleep(1.3)
            # The first lease ran out (a "died"): b takes it; the renewed one stays a's.
            assert [e.id for e in await b.lease(10, 60)] == [first.id]
            # a's own restart (same node name) ends a's leases at once.
            a2 = PostgresQueue(queue_url, node="a")
            await a2.open()
            try:
                assert await a2.recover() == 1
                assert [e.id for e in await a2.lease(10, 60)] == [second.id]
            finally:
                await a2.close()
        finally:
            await a.close()
            await b.close()

    run(main())


def test_every_attempt_is_recorded_with_its_node(queue_url: str) -> None:
    async def main() -> None:
        a = PostgresQueue(queue_url, node="a")
        b = PostgresQueue(queue_url, node="b")
        await a.open()
        await b.open()
        try:
            entry = await put(a, b"x\r\n")
            (leased,) = await a.lease(1, 60)
            await a.record(
                leased,
                [RecipientResult("b@y.test", Outcome.PENDING, "4.2.0", "451 later", "mx.y.test")],
                time.time(),
                "451 later",
            )
            (again,) = await b.lease(1, 60)
            sent = RecipientResult("b@y.test", Outcome.SENT, "2.0.0", "250 ok")
            await b.record(again, [sent], None)
            assert await a.list() == []
            history = await a.attempts(entry.id)
            assert [(h["node"].split("/")[0], h["outcome"], h["status"]) for h in history] == [
                ("a", "pending", "4.2.0"),
                ("b", "sent", "2.0.0"),
            ]
        finally:
            await a.close()
            await b.close()

    run(main())


def test_new_mail_wakes_the_other_nodes_at_once(queue_url: str) -> None:
    async def main() -> float:
        a = PostgresQueue(queue_url, node="a")
        b = PostgresQueue(queue_url, node="b")
        await a.open()
        await b.open()
        try:
            await asyncio.sleep(0.5)  # b's LISTEN is in place
            await b.wait_for_work(0)  # forget the wake-up of its first LISTEN
            waiting = asyncio.ensure_future(b.wait_for_work(30))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            started = time.monotonic()
            await put(a, b"x\r\n")  # not leased: due for anyone
            await waiting
            return time.monotonic() - started
        finally:
            await a.close()
            await b.close()

    assert run(main()) < 2.0


def test_destination_slots_are_counted_across_nodes(queue_url: str) -> None:
    async def main() -> None:
        a = PostgresQueue(queue_url, node="a")
        b = PostgresQueue(queue_url, node="b")
        await a.open()
        await b.open()
        try:
            assert sorted(await a.take_slots("mx:25", 5, 3, 60)) == [0, 1, 2]
            assert await b.take_slots("mx:25", 1, 3, 60) == []
            await a.give_slots("mx:25", [1])
            assert await b.take_slots("mx:25", 2, 3, 60) == [1]
            assert await b.take_slots("other:25", 1, 3, 1.0) == [0]
            await asyncio.sleep(1.2)  # b "died" holding it: the slot's lease runs out
            assert await a.take_slots("other:25", 1, 3, 60) == [0]

            # Deliveries from two nodes to one next hop: never more than the limit at once.
            limits = [DestinationLimits(q, 3, tenure=0.3, poll=0.02) for q in (a, b)]
            running = 0
            most = 0
            served = {0: 0, 1: 0}

            async def deliver(node: int) -> None:
                nonlocal running, most
                async with limits[node].slot("hop:25"):
                    running += 1
                    most = max(most, running)
                    await asyncio.sleep(0.02)
                    running -= 1
                served[node] += 1

            await asyncio.gather(*(deliver(i % 2) for i in range(120)))
            assert most <= 3
            assert served == {0: 60, 1: 60}
            for limit in limits:
                await limit.close()
        finally:
            await a.close()
            await b.close()

    run(main())


# --- the database goes away -------------------------------------------------------------


def _wait_connected(queue: PostgresQueue, timeout: float) -> Any:
    async def wait() -> None:
        deadline = time.monotonic() + timeout
        while not queue.connected:
            assert time.monotonic() < deadline, "no reconnection"
            await asyncio.sleep(0.05)

    return wait()


def test_lost_database_refuses_puts_then_carries_on(own_postgres: PostgresCluster) -> None:
    url = own_postgres.schema_url("lost-and-back")

    async def main() -> None:
        queue = PostgresQueue(url, timeout=2.0, doubt_wait=0.5)
        await queue.open()
        try:
            kept = await put(queue, b"before\r\n")
            await asyncio.to_thread(own_postgres.stop_server, "immediate")
            started = time.monotonic()
            with pytest.raises(QueueError):
                await put(queue, b"during\r\n")
            assert time.monotonic() - started < 5
            assert not queue.connected
            with pytest.raises(QueueError):  # while it is away: refused at once
                await put(queue, b"during\r\n")
            assert await queue.lease(10, 60) == []  # nothing to take, no error either
            await asyncio.to_thread(own_postgres.start_server)
            await _wait_connected(queue, 15)
            after = await put(queue, b"after\r\n")
            assert {e.id for e in await queue.lease(10, 60)} == {kept.id, after.id}
            assert queue.reconnects == 1
        finally:
            await queue.close()

    run(main(), timeout=90)


def test_a_record_waits_out_an_outage(own_postgres: PostgresCluster) -> None:
    url = own_postgres.schema_url("record-outage")

    async def main() -> None:
        queue = PostgresQueue(url, timeout=2.0)
        await queue.open()
        try:
            await put(queue, b"x\r\n")
            (leased,) = await queue.lease(1, 60)
            await asyncio.to_thread(own_postgres.stop_server, "fast")
            recording = asyncio.ensure_future(
                queue.record(leased, [RecipientResult("b@y.test", Outcome.SENT)], None)
            )
            await asyncio.sleep(1.0)
            assert not recording.done()  # not given up: the delivery must be written down
            await asyncio.to_thread(own_postgres.start_server)
            await asyncio.wait_for(recording, 20)
            assert await queue.list() == []
        finally:
            await queue.close()

    run(main(), timeout=90)


def test_a_slot_given_back_during_an_outage_is_freed_when_the_database_returns(
    own_postgres: PostgresCluster,
) -> None:
    url = own_postgres.schema_url("slots-outage")

    async def main() -> None:
        a = PostgresQueue(url, node="a", timeout=2.0)
        b = PostgresQueue(url, node="b", timeout=2.0)
        await a.open()
        await b.open()
        try:
            assert await a.take_slots("hop:25", 2, 2, 60) == [0, 1]
            await asyncio.to_thread(own_postgres.stop_server, "fast")
            await a.give_slots("hop:25", [0])  # the database is away: only a knows
            assert not a.connected
            await asyncio.to_thread(own_postgres.start_server)
            await _wait_connected(a, 15)
            got: list[int] = []
            for _ in range(100):  # b finds out about the restart on its first query
                got = list(await b.take_slots("hop:25", 2, 2, 60))
                if got:
                    break
                await asyncio.sleep(0.1)
            assert got == [0]  # freed when a came back; slot 1 is a's, renewed
        finally:
            await a.close()
            await b.close()

    run(main(), timeout=90)


def test_restart_under_put_load_no_acknowledgement_without_commit(
    own_postgres: PostgresCluster,
) -> None:
    """Puts run while the server is killed (immediate: as a crash) and started again:
    every put that returned is stored, and nothing stored was refused."""
    url = own_postgres.schema_url("restart-under-load")

    async def main() -> tuple[set[str], set[str], int]:
        queue = PostgresQueue(url, timeout=2.0, doubt_wait=1.0)
        await queue.open()
        acked: set[str] = set()
        refused = 0
        stop = asyncio.Event()

        async def sender() -> None:
            nonlocal refused
            while not stop.is_set():
                try:
                    entry = await put(queue, b"x" * 300, lease=60)
                    acked.add(entry.id)
                except QueueError:
                    refused += 1
                    await asyncio.sleep(0.05)

        try:
            senders = [asyncio.ensure_future(sender()) for _ in range(10)]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(own_postgres.stop_server, "immediate")
            # Down until a put has been refused, not for a fixed time: a put in flight
            # at the crash may wait its timeout (2 s) for a connection, and a short
            # outage can end before any put gives up (CI once saw none refused).
            deadline = time.monotonic() + 30
            while refused == 0:
                assert time.monotonic() < deadline, "no put refused while the server was down"
                await asyncio.sleep(0.05)
            await asyncio.to_thread(own_postgres.start_server)
            await _wait_connected(queue, 20)
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*senders)
            stored = {e.id for e in await queue.list()}
            return acked, stored, refused
        finally:
            await queue.close()

    acked, stored, refused = run(main(), timeout=120)
    assert acked and refused  # load before, refusals while it was down
    assert acked - stored == set(), "acknowledged but not stored"
    assert stored - acked == set(), "stored though refused (the client would send it again)"


def test_queue_list_json_from_the_server_matches_the_entries(queue_url: str) -> None:
    """``list_json`` (built by PostgreSQL for ``queue list --json``) says what
    ``QueueEntry.to_json`` says, for fresh, partly delivered and leased messages."""
    import json

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        queue = PostgresQueue(queue_url)
        await queue.open()
        try:
            await put(queue, b"fresh\r\n")
            body = queue.new_body()
            await body.write(b"two\r\n")
            await queue.put(
                Envelope("", [Recipient("b@y.test"), Recipient("c@z.test", notify=("NEVER",))]),
                body,
            )
            await put(queue, b"leased\r\n", lease=60)
            (partly,) = [e for e in await queue.lease(10, 60) if e.envelope.sender == ""]
            done = RecipientResult("b@y.test", Outcome.SENT, "2.0.0", "250 ok")
            await queue.record(partly, [done], time.time() + 300, "451 later")
            entries = [e.to_json() for e in await queue.list()]
            lines = await asyncio.to_thread(lambda: list(queue.list_json()))
            return entries, [json.loads(line) for line in lines]
        finally:
            await queue.close()

    entries, lines = run(main())
    assert len(lines) == 3
    for entry, line in zip(entries, lines, strict=True):
        assert line.keys() == entry.keys()
        for key, value in entry.items():
            if isinstance(value, float):
                assert abs(line[key] - value) < 1e-3, key
            else:
                assert line[key] == value, key
    assert [line["recipients"] for line in lines] == [["b@y.test"], ["c@z.test"], ["b@y.test"]]
