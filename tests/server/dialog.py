"""Byte-exact dialog files: what a client sends (``C:``) and exactly what the server
answers (``S:``), with escapes (``\\r\\n``) written out so that no line end is implied.

    # free text
    # options: {"lmtp": True}          (ServerConfig / Server keyword arguments)
    S: 220 mx.test ESMTP ferrosmtp\\r\\n
    C: EHLO client.test\\r\\n
    S: 250-mx.test\\r\\n ...
    S: <close>                         (the server closes the connection)

Consecutive ``C:`` lines are separate writes; consecutive ``S:`` lines are concatenated.
The same file drives ``ServerConnection`` directly and a live loopback ``Server``.
"""

from __future__ import annotations

import ast
import asyncio
import codecs
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ferrosmtp.handlers import Sink
from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.server import ServerConfig, ServerConnection
from ferrosmtp.server import Server

DIALOGS = Path(__file__).parent / "dialogs"
HOSTNAME = "mx.test"
CLOSE = b"<close>"


@dataclass
class Step:
    send: bytes | None = None  # a client write
    expect: bytes = b""  # the exact server bytes that follow it
    close: bool = False


@dataclass
class Dialog:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)


def load(path: Path) -> Dialog:
    dialog = Dialog(path.stem)
    current = Step()
    dialog.steps.append(current)
    for raw in path.read_text("utf-8").splitlines():
        if raw.startswith("# options:"):
            dialog.options = ast.literal_eval(raw[len("# options:") :].strip())
        if not raw or raw.startswith("#"):
            continue
        kind, _, text = raw.partition(": ")
        data = codecs.escape_decode(text.encode("utf-8"))[0]
        if kind == "C":
            current = Step(send=data)
            dialog.steps.append(current)
        elif kind == "S":
            if data == CLOSE:
                current.close = True
            else:
                current.expect += data
        else:
            raise ValueError(f"{path}: bad line {raw!r}")
    return dialog


def all_dialogs() -> list[Path]:
    return sorted(DIALOGS.glob("*.smtp"))


def run_sansio(dialog: Dialog, codec: ModuleType) -> list[tuple[bytes, bool]]:
    """Play the dialog against a ServerConnection whose application accepts everything."""
    config = ServerConfig(hostname=HOSTNAME, **dialog.options)
    conn = ServerConnection(config, codec=codec)
    conn.start()
    results = []
    for step in dialog.steps:
        if step.send is not None:
            conn.receive_data(step.send)
        closed = False
        while True:
            event = conn.next_event()
            if event is ev.NEED_DATA:
                break
            if event is ev.CLOSED:
                closed = True
                break
            if event.needs_answer:
                if isinstance(event, ev.MessageEnd) and config.lmtp:
                    conn.respond_lmtp([conn.default_response(event)] * len(conn.recipients))
                else:
                    conn.respond_default()
        results.append((conn.data_to_send(), closed))
    return results


async def _run_live(dialog: Dialog, codec: ModuleType) -> list[tuple[bytes, bool]]:
    options = dict(dialog.options)
    server_options = {
        "lmtp": options.pop("lmtp", False),
        "data_size_limit": options.pop("max_message_size", 32 << 20),
        "max_recipients": options.pop("max_recipients", 1000),
        "max_errors": options.pop("max_errors", 10),
        "bare_newline": options.pop("bare_newline", "reject"),
        "strict_pipelining": options.pop("strict_pipelining", True),
        "enable_SMTPUTF8": options.pop("smtputf8", True),
        "chunking": options.pop("chunking", True),
        "command_size_limit": options.pop("max_command_line", 512),
    }
    assert not options, f"the live runner does not know {options}"
    server = Server(Sink(), hostname=HOSTNAME, codec=codec, **server_options)
    await server.start("127.0.0.1", 0)
    results = []
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for step in dialog.steps:
            if step.send is not None:
                writer.write(step.send)
                await writer.drain()
            got = b""
            try:
                while len(got) < len(step.expect):
                    chunk = await asyncio.wait_for(reader.read(65536), 5)
                    if not chunk:
                        break
                    got += chunk
                closed = False
                if step.close:
                    rest = await asyncio.wait_for(reader.read(), 5)
                    got += rest
                    closed = True
            except (ConnectionResetError, asyncio.TimeoutError):
                closed = step.close
            results.append((got, closed))
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    return results


def run_live(dialog: Dialog, codec: ModuleType) -> list[tuple[bytes, bool]]:
    return asyncio.run(_run_live(dialog, codec))


def expected(dialog: Dialog) -> list[tuple[bytes, bool]]:
    return [(step.expect, step.close) for step in dialog.steps]
