"""The delivery loop: leases due messages, delivers each to its destinations, records
the outcome, retries with exponential backoff and sends delivery status notifications.

Fresh mail does not wait for a poll: the accepting handler stores it already leased and
hands it over (``submit``) while fewer than ``max_active`` messages are in delivery;
beyond that, and for every retry, messages are leased from the queue in batches. Leases
are renewed while deliveries run, so a slow next hop does not let a message go out
twice; a crash lets them expire (or ``recover`` ends them at the next start).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence

from ferrosmtp.relay.bounce import Notice, build_dsn, wants_notice
from ferrosmtp.relay.delivery import Attempt, Deliverer
from ferrosmtp.relay.metrics import NoMetrics
from ferrosmtp.relay.queue import (
    Envelope,
    Outcome,
    Queue,
    QueueEntry,
    QueueError,
    Recipient,
    RecipientResult,
)
from ferrosmtp.relay.routing import Router, RoutingError

__all__ = ["RetryPolicy", "Scheduler"]

# A recipient's outcome as the log line's status= says it (Postfix's words).
_STATUS_WORD = {Outcome.SENT: "sent", Outcome.BOUNCED: "bounced", Outcome.PENDING: "deferred"}

log: logging.Logger = logging.getLogger("ferrosmtp.relay")


@dataclasses.dataclass
class RetryPolicy:
    """Postfix's defaults: minimal_backoff_time 300 s, maximal_backoff_time 4000 s,
    maximal_queue_lifetime 5 days."""

    min_backoff: float = 300.0
    max_backoff: float = 4000.0
    max_lifetime: float = 5 * 86400.0

    def next_attempt(self, attempts: int, now: float) -> float:
        """After the ``attempts``-th failed attempt: the backoff doubles from the minimum."""
        delay = self.min_backoff * 2.0 ** max(attempts - 1, 0)
        return now + float(min(max(delay, self.min_backoff), self.max_backoff))


class Scheduler:
    """Takes due messages from the queue, delivers them through the Deliverer, and records the
    outcomes: retries with backoff, bounces and delivery notices."""

    def __init__(
        self,
        queue: Queue,
        router: Router,
        deliverer: Deliverer,
        *,
        hostname: str,
        retry: RetryPolicy | None = None,
        metrics: NoMetrics | None = None,
        lease: float = 60.0,
        batch: int = 100,
        max_active: int = 1000,
        poll: float = 1.0,
        body_budget: int = 128 << 20,
    ) -> None:
        self.queue = queue
        self.router = router
        self.deliverer = deliverer
        self.hostname = hostname
        self.retry: RetryPolicy = retry or RetryPolicy()
        self.metrics: NoMetrics = metrics or NoMetrics()
        self.lease_seconds = lease
        self.batch = batch
        self.max_active = max_active
        self.poll = poll
        self._active: dict[str, asyncio.Task[None]] = {}
        self._room = asyncio.Event()
        self._stopping = False
        self._main: asyncio.Task[None] | None = None
        # Bodies are delivered from memory: at most this many octets of them at once
        # (a message bigger than the budget goes alone), so 1000 messages in delivery
        # cannot mean 1000 big bodies in memory.
        self.body_budget = body_budget
        self._body_bytes = 0
        self._body_waiters: collections.deque[tuple[int, asyncio.Future[None]]] = (
            collections.deque()
        )

    # --- hand-over from the accepting side -----------------------------------------------

    def lease_for_new(self) -> float | None:
        """The lease to store a new message with, if it can be delivered at once."""
        if self._stopping or len(self._active) >= self.max_active:
            return None
        return self.lease_seconds

    def submit(self, entry: QueueEntry) -> bool:
        """Deliver a message just stored leased to us; False if it must wait its turn."""
        if self._stopping or entry.id in self._active:
            return False
        self._start(entry)
        return True

    # --- the loop ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduling task."""
        self._main = asyncio.ensure_future(self._run())

    async def stop(self, grace: float = 10.0) -> None:
        """Stop leasing, let deliveries in flight finish for ``grace`` seconds, then
        cancel the rest (their leases are released: they are due again)."""
        self._stopping = True
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        tasks = list(self._active.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.deliverer.close()

    async def _run(self) -> None:
        renew_every = self.lease_seconds / 3
        renewed = time.monotonic()
        while True:
            try:
                free = self.max_active - len(self._active)
                got = 0
                if free > 0:
                    for entry in await self.queue.lease(min(free, self.batch), self.lease_seconds):
                        if entry.id in self._active:
                            continue
                        self._start(entry)
                        got += 1
                now = time.monotonic()
                if now - renewed > renew_every and self._active:
                    await self.queue.renew(list(self._active), self.lease_seconds)
                    renewed = now
                self.deliverer.sweep()
                if self._counting():
                    self.metrics.depth(await self.queue.counts())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay scheduler: queue error; trying again in %.0f s", self.poll)
                await asyncio.sleep(self.poll)
                continue
            if got and got == min(free, self.batch):
                await asyncio.sleep(0)  # more may be due: lease again
                continue
            if len(self._active) >= self.max_active:
                self._room.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._room.wait(), self.poll)
                continue
            await self.queue.wait_for_work(self.poll)

    _last_count = 0.0

    def _counting(self) -> bool:
        if type(self.metrics) is NoMetrics:
            return False
        now = time.monotonic()
        if now - self._last_count < 5:
            return False
        self._last_count = now
        return True

    def _start(self, entry: QueueEntry) -> None:
        task = asyncio.ensure_future(self._deliver(entry))
        self._active[entry.id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._active.pop(entry.id, None)
            self._room.set()

        task.add_done_callback(done)

    # --- one message ---------------------------------------------------------------------

    async def _deliver(self, entry: QueueEntry) -> None:
        try:
            await self._attempt(entry)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.queue.release(entry))
            raise
        except Exception:
            log.exception("%s: delivery failed unexpectedly; retried later", entry.id)
            with contextlib.suppress(Exception):
                await self.queue.record(
                    entry,
                    [],
                    self.retry.next_attempt(entry.attempts + 1, time.time()),
                    "internal error (see the relay's log)",
                )

    async def _attempt(self, entry: QueueEntry) -> None:
        size = entry.size
        if self._body_waiters or (self._body_bytes and self._body_bytes + size > self.body_budget):
            # Over the budget: wait in line (first come, first served; woken by _free).
            waiter = asyncio.get_running_loop().create_future()
            self._body_waiters.append((size, waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._free(size)  # admitted as it was cancelled: hand the room on
                else:
                    with contextlib.suppress(ValueError):  # _free may have dropped it
                        self._body_waiters.remove((size, waiter))
                raise
        else:
            self._body_bytes += size
        try:
            await self._attempt_with_body(entry)
        finally:
            self._free(size)

    def _free(self, size: int) -> None:
        """Give back ``size`` octets of the body budget and admit the waiters that fit."""
        self._body_bytes -= size
        waiters = self._body_waiters
        while waiters:
            want, waiter = waiters[0]
            if waiter.done():
                waiters.popleft()
                continue
            if self._body_bytes and self._body_bytes + want > self.body_budget:
                break
            waiters.popleft()
            self._body_bytes += want
            waiter.set_result(None)

    async def _attempt_with_body(self, entry: QueueEntry) -> None:
        started = time.time()
        try:
            body = entry.body  # stored leased, or leased, with its body: nothing to read
            if body is None:
                body = await self.queue.read_body(entry)
        except QueueError as error:
            if await self._deleted(entry):
                log.info("%s: deleted (queue delete) before its delivery", entry.id)
            else:
                log.error("%s: %s; message held (see 'ferrosmtp queue list')", entry.id, error)
            return
        groups: dict[str, list[Recipient]] = {}
        for rcpt in entry.pending:
            groups.setdefault(self.router.destination(rcpt.address), []).append(rcpt)
        if len(groups) == 1:  # the usual case: no task of its own for the one destination
            ((dest, rcpts),) = groups.items()
            attempts = await self._destination(entry, body, dest, rcpts)
        else:
            results = await asyncio.gather(
                *(self._destination(entry, body, dest, rcpts) for dest, rcpts in groups.items())
            )
            attempts = [a for group in results for a in group]
        now = time.time()
        expired = now - entry.arrival >= self.retry.max_lifetime
        final: list[RecipientResult] = []
        for attempt in attempts:
            result = attempt.result
            if result.outcome is Outcome.PENDING and expired:
                result.outcome = Outcome.BOUNCED
                result.diagnostic = f"message expired after {now - entry.arrival:.0f} s: " + (
                    result.diagnostic or "delivery time expired"
                )
            final.append(result)
            self._log(entry, attempt, started, now)
        deferred = [r for r in final if r.outcome is Outcome.PENDING]
        last_error = deferred[-1].diagnostic if deferred else None
        next_attempt = self.retry.next_attempt(entry.attempts + 1, now) if deferred else None
        if not await self.queue.record(entry, final, next_attempt, last_error):
            # Deleted by 'queue delete' while it was being delivered (as Postfix's
            # postsuper -d of an active message: it takes effect when the delivery ends).
            log.info(
                "%s: deleted (queue delete) during its delivery; not retried, no notice sent",
                entry.id,
            )
            return
        await self._notify(entry, body, attempts, now)

    async def _deleted(self, entry: QueueEntry) -> bool:
        try:
            return await self.queue.get(entry.id) is None
        except QueueError:
            return False

    async def _destination(
        self, entry: QueueEntry, body: bytes, destination: str, recipients: list[Recipient]
    ) -> list[Attempt]:
        try:
            hops = await self.router.route(destination)
        except RoutingError as error:
            outcome = Outcome.BOUNCED if error.permanent else Outcome.PENDING
            return [
                Attempt(
                    RecipientResult(r.address, outcome, error.status, error.text),
                    "none",
                    error.text,
                    (0.0, 0.0),
                )
                for r in recipients
            ]
        return await self.deliverer.deliver(entry, body, recipients, hops)

    def _log(self, entry: QueueEntry, attempt: Attempt, started: float, now: float) -> None:
        result = attempt.result
        status = _STATUS_WORD[result.outcome]
        if result.outcome is Outcome.SENT:
            self.metrics.sent(now - entry.arrival)
        elif result.outcome is Outcome.BOUNCED:
            self.metrics.bounced()
        else:
            self.metrics.deferred()
        if not log.isEnabledFor(logging.INFO):
            return
        waited = max(started - max(entry.arrival, entry.next_attempt), 0.0)
        before = max(started - entry.arrival - waited, 0.0)
        log.info(
            "%s: to=<%s>, relay=%s, delay=%.2g, delays=%.2g/%.2g/%.2g/%.2g, dsn=%s, status=%s (%s)",
            entry.id,
            result.address,
            attempt.relay,
            now - entry.arrival,
            before,
            waited,
            attempt.delays[0],
            attempt.delays[1],
            result.status or "4.0.0",
            status,
            result.diagnostic if result.outcome is not Outcome.SENT else attempt.reply,
        )

    # --- notices -------------------------------------------------------------------------

    async def _notify(
        self, entry: QueueEntry, body: bytes, attempts: Sequence[Attempt], now: float
    ) -> None:
        by_address = {r.address: r for r in entry.envelope.recipients}
        notices: dict[str, list[Notice]] = {}
        for attempt in attempts:
            result = attempt.result
            rcpt = by_address.get(result.address)
            if rcpt is None:
                continue
            if result.outcome is Outcome.BOUNCED:
                action = "failed"
            elif result.outcome is Outcome.PENDING:
                if entry.attempts != 1:
                    continue  # a delay notice once, after the first failed attempt
                action = "delayed"
            elif attempt.dsn_passed:
                continue  # the next hop reports success itself (RFC 3461 §5.2.2)
            else:
                action = "relayed"
            if wants_notice(rcpt, action):
                notices.setdefault(action, []).append(
                    Notice(
                        rcpt, action, result.status or "5.0.0", result.diagnostic, result.remote_mta
                    )
                )
        if not notices:
            return
        if not entry.envelope.sender:
            for group in notices.values():
                for notice in group:
                    log.info(
                        "%s: notice about <%s> (%s) not sent: the sender is <>",
                        entry.id,
                        notice.recipient.address,
                        notice.action,
                    )
            return
        for action, group in notices.items():
            await self._queue_notice(entry, body, group, now, action)

    async def _queue_notice(
        self, entry: QueueEntry, body: bytes, notices: list[Notice], now: float, action: str
    ) -> None:
        message = build_dsn(entry, body, notices, hostname=self.hostname, now=now)
        envelope = Envelope(
            sender="",
            recipients=[Recipient(entry.envelope.sender, notify=("NEVER",))],
            smtputf8=not entry.envelope.sender.isascii(),
            body_8bit=not message.isascii(),
            client="local",
        )
        writer = self.queue.new_body()
        try:
            await writer.write(message)
            notice = await self.queue.put(envelope, writer)
        except QueueError as failure:
            log.error("%s: could not queue the %s notice: %s", entry.id, action, failure)
            return
        log.info("%s: sender %s notification: %s", entry.id, action, notice.id)
