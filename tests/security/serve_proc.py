"""A ferrosmtp ``Server`` in a process of its own, for tests that measure its memory.

Usage: ``python -m tests.security.serve_proc '<json>'`` with keys ``handler`` (``sink``,
``hooked``, ``keep``, ``maildir``), ``options`` (keyword arguments of ``Server``),
``maildir`` (a path, for the maildir handler), ``rcpt_reply`` (the hooked RCPT's reply),
``fsize`` (RLIMIT_FSIZE for the process), ``nofile`` (RLIMIT_NOFILE), ``tls_cert`` and
``tls_key`` (PEM files; ``tls_mode`` is ``ssl_context`` for implicit TLS or ``tls_context``
for STARTTLS), ``loop`` (``asyncio`` or ``uvloop``) and ``log`` (a file that gets one line per
accepted message: sender, recipient count, size). Prints ``PORT <n>`` once listening,
then serves until SIGTERM.

Memory is read from /proc/<pid>/status by the test, so the server must not share a process
with the test's own buffers (a 100 MiB flood would otherwise be counted on both sides).
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from ferrosmtp import handlers
from ferrosmtp.server import Server


class Hooked:
    """Every command goes through an awaited hook: the server's task path, not the fast
    synchronous one. Content is counted, not kept."""

    def __init__(self, log: Path | None, rcpt_reply: str = "250 2.1.5 OK") -> None:
        self.log = log
        self.rcpt_reply = rcpt_reply

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        return self.rcpt_reply

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        return "250 2.0.0 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.log is not None:
            size = len(envelope.content or b"")
            with self.log.open("a") as f:
                f.write(f"{envelope.mail_from} {len(envelope.rcpt_tos)} {size}\n")
        return "250 2.0.0 OK"


class Keep(Hooked):
    """Like Hooked, but only DATA is hooked, so the server keeps the content for it."""

    handle_RCPT = None  # type: ignore[assignment]
    handle_MAIL = None  # type: ignore[assignment]
    handle_NOOP = None  # type: ignore[assignment]


def make_handler(spec: dict[str, Any]) -> Any:
    kind = spec.get("handler", "sink")
    log = Path(spec["log"]) if spec.get("log") else None
    if kind == "sink":
        return handlers.Sink()
    if kind == "hooked":
        return Hooked(log, spec.get("rcpt_reply") or "250 2.1.5 OK")
    if kind == "keep":
        return Keep(log)
    if kind == "maildir":
        return handlers.Maildir(spec["maildir"])
    raise SystemExit(f"unknown handler {kind!r}")


async def main(spec: dict[str, Any]) -> None:
    if spec.get("fsize"):
        # A real storage fault without mocks: writes past this size fail with EFBIG.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (spec["fsize"], resource.RLIM_INFINITY))
    if spec.get("nofile"):
        # A typical default descriptor limit, to see what happens when it runs out.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (spec["nofile"], hard))
    options = dict(spec.get("options", {}))
    options.setdefault("hostname", "mx.test")
    if spec.get("tls_cert"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(spec["tls_cert"], spec["tls_key"])
        options[spec.get("tls_mode", "ssl_context")] = context
    server = Server(make_handler(spec), **options)
    await server.start("127.0.0.1", 0)
    print(f"PORT {server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    if spec.get("loop") == "uvloop":  # what `ferrosmtp serve` runs on when installed
        import uvloop

        uvloop.run(main(spec))
    else:
        asyncio.run(main(spec))
