"""The fake SMTP server (fakeserver.py) in a process of its own, for tests that kill it.

Usage: ``python -m tests.client.server_proc '<json>'`` with keys ``port`` (0: ephemeral),
``behaviour`` (``Behaviour`` fields that JSON can express, byte strings as text),
``huge_ehlo`` (answer EHLO with one reply line of that many octets) and ``log`` (a file
that gets one line per message, its recipients, before the final reply is sent). Prints
``PORT <n>`` once listening, then serves until killed. ``Behaviour.die_at`` kills the
process with SIGKILL: the kernel closes its sockets, as when a server crashes.

A process of its own also keeps its buffers out of the test's ``tracemalloc`` counts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.client.fakeserver import Behaviour, FakeServer, FakeSession, Received

_BYTES_FIELDS = {
    "greeting",
    "data_reply",
    "final_reply",
    "starttls_reply",
    "reject_mail",
    "ehlo_reply",
}


def behaviour_from(spec: dict[str, Any]) -> Behaviour:
    fields: dict[str, Any] = {
        key: value.encode() if key in _BYTES_FIELDS and isinstance(value, str) else value
        for key, value in spec.items()
    }
    return Behaviour(**fields)


def kill_myself(session: FakeSession) -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


async def serve(config: dict[str, Any]) -> None:
    behaviour = behaviour_from(config.get("behaviour", {}))
    huge = config.get("huge_ehlo")
    if huge:
        behaviour.ehlo_reply = b"250-" + b"x" * int(huge) + b"\r\n250 ok\r\n"
    log = config.get("log")
    if log:
        path = Path(log)

        def record(message: Received) -> None:
            with path.open("a") as f:
                f.write(" ".join(message.rcpt_to) + "\n")

        behaviour.on_message = record
    server = FakeServer(behaviour, port=int(config.get("port", 0)), die=kill_myself)
    async with server:
        print(f"PORT {server.port}", flush=True)
        await asyncio.Event().wait()  # until killed


def main() -> None:
    asyncio.run(serve(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
