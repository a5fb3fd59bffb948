"""Client test helpers: run a coroutine with a hard time limit, choose the codec backend,
and the real-peer fixtures from tests/peers.py."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import ModuleType
from typing import Any, TypeVar

import pytest
import trustme

from tests.conftest import BACKENDS, load_backend
from tests.peers import (  # noqa: F401  (fixtures, used by name)
    aiosmtpd_recording,
    postfix_auth_server,
    postfix_server,
    postfix_server_factory,
    smtp_sink,
    smtp_sink_factory,
)

T = TypeVar("T")

TEST_TIMEOUT = 20.0  # seconds: no client test may hang longer than this


def run(coro: Coroutine[Any, Any, T], timeout: float = TEST_TIMEOUT) -> T:
    """asyncio.run with a hard limit, so a protocol bug fails fast instead of hanging."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Run the test with the Rust core, then with the pure twin, as the active codec of the
    client (its commands, replies, dot-stuffing and sizes)."""
    module = load_backend(request.param)
    import ferrosmtp.client.message
    import ferrosmtp.client.request
    import ferrosmtp.protocol.client

    monkeypatch.setattr(ferrosmtp.protocol.client, "_active_codec", module)
    monkeypatch.setattr(ferrosmtp.client.message, "_codec", module)  # wire_size
    monkeypatch.setattr(ferrosmtp.client.request, "_codec", module)  # xtext for DSN
    return module


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority made at test time (trustme), one per test module."""
    return trustme.CA()
