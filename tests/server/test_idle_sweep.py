"""The server's one timer for every connection's idle and hook timeouts (server/idle.py):
it wakes when a deadline may have come, ends what is due, coalesces deadlines that are
close together, and over a socket cuts idle sessions, fast path or state machine, while
sparing the ones that make progress."""

from __future__ import annotations

import asyncio
import time

from ferrosmtp import handlers
from ferrosmtp.server.idle import SLACK, IdleSweep
from tests.server.support import Raw, running

TIMEOUT_REPLY = b"421 4.4.2 mx.test Error: timeout exceeded\r\n"


class Item:
    """A connection as the sweep sees it: a deadline and a limit."""

    def __init__(self, deadline: float, limit: float) -> None:
        self.deadline, self.limit = deadline, limit
        self.checks = 0
        self.ended_at: float | None = None


def check(item: Item, now: float) -> float:
    item.checks += 1
    if item.ended_at is not None:
        return float("inf")
    if now < item.deadline:
        return item.deadline + item.limit / SLACK
    item.ended_at = now
    return float("inf")


def run_sweep(items: list[Item], arm_at: float, wait: float) -> int:
    """Arm a sweep over ``items`` once, run the loop for ``wait`` seconds; the number of
    sweeps it made."""
    sweeps = 0

    def counted(item: Item, now: float) -> float:
        nonlocal sweeps
        if item is items[0]:
            sweeps += 1
        return check(item, now)

    async def main() -> None:
        sweep = IdleSweep(items, counted)
        sweep.arm(asyncio.get_running_loop(), arm_at)
        await asyncio.sleep(wait)
        sweep.stop()

    asyncio.run(main())
    return sweeps


def test_each_deadline_is_kept_within_its_slack() -> None:
    now = time.monotonic()
    limit = 0.2
    items = [Item(now + 0.05 * i, limit) for i in range(1, 5)]
    # Armed as the server arms it: for the first deadline, plus its slack.
    run_sweep(items, items[0].deadline + limit / SLACK, 0.6)
    for item in items:
        assert item.ended_at is not None
        # Never early; late by the slack at most (and the loop's own scheduling).
        assert item.deadline <= item.ended_at < item.deadline + limit / SLACK + 0.1


def test_deadlines_close_together_take_one_sweep() -> None:
    now = time.monotonic()
    limit = 6.4  # slack 0.1 s: 200 deadlines within 50 ms are one wake-up
    items = [Item(now + 0.1 + i * 0.00025, limit) for i in range(200)]
    sweeps = run_sweep(items, now + 0.1, 0.5)
    assert all(item.ended_at is not None for item in items)
    assert sweeps <= 2, sweeps


def test_arm_keeps_the_earlier_time_and_stop_cancels() -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        item = Item(now, 1.0)  # due at once
        sweep = IdleSweep([item], check)
        sweep.arm(loop, now + 0.05)
        sweep.arm(loop, now + 10)  # later: a no-op
        await asyncio.sleep(0.3)
        fired = item.checks
        other = Item(now, 1.0)
        stopped = IdleSweep([other], check)
        stopped.arm(loop, now + 0.05)
        stopped.stop()
        await asyncio.sleep(0.3)
        return fired, other.checks

    assert asyncio.run(main()) == (1, 0)


# -- over a socket ------------------------------------------------------------------------


def test_many_idle_sessions_each_get_the_timeout_reply() -> None:
    with running(handlers.Sink(), timeout=0.5) as c:
        raws = [Raw(c.port) for _ in range(30)]
        try:
            for raw in raws[::2]:  # half of them greeted and on the fast path
                raw.greet()
            started = time.monotonic()
            for raw in raws:
                assert raw.read_to_eof().endswith(TIMEOUT_REPLY)
            assert time.monotonic() - started < 3
        finally:
            for raw in raws:
                raw.close()


def test_a_session_that_makes_progress_is_not_cut() -> None:
    with running(handlers.Sink(), timeout=0.5) as c, Raw(c.port) as raw, Raw(c.port) as idle:
        raw.greet()
        idle.reply()
        for _ in range(6):  # 1.2 s of NOOPs, each within the timeout, on the fast path
            time.sleep(0.2)
            raw.send(b"NOOP\r\n")
            assert raw.reply().startswith(b"250")
        assert idle.read_to_eof() == TIMEOUT_REPLY  # cut meanwhile, by the same timer
        raw.send(b"QUIT\r\n")
        assert raw.reply().startswith(b"221")


def test_a_stalled_message_on_the_fast_path_times_out() -> None:
    with running(handlers.Sink(), timeout=0.5) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        raw.replies(3)
        raw.send(b"Subject: never ends\r\n")
        assert raw.read_to_eof() == TIMEOUT_REPLY
