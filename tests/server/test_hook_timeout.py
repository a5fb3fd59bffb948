"""A handler hook that never answers (a hung backend) is cut off at ``hook_timeout`` with
``421 4.3.0``, as Postfix does for a policy service or milter, instead of holding the
connection for ever; the idle timeout does not run while a hook does."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ferrosmtp.server import Server
from tests.server.support import Raw, running


class HungHandler:
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("hang"):
            await asyncio.sleep(3600)  # a backend that never answers
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"


def test_a_hook_that_never_answers_ends_the_connection_at_hook_timeout() -> None:
    handler = HungHandler()
    with running(handler, hook_timeout=0.5, timeout=300) as c, Raw(c.port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<a@b.example>\r\n")
        raw.reply()
        raw.send(b"RCPT TO:<hang@d.example>\r\n")
        started = time.monotonic()
        assert raw.read_to_eof() == b"421 4.3.0 mx.test Error: handler timed out\r\n"
        assert 0.4 < time.monotonic() - started < 3
        # The server goes on: a new client is served.
        with Raw(c.port) as other:
            assert other.reply().startswith(b"220 ")
    with pytest.raises(ValueError):
        Server(handler, hook_timeout=0)
