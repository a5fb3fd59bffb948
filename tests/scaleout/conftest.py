"""Fixtures of the scale-out tests: PostgreSQL clusters (the session's shared one, or one
a test may restart), a schema per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.scaleout.services import PostgresCluster, shared_postgres


@pytest.fixture
def postgres() -> PostgresCluster:
    """The session's cluster (do not stop or restart it: use ``own_postgres``)."""
    return shared_postgres()


@pytest.fixture
def queue_url(postgres: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """An empty schema of the shared cluster for this test."""
    return postgres.schema_url(request.node.nodeid)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresCluster]:
    """A cluster of this module's own, which its tests may stop and restart."""
    with PostgresCluster() as cluster:
        yield cluster


# Figures the scale-out tests measure (duplicates after kills, take-over times), printed at
# the end of the run whatever its verbosity.
REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("scale-out: what the kill and restart tests measured")
        for line in REPORT:
            terminalreporter.write_line(line)
