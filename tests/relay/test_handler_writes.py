"""QueueHandler's DATA_CHUNK with a queue whose writes must be awaited (PostgreSQL's chunk
rows): the Received header, then the chunk, in that order, through one awaitable; a write
that fails drops the body and is answered at the end of the message."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any

import pytest

from ferrosmtp.relay import handler as handler_module
from ferrosmtp.relay.handler import STORAGE_FAILED, QueueHandler
from ferrosmtp.relay.policy import RelayPolicy
from ferrosmtp.relay.queue import QueueError


class SlowBody:
    """Every write is to be awaited; ``fail_at`` makes that write fail."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.id = "QID"
        self.size = 0
        self.written: list[bytes] = []
        self.aborted = False
        self.fail_at = fail_at

    def write(self, data: bytes) -> Awaitable[None]:
        return self._write(data)

    async def _write(self, data: bytes) -> None:
        await asyncio.sleep(0)
        if self.fail_at == len(self.written):
            raise QueueError("chunk row lost")
        self.written.append(data)
        self.size += len(data)

    async def abort(self) -> None:
        self.aborted = True


class SlowQueue:
    def __init__(self, body: SlowBody) -> None:
        self.body = body

    def new_body(self) -> SlowBody:
        return self.body


def _envelope() -> Any:
    return SimpleNamespace(rcpt_tos=["b@example.net"])


@pytest.fixture(autouse=True)
def _plain_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler_module, "received_header", lambda *a: b"Received: x\r\n")


def test_header_then_chunk_through_one_awaitable() -> None:
    body = SlowBody()
    queue_handler = QueueHandler(SlowQueue(body), RelayPolicy.parse([], []))  # type: ignore[arg-type]
    envelope = _envelope()
    pending = queue_handler.handle_DATA_CHUNK(None, None, envelope, b"Subject: x\r\n\r\nhi\r\n")
    assert pending is not None and body.written == []  # nothing written before it is awaited
    asyncio.run(pending)  # type: ignore[arg-type]
    assert body.written == [b"Received: x\r\n", b"Subject: x\r\n\r\nhi\r\n"]
    pending = queue_handler.handle_DATA_CHUNK(None, None, envelope, b"more\r\n")
    assert pending is not None
    asyncio.run(pending)  # type: ignore[arg-type]
    assert body.written[-1] == b"more\r\n"


@pytest.mark.parametrize("fail_at", [0, 1])
def test_a_failed_write_drops_the_body_and_the_message_is_refused(fail_at: int) -> None:
    body = SlowBody(fail_at)
    queue_handler = QueueHandler(SlowQueue(body), RelayPolicy.parse([], []))  # type: ignore[arg-type]
    envelope = _envelope()
    pending = queue_handler.handle_DATA_CHUNK(None, None, envelope, b"hi\r\n")
    assert pending is not None
    asyncio.run(pending)  # type: ignore[arg-type]
    assert body.aborted
    # The rest of the message is dropped, and its end answered with the failure.
    assert queue_handler.handle_DATA_CHUNK(None, None, envelope, b"more\r\n") is None
    reply = asyncio.run(queue_handler.handle_DATA(None, None, envelope))
    assert reply == STORAGE_FAILED
