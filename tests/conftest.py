"""Shared fixtures. Peer helpers (Postfix, smtp-sink, swaks) live in tests/peers.py."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import pytest

# Real SMTP peers (smtp-sink, Postfix as relay and as server, swaks) as fixtures.
pytest_plugins = ["tests.peers"]

BACKENDS = ["rust", "pure"]


def load_backend(name: str) -> ModuleType:
    if name == "rust":
        return importlib.import_module("ferrosmtp._core")
    return importlib.import_module("ferrosmtp._pure")


@pytest.fixture(params=BACKENDS)
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """Each codec test runs once per backend: the Rust core and the pure twin."""
    return load_backend(request.param)


@pytest.fixture(scope="session")
def rust() -> ModuleType:
    return load_backend("rust")


@pytest.fixture(scope="session")
def pure() -> ModuleType:
    return load_backend("pure")


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_postgres() -> Iterator[None]:
    """The PostgreSQL cluster some tests start on first use (tests/scaleout/services.py)
    is stopped when the session ends."""
    yield
    from tests.scaleout.services import stop_shared

    stop_shared()


def pytest_report_header(config: pytest.Config) -> str:
    backend = os.environ.get("FERROSMTP_BACKEND", "rust (default)")
    return f"ferrosmtp codec backend for the I/O layers: {backend}"
