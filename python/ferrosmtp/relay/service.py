"""The relay assembled: a ``Server`` running the ``QueueHandler`` in front of a queue, and
the ``Scheduler`` delivering from it. ``ferrosmtp relay`` is this plus argument parsing;
a program can run the same thing::

    relay = Relay(RelayConfig(spool="spool", relayhost=("smarthost", 587)))
    await relay.start()
    ...
    await relay.stop()

With ``queue_url`` (``postgresql://...``) the queue is a PostgreSQL database that several
relay nodes share (``ferrosmtp.relay.postgres``) instead of the spool folder.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from ferrosmtp.relay.delivery import Deliverer, DeliveryConfig
from ferrosmtp.relay.handler import QueueHandler
from ferrosmtp.relay.limits import DestinationLimits
from ferrosmtp.relay.metrics import NoMetrics
from ferrosmtp.relay.policy import RelayPolicy
from ferrosmtp.relay.queue import Queue
from ferrosmtp.relay.routing import Router
from ferrosmtp.relay.scheduler import RetryPolicy, Scheduler
from ferrosmtp.relay.sqlite import SqliteQueue

__all__ = ["Relay", "RelayConfig", "make_queue"]


@dataclasses.dataclass
class RelayConfig:
    """The relay's settings, with ``ferrosmtp relay``'s defaults."""

    listen: tuple[str, int] = ("127.0.0.1", 8025)
    spool: str | os.PathLike[str] = "spool"
    queue_url: str | None = None  # postgresql://USER@HOST:PORT/DB: a queue shared by nodes
    node: str | None = None  # this node's name in a shared queue (default HOSTNAME:PORT)
    hostname: str | None = None
    relayhost: tuple[str, int] | None = None
    relayhost_auth: tuple[str, str] | None = None  # (user, password) over STARTTLS
    dns: tuple[str, int] | None = None  # the one nameserver; None: the system's
    mx_port: int = 25
    mynetworks: list[str] = dataclasses.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    relay_domains: list[str] = dataclasses.field(default_factory=list)
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    concurrency: int = 20  # transactions at once per next hop
    max_active: int = 1000  # messages in delivery at once
    lease: float = 60.0  # a message in delivery is held this long, renewed while it lasts
    # Keyword arguments for ferrosmtp.Server (tls_context, authenticator,
    # proxy_protocol_timeout, data_size_limit...).
    server_options: dict[str, Any] = dataclasses.field(default_factory=dict)


def make_queue(config: RelayConfig) -> Queue:
    """The queue the configuration names: the PostgreSQL database of ``queue_url``, else
    the spool folder."""
    if config.queue_url is None:
        return SqliteQueue(Path(config.spool))
    from ferrosmtp.relay.postgres import PostgresQueue

    node = config.node
    if node is None:
        port = config.listen[1]
        node = f"{socket.gethostname()}:{port if port else secrets.token_hex(4)}"
    return PostgresQueue(config.queue_url, node=node)


class Relay:
    """A running relay: call ``start()``, then ``stop()``."""

    def __init__(
        self, config: RelayConfig, *, queue: Queue | None = None, metrics: NoMetrics | None = None
    ) -> None:
        from ferrosmtp.server import Server

        self.config = config
        self.hostname: str = config.hostname or socket.getfqdn()
        self.queue: Queue = queue if queue is not None else make_queue(config)
        self.policy: RelayPolicy = RelayPolicy.parse(config.mynetworks, config.relay_domains)
        self.router: Router = Router(
            relayhost=config.relayhost, nameserver=config.dns, mx_port=config.mx_port
        )
        user, password = config.relayhost_auth or (None, None)
        self.deliverer: Deliverer = Deliverer(
            DeliveryConfig(
                helo=self.hostname,
                concurrency=config.concurrency,
                username=user,
                password=password,
                require_tls=config.relayhost_auth is not None,
            ),
            # Counted by the queue: across every node when the queue is shared, where a
            # node hands its slots around every 2 s so that no node keeps them all.
            DestinationLimits(
                self.queue,
                config.concurrency,
                lease=config.lease,
                tenure=2.0 if config.queue_url else math.inf,
            ),
        )
        self.scheduler: Scheduler = Scheduler(
            self.queue,
            self.router,
            self.deliverer,
            hostname=self.hostname,
            retry=config.retry,
            metrics=metrics,
            max_active=config.max_active,
            lease=config.lease,
        )
        self.handler: QueueHandler = QueueHandler(
            self.queue,
            self.policy,
            on_queued=self.scheduler.submit,
            lease=self.scheduler.lease_for_new,
        )
        options = {
            "hostname": self.hostname,
            "connection_limit_exempt": [str(n) for n in self.policy.mynetworks],
            **config.server_options,
        }
        self.server: Server = Server(self.handler, **options)

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self, *, recover: bool = True, reuse_port: bool = False) -> None:
        """Open the queue, end leases left by a crash (``recover``: only when no other
        process delivers from this queue), listen, and start delivering."""
        await self.queue.open()
        if recover:
            await self.queue.recover()
        host, port = self.config.listen
        if reuse_port:
            await self.server.start(host, port, reuse_port=True)
        else:
            await self.server.start(host, port)
        self.scheduler.start()

    async def stop(self) -> None:
        """Stop accepting (clients get 421), finish or release deliveries, close the queue."""
        self.server.close()
        await self.server.wait_closed()
        await self.scheduler.stop()
        await self.queue.close()
