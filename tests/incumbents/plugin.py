"""pytest plugin that tests/incumbents/run.py loads into an incumbent's suite: a default
socket timeout, and every test's outcome written as JSON for the gate."""

from __future__ import annotations

import gc
import json
import os
import smtplib
import socket
from typing import Any

import pytest

_outcomes: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    # smtplib and raw sockets in the suites wait for ever by default; a silent server
    # must fail its test, not hang the run.
    socket.setdefaulttimeout(float(os.environ["FERROSMTP_HARNESS_SOCKET_TIMEOUT"]))


# smtplib as each test found it. aiosmtpd's smuggling test swaps smtplib.SMTP.data (and two
# helpers) for one that sends the message as given, and puts them back only at its end;
# when it fails before that (ferrosmtp refuses the bare LF it sends), every later test
# would send DATA without its terminating dot and hang. Each test gets smtplib back as it
# found it, whatever happened in the one before.
_smtplib_saved: tuple[dict[str, Any], dict[str, Any]] | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _smtplib_saved
    _smtplib_saved = (dict(vars(smtplib)), dict(vars(smtplib.SMTP)))


def _restore_smtplib() -> None:
    if _smtplib_saved is None:
        return
    module, cls = _smtplib_saved
    for name, value in module.items():
        if vars(smtplib).get(name) is not value:
            setattr(smtplib, name, value)
    for name, value in cls.items():
        if vars(smtplib.SMTP).get(name) is not value:
            setattr(smtplib.SMTP, name, value)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _restore_smtplib()
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
