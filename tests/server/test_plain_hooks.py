"""Hooks that are plain functions (ferrosmtp's own handlers' policy checks and in-memory
writes) are answered where their event is handled, with no task; whatever they return
to await, and whatever they raise, follows the rules of async hooks."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Awaitable
from typing import Any

import pytest

from tests.server.support import HOST, running

MESSAGE = b"Subject: plain\r\n\r\nHello.\r\n"


class Plain:
    """RCPT and DATA_CHUNK are plain functions; DATA is a coroutine."""

    def __init__(self) -> None:
        self.rcpt_tasks: list[asyncio.Task[Any] | None] = []
        self.chunk_tasks: list[asyncio.Task[Any] | None] = []
        self.chunks: list[bytes] = []
        self.delivered: list[bytes] = []

    def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.rcpt_tasks.append(asyncio.current_task())
        if address.startswith("no@"):
            return "550 5.1.1 No such user"
        if address.startswith("boom@"):
            raise ValueError("the policy check failed")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    def handle_DATA_CHUNK(
        self, server: Any, session: Any, envelope: Any, data: bytes
    ) -> Awaitable[None] | None:
        self.chunk_tasks.append(asyncio.current_task())
        self.chunks.append(data)
        if b"slow" in data:
            return asyncio.sleep(0.01)  # something to await: a task after all
        return None

    def handle_DATA_ABORT(self, server: Any, session: Any, envelope: Any) -> None:
        self.chunks.clear()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.delivered.append(b"".join(self.chunks))
        self.chunks.clear()
        return "250 2.0.0 Ok: stored"


def test_plain_function_hooks_answer_without_a_task() -> None:
    handler = Plain()
    with running(handler) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        client.ehlo("c.example")
        assert client.mail("a@example.com")[0] == 250
        assert client.rcpt("b@example.net") == (250, b"2.1.5 Ok")
        assert client.rcpt("no@example.net") == (550, b"5.1.1 No such user")
        code, _ = client.data(MESSAGE)
        assert code == 250
        # The same, pipelined: one read holds MAIL and two RCPTs.
        client.sock.sendall(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<c@example.net>\r\nRCPT TO:<no@example.net>\r\n"
        )
        replies = client.sock.recv(1000)
        while replies.count(b"\r\n") < 3:
            replies += client.sock.recv(1000)
        assert replies.split(b"\r\n")[:3] == [
            b"250 2.1.0 OK",
            b"250 2.1.5 Ok",
            b"550 5.1.1 No such user",
        ]
        assert client.data(b"Subject: slow\r\n\r\nslow\r\n")[0] == 250
    assert handler.rcpt_tasks == [None] * 4
    assert handler.chunk_tasks[0] is None  # the usual chunk: no task
    assert handler.delivered[0].endswith(b"Hello.\r\n")
    assert handler.delivered[1].endswith(b"slow\r\n")


class Handled(Plain):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[Exception] = []

    async def handle_exception(self, error: Exception) -> str:
        self.errors.append(error)
        return "451 4.3.0 Try later"


@pytest.mark.parametrize("handler_class", [Plain, Handled])
def test_an_exception_from_a_plain_function_hook_is_handled_as_from_a_coroutine(
    handler_class: type[Plain],
) -> None:
    handler = handler_class()
    with running(handler) as c, smtplib.SMTP(HOST, c.port, timeout=10) as client:
        client.ehlo("c.example")
        client.mail("a@example.com")
        code, text = client.rcpt("boom@example.net")
        assert code == 451, text  # handle_exception's reply, or the server's own 451
        assert client.rcpt("b@example.net")[0] == 250  # the session goes on
        assert client.noop()[0] == 250
    if isinstance(handler, Handled):
        assert [str(e) for e in handler.errors] == ["the policy check failed"]
