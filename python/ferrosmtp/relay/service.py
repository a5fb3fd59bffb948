"""The relay assembled: a ``Server`` running the ``QueueHandler`` in front of a queue, and
the ``Scheduler`` delivering from it. ``ferrosmtp relay`` is this plus argument parsing;
a program can run the same thing::

    relay = Relay(RelayConfig(spool="spool", relayhost=("smarthost", 587)))
    await relay.start()
    ...
    await relay.stop()
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any

from ferrosmtp.relay.delivery import Deliverer, DeliveryConfig
from ferrosmtp.relay.handler import QueueHandler
from ferrosmtp.relay.metrics import NoMetrics
from ferrosmtp.relay.policy import RelayPolicy
from ferrosmtp.relay.queue import Queue
from ferrosmtp.relay.routing import Router
from ferrosmtp.relay.scheduler import RetryPolicy, Scheduler
from ferrosmtp.relay.sqlite import SqliteQueue

__all__ = ["Relay", "RelayConfig"]


@dataclasses.dataclass
class RelayConfig:
    """The relay's settings, with ``ferrosmtp relay``'s defaults."""

    listen: tuple[str, int] = ("127.0.0.1", 8025)
    spool: str | os.PathLike[str] = "spool"
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
    # Keyword arguments for ferrosmtp.Server (tls_context, authenticator,
    # proxy_protocol_timeout, data_size_limit...).
    server_options: dict[str, Any] = dataclasses.field(default_factory=dict)


class Relay:
    """A running relay: call ``start()``, then ``stop()``."""

    def __init__(
        self, config: RelayConfig, *, queue: Queue | None = None, metrics: NoMetrics | None = None
    ) -> None:
        from ferrosmtp.server import Server

        self.config = config
        self.hostname: str = config.hostname or socket.getfqdn()
        self.queue: Queue = queue if queue is not None else SqliteQueue(Path(config.spool))
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
            )
        )
        self.scheduler: Scheduler = Scheduler(
            self.queue,
            self.router,
            self.deliverer,
            hostname=self.hostname,
            retry=config.retry,
            metrics=metrics,
            max_active=config.max_active,
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
