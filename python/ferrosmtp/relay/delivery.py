"""Delivery of one message to one destination: the next hops in order, one transaction
carrying every recipient of that destination, per-recipient outcomes.

Connections to each next hop are kept and reused (at most ``concurrency`` transactions
at once per hop, Postfix's default_destination_concurrency_limit of 20, counted by
``limits``: in the process, or by the database across relay nodes). A hop that
refused a connection is marked down: while it is, one message at a time probes it (at most
once every ``probe_interval`` seconds) and the others are deferred at once with the same
error instead of each paying for a connection attempt; those arriving while a probe runs
wait for its result, so a hop that comes back is used at once.

The next hop's EHLO decides what is sent: an 8-bit body goes down to 7 bits
without 8BITMIME, UTF-8 addresses without SMTPUTF8 bounce (5.6.7), a body over its SIZE
bounces (5.3.4), DSN parameters go along when it offers DSN. The next MX is tried after a
connection failure or a 4xx for the whole session (greeting, MAIL, DATA).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import ssl
import time
from collections.abc import Sequence

from ferrosmtp.client import Client
from ferrosmtp.errors import (
    SMTPDataError,
    SMTPException,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from ferrosmtp.relay.downgrade import Unconvertible, to_7bit
from ferrosmtp.relay.limits import DestinationLimits, LocalSlots
from ferrosmtp.relay.queue import Outcome, QueueEntry, Recipient, RecipientResult
from ferrosmtp.relay.routing import Hop

__all__ = ["Attempt", "Deliverer", "DeliveryConfig"]

log: logging.Logger = logging.getLogger("ferrosmtp.relay")

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclasses.dataclass
class DeliveryConfig:
    """How the relay delivers: its HELO name, concurrency, timeouts, and the credentials for a
    smarthost."""

    helo: str
    concurrency: int = 20
    connect_timeout: float = 30.0
    timeout: float = 300.0
    data_timeout: float = 600.0
    idle_timeout: float = 30.0
    probe_interval: float = 1.0
    username: str | None = None  # AUTH toward the smarthost
    password: str | None = None
    require_tls: bool = False  # STARTTLS or defer (with AUTH)
    # A next hop that offers PIPELINING and answers a transaction within this (seconds,
    # on average) gets up to PIPELINE_DEPTH transactions at once on one connection: each
    # message's content goes in one write with the next one's envelope, and their replies
    # come back together (RFC 2920): half the writes, reads and wake-ups of a small
    # message. A slower hop gets one at a time, so no message waits behind a slow one.
    pipeline_under: float = 0.01


@dataclasses.dataclass
class Attempt:
    """One recipient's outcome of one delivery attempt, with what the log line needs."""

    result: RecipientResult
    relay: str  # "host[ip]:port", or "none"
    reply: str
    delays: tuple[float, float]  # connection setup, transmission
    dsn_passed: bool = False  # DSN parameters went on to a next hop that offers DSN


def status_of(code: int, text: str) -> str:
    """The enhanced status of a reply: given in the text, else derived from the code."""
    match = _ENHANCED.match(text)
    if match is not None and match.group(1) == str(code)[0]:
        return match.group(0)
    return f"{str(code)[0]}.0.0"


def _outcome(code: int) -> Outcome:
    if 200 <= code < 300:
        return Outcome.SENT
    return Outcome.BOUNCED if code >= 500 else Outcome.PENDING


class _HopFailure(Exception):
    """The whole session with one hop failed; the next hop may be tried."""

    def __init__(self, status: str, text: str, code: int = 0) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code


class _Down:
    """A next hop that refused a connection: when it may be probed again, and the probe
    running now (its future is set when it ends)."""

    def __init__(self, text: str, next_probe: float) -> None:
        self.text = text
        self.next_probe = next_probe
        self.probe: asyncio.Future[None] | None = None


class _Connections:
    """Connections to one next hop, reused between messages (several at once on one
    connection to a fast hop)."""

    def __init__(self) -> None:
        self.idle: list[tuple[Client, float]] = []
        self.active: dict[Client, int] = {}  # connections in use: transactions on each
        self.busy = 0  # transactions running or waiting for a slot
        self.took = 1.0  # seconds a transaction takes here (moving average): slow at first

    def done(self, client: Client, took: float | None) -> None:
        """A transaction on ``client`` is over (in ``took`` seconds, if it went through):
        the connection is idle once no other is left on it."""
        if took is not None:
            self.took += (took - self.took) / 8
        left = self.active.pop(client, 0) - 1
        if left > 0:
            self.active[client] = left
        elif client.is_connected:
            self.idle.append((client, time.monotonic()))
        else:
            client.close()


