#!/usr/bin/env python3
"""A server as a user switching from aiosmtpd builds it: ``ferrosmtp.compat.aiosmtpd``'s
``Controller`` with aiosmtpd's ``Sink`` handler, the import line being the only change.

``benches/load_server.py`` runs it beside ``ferrosmtp serve --sink`` on the same event
loop (issue 9: the drop-in namespace must stay within 10% of it).

    python benches/compat_server.py --port 2525 [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading

from aiosmtpd.handlers import Sink

from ferrosmtp.compat.aiosmtpd import Controller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    controller = Controller(Sink(), hostname=args.host, port=args.port, loop=loop)
    controller.start()
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    controller.stop()


if __name__ == "__main__":
    main()
