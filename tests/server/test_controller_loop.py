"""``Controller(loop=...)``: it owns its thread and its loop, so it runs on uvloop when that
is installed (``"auto"``, the default), as ``ferrosmtp serve --loop`` does; ``"asyncio"``
and ``"uvloop"`` choose, an event loop instance is used as given. The aiosmtpd drop-in
keeps aiosmtpd's default: asyncio's ``new_event_loop()``."""

from __future__ import annotations

import asyncio
import smtplib
import sys
from typing import Any

import pytest

from ferrosmtp import Controller, _loops
from ferrosmtp.compat import aiosmtpd as compat

from .support import HOST

# uvloop is in the test extra on every platform it supports (not Windows).
if sys.platform == "win32":
    pytest.skip("uvloop does not run on Windows", allow_module_level=True)


class Keep:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


def deliver(controller: Any, handler: Keep) -> str:
    """Send a message through ``controller``; the module of the loop that served it."""
    controller.start()
    try:
        with smtplib.SMTP(HOST, controller.port, timeout=5) as client:
            client.sendmail("a@example.org", ["b@example.org"], b"Subject: loop\r\n\r\nhi\r\n")
        return type(controller.loop).__module__.split(".")[0]
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("loop", "kind"),
    [(None, "uvloop"), ("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")],
)
def test_the_loop_a_controller_runs_on(loop: Any, kind: str) -> None:
    handler = Keep()
    assert deliver(Controller(handler, hostname=HOST, port=0, loop=loop), handler) == kind
    assert handler.messages == [b"Subject: loop\r\n\r\nhi\r\n"]


def test_an_event_loop_is_used_as_given() -> None:
    handler = Keep()
    given = asyncio.new_event_loop()
    controller = Controller(handler, hostname=HOST, port=0, loop=given)
    assert controller.loop is given
    assert deliver(controller, handler) == "asyncio"
    assert handler.messages


def test_implicit_tls_stays_on_asyncio_unless_uvloop_is_asked_for() -> None:
    # uvloop reads a new connection before start_tls can take it (see Controller).
    from .support import Certs

    context = Certs().server_context()
    plain = Controller(Keep(), hostname=HOST, port=0, ssl_context=context)
    asked = Controller(Keep(), hostname=HOST, port=0, ssl_context=context, loop="uvloop")
    try:
        assert type(plain.loop).__module__.split(".")[0] == "asyncio"
        assert type(asked.loop).__module__.split(".")[0] == "uvloop"
    finally:
        plain.loop.close()
        asked.loop.close()


def test_serve_implicit_tls_auto_is_asyncio() -> None:
    import argparse

    from ferrosmtp.cli_serve import _loop_choice

    def choice(loop: str, implicit_tls: bool) -> str:
        return _loop_choice(argparse.Namespace(loop=loop, implicit_tls=implicit_tls))

    assert choice("auto", False) == "auto"
    assert choice("auto", True) == "asyncio"
    assert choice("uvloop", True) == "uvloop"


def test_a_wrong_choice_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="auto, asyncio, uvloop"):
        Controller(Keep(), hostname=HOST, port=0, loop="trio")  # type: ignore[arg-type]


def test_uvloop_asked_for_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now fails
    assert _loops.uvloop_module("auto") is None  # auto falls back to asyncio's loop
    with pytest.raises(ImportError, match="pip install uvloop"):
        Controller(Keep(), hostname=HOST, port=0, loop="uvloop")


def test_the_aiosmtpd_drop_in_keeps_asyncio_by_default() -> None:
    handler = Keep()
    controller = compat.Controller(handler, hostname=HOST, port=0)
    assert deliver(controller, handler) == "asyncio"
