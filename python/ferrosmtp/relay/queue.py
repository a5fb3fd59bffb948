"""The relay's queue interface: what every backend (SQLite spool, PostgreSQL) provides.

A message enters in two steps, because its body arrives while the client sends it:
``body = queue.new_body()`` hands out a :class:`BodyWriter` the accepting handler feeds
chunk by chunk (memory per message stays bounded: big bodies go to disk as they come),
then ``await queue.put(envelope, body)`` makes envelope and body durable together and
returns the queue id; only then does the client get its 250. Backends share commits
between concurrent puts (group commit).

Delivery works on leases: ``lease(n)`` hands out up to ``n`` due messages and marks them
taken until an expiry (``renew`` extends it while a delivery is slow); ``record`` stores
the outcome of one attempt (per recipient) and ends the lease, deleting the message once
no recipient is left to try. A lease that is never recorded (a crashed process) expires,
and the message is due again: delivery is at least once.

This module holds the data types and the :class:`Queue` protocol only; it imports no
backend.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import random
import time
from collections.abc import Awaitable, Generator, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "WRITTEN",
    "BodyWriter",
    "Envelope",
    "Outcome",
    "Queue",
    "QueueEntry",
    "QueueError",
    "QueueFull",
    "Recipient",
    "RecipientResult",
    "new_queue_id",
]


_random_bits = random.getrandbits
# One encoder for every envelope (json.dumps with options makes a new one a call).
_compact = json.JSONEncoder(separators=(",", ":")).encode


class QueueError(Exception):
    """The queue could not store or read a message (an I/O or database failure)."""


class QueueFull(QueueError):
    """The spool is out of space (ENOSPC, a quota, a full database)."""


def new_queue_id() -> str:
    """A queue id: 11 hex digits of microseconds then 5 random ones (sortable by arrival,
    unique across processes and restarts, safe in file names and log lines). The random
    digits come from ``random`` (seeded from the system at start and again in every forked
    worker): an id must be unique, not secret, and ``secrets`` costs a system call each."""
    return f"{time.time_ns() // 1000:011X}{_random_bits(20):05X}"


class Outcome(str, enum.Enum):
    """Where a recipient stands."""

    PENDING = "pending"  # not delivered yet: due again at the message's next attempt
    SENT = "sent"  # accepted by the next hop (2xx)
    BOUNCED = "bounced"  # failed for good (5xx, an expired lifetime, null MX...)


@dataclasses.dataclass
class Recipient:
    """One envelope recipient and its DSN parameters (RFC 3461)."""

    address: str
    notify: tuple[str, ...] | None = None  # e.g. ("FAILURE", "DELAY"); ("NEVER",)
    orcpt: str | None = None  # "rfc822;user@example" as given (xtext decoded)
    outcome: Outcome = Outcome.PENDING
    status: str | None = None  # last enhanced status, e.g. "4.4.1"
    diagnostic: str | None = None  # last reply or error text
    remote_mta: str | None = None  # the host that answered last

    def to_json(self) -> dict[str, object]:
        """The recipient as a JSON object (the spool's and ``queue list --json``'s form)."""
        data: dict[str, object] = {"address": self.address}
        for name in ("notify", "orcpt", "status", "diagnostic", "remote_mta"):
            value = getattr(self, name)
            if value is not None:
                data[name] = list(value) if name == "notify" else value
        if self.outcome is not Outcome.PENDING:
            data["outcome"] = self.outcome.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Recipient:
        """A recipient from its JSON object (``to_json``'s inverse)."""
        notify = data.get("notify")
        return cls(
            address=str(data["address"]),
            notify=tuple(str(n) for n in notify) if isinstance(notify, list) else None,
            orcpt=_opt_str(data.get("orcpt")),
            outcome=Outcome(str(data.get("outcome", "pending"))),
            status=_opt_str(data.get("status")),
            diagnostic=_opt_str(data.get("diagnostic")),
            remote_mta=_opt_str(data.get("remote_mta")),
        )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclasses.dataclass
class Envelope:
    """What travels with a queued message besides its body."""

    sender: str  # "" for the null sender (bounces)
    recipients: list[Recipient]
    smtputf8: bool = False
    body_8bit: bool = False  # BODY=8BITMIME was declared (or 8-bit octets were seen)
    ret: str | None = None  # DSN RET=FULL|HDRS
    envid: str | None = None  # DSN ENVID (xtext decoded)
    client: str | None = None  # the submitting client, for the log

    def dumps(self) -> str:
        """Everything but the sender as compact JSON (how the backends store it)."""
        data: dict[str, object] = {"rcpt": [r.to_json() for r in self.recipients]}
        for name in ("smtputf8", "body_8bit"):
            if getattr(self, name):
                data[name] = True
        for name in ("ret", "envid", "client"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return _compact(data)

    @classmethod
    def loads(cls, sender: str, text: str) -> Envelope:
        """The envelope ``dumps`` wrote, with its sender."""
        data = json.loads(text)
        return cls(
            sender=sender,
            recipients=[Recipient.from_json(r) for r in data["rcpt"]],
            smtputf8=bool(data.get("smtputf8")),
            body_8bit=bool(data.get("body_8bit")),
            ret=data.get("ret"),
            envid=data.get("envid"),
            client=data.get("client"),
        )


@dataclasses.dataclass
class QueueEntry:
    """A queued message as a backend hands it out (leased) or lists it."""

    id: str
    envelope: Envelope
    size: int
    arrival: float  # Unix time
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str | None = None
    lease_until: float | None = None
    corrupt: str | None = None  # why the body cannot be read, when it cannot
    body: bytes | None = None  # the body when the backend already has it in memory

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> QueueEntry:
        """An entry from a backend's row: id, sender, envelope JSON, size, arrival,
        attempts, next attempt, lease end (0: none), last error, corrupt (both backends
        select these columns in this order)."""
        return cls(
            id=row[0],
            envelope=Envelope.loads(row[1], row[2]),
            size=row[3],
            arrival=row[4],
            attempts=row[5],
            next_attempt=row[6],
            lease_until=row[7] or None,
            last_error=row[8],
            corrupt=row[9],
        )

    @property
    def pending(self) -> list[Recipient]:
        return [r for r in self.envelope.recipients if r.outcome is Outcome.PENDING]

    def apply(self, results: Sequence[RecipientResult], error: str | None) -> bool:
        """Take one attempt's outcomes in (``record``'s bookkeeping, the same for every
        backend); True when no recipient is left pending."""
        by_address = {r.address: r for r in results}
        for recipient in self.envelope.recipients:
            result = by_address.get(recipient.address)
            if result is None or recipient.outcome is not Outcome.PENDING:
                continue
            recipient.outcome = result.outcome
            recipient.status = result.status
            recipient.diagnostic = result.diagnostic
            recipient.remote_mta = result.remote_mta
        self.attempts += 1
        self.last_error = error
        return not self.pending

    def to_json(self) -> dict[str, object]:
        """The ``queue list --json`` object (a contract: scripts read these names)."""
        return {
            "id": self.id,
            "sender": self.envelope.sender,
            "recipients": [r.address for r in self.pending],
            "size": self.size,
            "arrival": self.arrival,
            "attempts": self.attempts,
            "next_attempt": self.next_attempt,
            "last_error": self.last_error,
            "leased": self.lease_until is not None and self.lease_until > time.time(),
            "corrupt": self.corrupt,
        }


@dataclasses.dataclass
class RecipientResult:
    """The outcome of one attempt for one recipient (``record``'s input)."""

    address: str
    outcome: Outcome
    status: str | None = None
    diagnostic: str | None = None
    remote_mta: str | None = None


class BodyWriter(Protocol):
    """A message body being received. ``write`` may be called for every chunk the
    client sends; ``abort`` forgets it (a refused or interrupted message). The bytes are
    those that will be delivered, the Received header first."""

    id: str  # the queue id the message will have
    size: int

    def write(self, data: bytes) -> Awaitable[None]:
        """Append ``data`` to the body; awaiting the result finishes the write. It is
        ``WRITTEN`` when nothing is left to wait for (the bytes are in memory, or in a
        file's buffer): the relay's handler then answers without a task. Raises (or the
        awaiting raises) QueueFull or QueueError if the body cannot be kept."""

    async def abort(self) -> None:
        """Forget the body: the message was refused or its client vanished."""


class _Written:
    """``WRITTEN``: awaiting it returns at once."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        yield from ()  # ends at once

    def __repr__(self) -> str:
        return "WRITTEN"


WRITTEN = _Written()


@runtime_checkable
class Queue(Protocol):
    """The queue every relay part uses; backends: ``SqliteQueue`` (the spool folder, one
    machine) and ``PostgresQueue`` (a database shared by several relay nodes)."""

    async def open(self) -> None:
        """Create the storage if needed. Idempotent."""

    async def close(self) -> None:
        """Finish pending writes and release resources."""

    async def recover(self) -> int:
        """At relay start, when no other process delivers from this queue: end every
        lease (messages left mid-delivery by a crash are due again). Returns how many."""

    def new_body(self) -> BodyWriter:
        """A writer for a message body about to arrive."""

    async def put(
        self, envelope: Envelope, body: BodyWriter, *, lease: float | None = None
    ) -> QueueEntry:
        """Store envelope and body durably (fsync or commit) and return the entry.

        ``lease`` (seconds) stores the message already leased to the caller, who delivers
        it at once (the entry then carries the body when it is small). Raises QueueFull
        when out of space, QueueError on any other failure; nothing is kept then."""

    async def lease(self, n: int, lease: float) -> list[QueueEntry]:
        """Up to ``n`` messages due now (next attempt passed, no live lease), leased for
        ``lease`` seconds, oldest due first."""

    async def renew(self, ids: Sequence[str], lease: float) -> None:
        """Extend the leases of messages still being delivered."""

    async def read_body(self, entry: QueueEntry) -> bytes:
        """The body of a leased message. Raises QueueError if it is missing or corrupt
        (the backend then marks the message corrupt: listed, never delivered)."""

    async def record(
        self,
        entry: QueueEntry,
        results: Sequence[RecipientResult],
        next_attempt: float | None,
        error: str | None = None,
    ) -> bool:
        """Store one attempt: per-recipient outcomes, ``attempts`` + 1, the last error and
        the next attempt; end the lease. The message is deleted when no recipient is
        pending any more (``next_attempt`` is then ignored).

        Returns False when the message was deleted (``delete``, ``queue delete``) while it
        was being delivered, as Postfix's ``postsuper -d`` of an active message: what the
        attempt delivered stays delivered, nothing else happens to the message (no retry,
        no notice)."""

    async def release(self, entry: QueueEntry) -> None:
        """End a lease without recording an attempt (shutting down)."""

    async def delete(self, queue_id: str | None) -> int:
        """Delete one message (or every one with None); returns how many. A message being
        delivered is deleted at once; its delivery ends as it ends, and ``record`` then
        returns False."""

    async def retry(self, queue_id: str | None) -> int:
        """Make one message (or every one with None) due now; returns how many."""

    async def list(self) -> list[QueueEntry]:
        """Every queued message, oldest first, without bodies."""

    async def get(self, queue_id: str) -> QueueEntry | None:
        """One message without its body, or None."""

    async def counts(self) -> dict[str, int]:
        """Queue depth by state: ``active`` (leased), ``deferred`` (tried before),
        ``incoming`` (never tried), ``corrupt``."""

    async def wait_for_work(self, timeout: float) -> None:
        """Return when new mail may be due (a put, a retry) or after ``timeout``."""

    async def take_slots(
        self, destination: str, want: int, limit: int, lease: float
    ) -> Sequence[int]:
        """Up to ``want`` free delivery slots of ``destination`` (there are ``limit``),
        held for ``lease`` seconds (``renew`` extends them); returns their numbers,
        perhaps none. Slots count transactions at once per next hop among everyone who
        shares the queue: the processes of one spool each count their own, the nodes
        of one database count together."""

    async def give_slots(self, destination: str, slots: Sequence[int]) -> None:
        """Free slots taken with ``take_slots``."""


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make a directory's entries (a new or removed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
