"""pytest plugin that tests/incumbents/run.py loads into an incumbent's suite: a default
socket timeout, and every test's outcome written as JSON for the gate."""

from __future__ import annotations

import gc
import json
import os
import socket
from typing import Any

import pytest

_outcomes: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    # smtplib and raw sockets in the suites wait for ever by default; a silent server
    # must fail its test, not hang the run.
    socket.setdefaulttimeout(float(os.environ["FERROSMTP_HARNESS_SOCKET_TIMEOUT"]))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    # A coroutine never awaited or a socket left open warns when the garbage collector
    # finds it, which (the suites turn warnings into errors) fails whichever test runs
    # then. Collecting here pins it on the test that left it, so runs are repeatable.
    gc.collect()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # A test fails if any of its phases does (setup, call or teardown).
    previous = _outcomes.get(report.nodeid)
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif previous != "failed" and (report.when == "call" or report.skipped):
        _outcomes[report.nodeid] = "skipped" if report.skipped else "passed"


def pytest_sessionfinish(session: Any) -> None:
    path = os.environ["FERROSMTP_HARNESS_RESULTS"]
    with open(path, "w") as out:
        json.dump(_outcomes, out, indent=0, sort_keys=True)
