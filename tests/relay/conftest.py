"""The relay's fixtures: ``queue`` runs each test once per queue backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferrosmtp.relay.queue import Queue
from tests.relay.support import BACKENDS


@pytest.fixture(params=sorted(BACKENDS))
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """A factory of (unopened) queues of one backend, all on the same storage."""
    factory = BACKENDS[request.param]
    return lambda: factory(tmp_path)


@pytest.fixture
def queue(make_queue: object) -> Queue:
    queue: Queue = make_queue()  # type: ignore[operator]
    return queue
