"""Prometheus metrics (``prometheus_client``, an optional dependency: ``--metrics`` needs
it; without it the relay counts nothing and costs nothing)."""

from __future__ import annotations

from typing import Any

__all__ = ["Metrics", "NoMetrics", "start_metrics"]


class NoMetrics:
    """The metrics interface, doing nothing."""

    def sent(self, latency: float) -> None:
        """A message was delivered, ``latency`` seconds after it was queued."""

    def deferred(self) -> None:
        """A delivery attempt was deferred."""

    def bounced(self) -> None:
        """A message was bounced."""

    def depth(self, counts: dict[str, int]) -> None:
        """The queue's depth by state."""


class Metrics(NoMetrics):
    """Deliveries, deferrals and bounces (per recipient), queue depth by state, and the
    time from arrival to delivery."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.registry = registry
        self._sent = Counter("ferrosmtp_relay_delivered", "Recipients delivered", registry=registry)
        self._deferred = Counter(
            "ferrosmtp_relay_deferred", "Recipient delivery attempts deferred", registry=registry
        )
        self._bounced = Counter("ferrosmtp_relay_bounced", "Recipients bounced", registry=registry)
        self._depth = Gauge(
            "ferrosmtp_relay_queue_messages",
            "Queued messages by state",
            ["state"],
            registry=registry,
        )
        self._latency = Histogram(
            "ferrosmtp_relay_delivery_seconds",
            "Time from arrival to delivery",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600, 86400),
            registry=registry,
        )

    def sent(self, latency: float) -> None:
        """A message was delivered, ``latency`` seconds after it was queued."""
        self._sent.inc()
        self._latency.observe(latency)

    def deferred(self) -> None:
        """A delivery attempt was deferred."""
        self._deferred.inc()

    def bounced(self) -> None:
        """A message was bounced."""
        self._bounced.inc()

    def depth(self, counts: dict[str, int]) -> None:
        """The queue's depth by state."""
        for state, value in counts.items():
            self._depth.labels(state).set(value)


def start_metrics(host: str, port: int) -> Metrics:
    """Serve metrics over HTTP on host:port. Raises ImportError without prometheus_client,
    OSError if the port cannot be bound."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    start_http_server(port, addr=host, registry=registry)
    return metrics