PIPELINE_DEPTH = 4  # transactions at once on one connection (DeliveryConfig.pipeline_under)
# Bodies bigger than this go alone on their connection. Their transfer is most of their
# transaction anyway, and a peer's replies to pipelined big transactions come in separate
# writes, which a peer that leaves Nagle's algorithm on (Postfix's smtp-sink) holds until
# our delayed ACK: measured with 100 KiB messages at half the peak rate, every 0.4 s four
# transactions took 40 ms more (p99 46 ms from arrival to delivery).
PIPELINE_MAX_BODY = 64 << 10


class Deliverer:
    """Delivers messages to their next hops, reusing connections per destination and marking
    unreachable ones down for a while."""

    def __init__(self, config: DeliveryConfig, limits: DestinationLimits | None = None) -> None:
        self.config = config
        self.limits: DestinationLimits = limits or DestinationLimits(
            LocalSlots(), config.concurrency
        )
        self._hops: dict[tuple[str, int], _Connections] = {}
        self._down: dict[tuple[str, int], _Down] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Close the idle connections (QUIT)."""
        clients = [c for conns in self._hops.values() for c, _ in conns.idle]
        for conns in self._hops.values():
            conns.idle.clear()
        await asyncio.gather(*(_quit(c) for c in clients))
        await self.limits.close()

    def sweep(self) -> None:
        """Close connections idle for longer than ``idle_timeout``."""
        limit = time.monotonic() - self.config.idle_timeout
        for key, conns in list(self._hops.items()):
            stale = [c for c, t in conns.idle if t < limit]
            conns.idle = [(c, t) for c, t in conns.idle if t >= limit]
            for client in stale:
                task = asyncio.ensure_future(_quit(client))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            if not conns.idle and conns.busy == 0:
                del self._hops[key]

    async def deliver(
        self,
        entry: QueueEntry,
        body: bytes,
        recipients: Sequence[Recipient],
        hops: Sequence[Hop],
    ) -> list[Attempt]:
        """Deliver ``body`` to ``recipients`` (one destination) through ``hops`` in order."""
        remaining = list(recipients)
        failure: _HopFailure | None = None
        relay = "none"
        for hop in hops:
            relay = hop.label
            try:
                return await self._through(hop, entry, body, remaining)
            except _HopFailure as error:
                failure = error
                if error.status.startswith("5"):
                    break
        if failure is None:
            failure = _HopFailure("4.4.1", "no next hop could be reached")
        attempts: list[Attempt] = []
        code = failure.code or (550 if failure.status.startswith("5") else 450)
        reply = f"{code} {failure.status} {failure.text}" if failure.code else failure.text
        for rcpt in remaining:
            attempts.append(
                Attempt(
                    RecipientResult(
                        rcpt.address,
                        Outcome.BOUNCED if failure.status.startswith("5") else Outcome.PENDING,
                        failure.status,
                        reply,
                        relay if relay != "none" else None,
                    ),
                    relay,
                    reply,
                    (0.0, 0.0),
                )
            )
        return attempts

    async def _through(
        self, hop: Hop, entry: QueueEntry, body: bytes, recipients: list[Recipient]
    ) -> list[Attempt]:
        key = (hop.address, hop.port)
        down = self._down.get(key)
        if down is not None:
            if down.probe is not None:  # another message is testing the hop: its result
                await asyncio.shield(down.probe)
                down = self._down.get(key)
            if down is not None:
                if down.probe is not None or time.monotonic() < down.next_probe:
                    raise _HopFailure("4.4.1", down.text)
                down.probe = asyncio.get_running_loop().create_future()  # we probe
        conns = self._hops.get(key)
        if conns is None:
            conns = self._hops[key] = _Connections()
        conns.busy += 1
        try:
            return await self._locked(hop, conns, entry, body, recipients)
        finally:
            conns.busy -= 1

    async def _locked(
        self,
        hop: Hop,
        conns: _Connections,
        entry: QueueEntry,
        body: bytes,
        recipients: list[Recipient],
    ) -> list[Attempt]:
        async with self.limits.slot(hop.key):
            started = time.monotonic()
            client, shared = await self._client(hop, conns, len(body))
            connected = time.monotonic()
            retry = True
            while True:
                took = None
                try:
                    attempts = await self._transaction(client, hop, entry, body, recipients)
                    took = time.monotonic() - connected
                    break
                except _HopFailure:
                    raise  # the connection may go on
                except (SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError) as error:
                    client.close()
                    if not (retry and _went_first(error, shared)):
                        raise _HopFailure(
                            "4.4.2", f"lost connection with {hop} while sending message: {error}"
                        ) from error
                finally:
                    conns.done(client, took)
                retry = False
                client, shared = await self._client(hop, conns, len(body))
            finished = time.monotonic()
            for attempt in attempts:
                attempt.delays = (connected - started, finished - connected)
            return attempts

    async def _client(self, hop: Hop, conns: _Connections, size: int) -> tuple[Client, bool]:
        """A connection for one more transaction (of a ``size``-octet body), counted in
        ``conns.active``, and whether another transaction is on it too."""
        if conns.took < self.config.pipeline_under and size <= PIPELINE_MAX_BODY:
            for client, running in conns.active.items():
                if running < PIPELINE_DEPTH and client.is_connected and _pipelines(client):
                    conns.active[client] = running + 1
                    return client, True
        while conns.idle:
            client, _ = conns.idle.pop()
            if client.is_connected:
                self._up((hop.address, hop.port))
                conns.active[client] = 1
                return client, False
            client.close()
        client = await self._connect(hop)
        conns.active[client] = conns.active.get(client, 0) + 1
        return client, conns.active[client] > 1

    async def _connect(self, hop: Hop) -> Client:
        config = self.config
        client = Client(
            hop.address,
            hop.port,
            local_hostname=config.helo,
            timeout=config.timeout,
            data_timeout=config.data_timeout,
            start_tls=True if config.require_tls else None,
            validate_certs=False,  # opportunistic TLS, as Postfix's "may"/"encrypt" levels
            username=config.username,
            password=config.password,
        )
        key = (hop.address, hop.port)
        try:
            await client.connect(timeout=config.connect_timeout)
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            self._up(key)
        except SMTPResponseException as error:
            self._up(key)
            client.close()
            raise _HopFailure(
                status_of(error.code, error.message),
                f"host {hop} said: {error.code} {error.message}",
                error.code,
            ) from error
        except (SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError) as error:
            client.close()
            text = f"connect to {hop}: {_describe(error)}"
            self._mark_down(key, text)
            raise _HopFailure("4.4.1", text) from error
        except BaseException:  # cancelled: let another message probe
            down = self._down.get(key)
            if down is not None and down.probe is not None:
                if not down.probe.done():
                    down.probe.set_result(None)
                down.probe = None
            raise
        return client

    def _up(self, key: tuple[str, int]) -> None:
        down = self._down.pop(key, None)
        if down is not None and down.probe is not None and not down.probe.done():
            down.probe.set_result(None)

    def _mark_down(self, key: tuple[str, int], text: str) -> None:
        down = self._down.get(key)
        probe = down.probe if down is not None else None
        self._down[key] = _Down(text, time.monotonic() + self.config.probe_interval)
        if probe is not None and not probe.done():
            probe.set_result(None)

    async def _transaction(
        self, client: Client, hop: Hop, entry: QueueEntry, body: bytes, recipients: list[Recipient]
    ) -> list[Attempt]:
        envelope = entry.envelope
        addresses = [r.address for r in recipients]

        def every(outcome: Outcome, status: str, text: str) -> list[Attempt]:
            result = [
                Attempt(RecipientResult(a, outcome, status, text, hop.host), str(hop), text, (0, 0))
                for a in addresses
            ]
            return result

        extensions = client.esmtp_extensions  # built per call: read it once
        utf8 = envelope.smtputf8 or not (
            envelope.sender.isascii() and all(a.isascii() for a in addresses)
        )
        if utf8 and "smtputf8" not in extensions:
            return every(
                Outcome.BOUNCED,
                "5.6.7",
                f"SMTPUTF8 is required, but was not offered by host {hop}",
            )
        if not body.isascii() and "8bitmime" not in extensions:
            try:
                body = to_7bit(body)
            except Unconvertible as error:
                return every(Outcome.BOUNCED, error.status, f"{error} (host {hop})")
        limit = extensions.get("size", "")
        if limit.isdigit() and int(limit) and len(body) > int(limit):
            return every(
                Outcome.BOUNCED,
                "5.3.4",
                f"message size {len(body)} exceeds size limit {limit} of server {hop}",
            )
        dsn = "dsn" in extensions
        groups: dict[tuple[str, ...] | None, list[Recipient]] = {}
        for rcpt in recipients:
            groups.setdefault(rcpt.notify if dsn else None, []).append(rcpt)
        attempts: list[Attempt] = []
        for notify, group in groups.items():
            attempts.extend(await self._send(client, hop, entry, body, group, notify, dsn))
        return attempts

    async def _send(
        self,
        client: Client,
        hop: Hop,
        entry: QueueEntry,
        body: bytes,
        recipients: list[Recipient],
        notify: tuple[str, ...] | None,
        dsn: bool,
    ) -> list[Attempt]:
        envelope = entry.envelope
        addresses = [r.address for r in recipients]
        orcpt = {r.address: r.orcpt.partition(";")[2] for r in recipients if r.orcpt}
        options: dict[str, object] = {}
        if dsn:
            if envelope.ret:
                options["ret"] = envelope.ret
            if envelope.envid:
                options["envid"] = envelope.envid
            if notify:
                options["notify"] = list(notify)
            if orcpt:
                options["orcpt"] = orcpt
        replies: dict[str, tuple[int, str]] = {}
        try:
            refused, message = await client.sendmail(
                envelope.sender,
                addresses,
                body,
                **options,  # type: ignore[arg-type]
            )
            for address, response in refused.items():
                replies[address] = (response.code, response.message)
            for address in addresses:
                replies.setdefault(address, (250, message))
        except SMTPSenderRefused as error:
            if error.code < 500:
                raise _HopFailure(
                    status_of(error.code, error.message),
                    f"host {hop} said: {error.code} {error.message} (in reply to MAIL FROM)",
                    error.code,
                ) from error
            replies = dict.fromkeys(addresses, (error.code, error.message))
        except SMTPRecipientsRefused as error:
            for refusal in error.recipients:
                replies[refusal.recipient] = (refusal.code, refusal.message)
            if all(code < 500 for code, _ in replies.values()) and len(addresses) > 0:
                first = error.recipients[0]
                raise _HopFailure(
                    status_of(first.code, first.message),
                    f"host {hop} said: {first.code} {first.message} (in reply to RCPT TO)",
                    first.code,
                ) from error
        except SMTPDataError as error:
            if error.code < 500:
                raise _HopFailure(
                    status_of(error.code, error.message),
                    f"host {hop} said: {error.code} {error.message} (in reply to end of DATA)",
                    error.code,
                ) from error
            replies = dict.fromkeys(addresses, (error.code, error.message))
        attempts = []
        for address in addresses:
            code, text = replies.get(address, (451, "4.3.0 no reply"))
            reply = f"{code} {text}"
            attempts.append(
                Attempt(
                    RecipientResult(
                        address,
                        _outcome(code),
                        status_of(code, text),
                        f"host {hop} said: {reply}" if code >= 400 else reply,
                        hop.host,
                    ),
                    hop.label,
                    reply,
                    (0.0, 0.0),
                    dsn_passed=dsn,
                )
            )
        return attempts


def _went_first(error: BaseException, shared: bool) -> bool:
    """Whether a transaction that failed with ``error`` may go again at once on a new
    connection: the connection went before any of its message did (the hop closed an
    idle connection), or it was lost or closed (421) while another transaction on it
    was ahead (that one's fault, or the hop's: it is tried once more, then deferred)."""
    if getattr(error, "message_not_sent", False):
        return True
    return shared and isinstance(error, SMTPServerDisconnected)  # 421 too


def _pipelines(client: Client) -> bool:
    connection = client.connection
    return connection is not None and connection.pipelining


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, asyncio.TimeoutError):
        return "Connection timed out"
    return str(error) or type(error).__name__


async def _quit(client: Client) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.quit(), 5)
    client.close()
