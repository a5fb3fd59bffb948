"""The relay's fixtures: ``queue`` runs each test once per queue backend; so does
``relay_backend`` for the tests that run ``ferrosmtp relay`` as a process (the modules that
ask for it with ``pytestmark``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ferrosmtp.relay.queue import Queue
from tests.relay.support import BACKENDS, RELAY_ARGS


@pytest.fixture(params=sorted(BACKENDS))
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """A factory of (unopened) queues of one backend, all on the same storage."""
    factory = BACKENDS[request.param]
    return lambda: factory(tmp_path)


@pytest.fixture
def queue(make_queue: object) -> Queue:
    queue: Queue = make_queue()  # type: ignore[operator]
    return queue


@pytest.fixture(params=["sqlite", "postgres"])
def relay_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every ``ferrosmtp relay`` and ``ferrosmtp queue`` of the test on one backend: the
    spool folder, or an empty schema of the session's PostgreSQL (``--queue-url``)."""
    saved = list(RELAY_ARGS)
    if request.param == "postgres":
        from tests.scaleout.services import shared_postgres

        RELAY_ARGS[:] = ["--queue-url", shared_postgres().schema_url(request.node.nodeid)]
    try:
        yield request.param
    finally:
        RELAY_ARGS[:] = saved
