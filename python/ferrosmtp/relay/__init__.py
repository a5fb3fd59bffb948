"""The durable relay: accept mail, spool it with fsync, deliver it by MX or through a
smarthost, retry with backoff and bounce with RFC 3464 notices.

One module a job:

- ``queue``: the queue interface every backend implements, and its data types;
- ``sqlite``: the embedded backend (a spool folder: SQLite in WAL mode plus body files);
- ``policy``: who may relay, and the hop limit;
- ``handler``: the server handler that accepts mail into the queue;
- ``routing``: next hops by MX (dnspython) or a smarthost;
- ``delivery``: one transaction per destination, per-recipient outcomes;
- ``downgrade``: 8-bit to 7-bit (RFC 6152);
- ``scheduler``: leases, retries, backoff, notices;
- ``bounce``: delivery status notifications (RFC 3464);
- ``metrics``: Prometheus;
- ``service``: all of it assembled (``Relay``); ``command``: the ``ferrosmtp relay`` and
  ``ferrosmtp queue`` commands.
"""

from __future__ import annotations

from ferrosmtp.relay.handler import QueueHandler
from ferrosmtp.relay.policy import RelayPolicy
from ferrosmtp.relay.queue import (
    BodyWriter,
    Envelope,
    Outcome,
    Queue,
    QueueEntry,
    QueueError,
    QueueFull,
    Recipient,
    RecipientResult,
)
from ferrosmtp.relay.routing import Hop, Router, RoutingError
from ferrosmtp.relay.scheduler import RetryPolicy, Scheduler
from ferrosmtp.relay.service import Relay, RelayConfig
from ferrosmtp.relay.sqlite import SqliteQueue

__all__ = [
    "BodyWriter",
    "Envelope",
    "Hop",
    "Outcome",
    "Queue",
    "QueueEntry",
    "QueueError",
    "QueueFull",
    "QueueHandler",
    "Recipient",
    "RecipientResult",
    "Relay",
    "RelayConfig",
    "RelayPolicy",
    "RetryPolicy",
    "Router",
    "RoutingError",
    "Scheduler",
    "SqliteQueue",
]
