"""Peak server memory for one big message: ferrosmtp with three kinds of handler, and
aiosmtpd, each in its own process; a 100 MiB message sent by smtplib.

    python benches/big_message.py [--mib 100]

Prints the RSS before the message, the peak (VmHWM) after it, and the growth as a multiple
of the message size. Issue 3's target: the growth stays under 2.5x the message.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from quiet import QuietCheck  # beside this script

SERVER = r"""
import asyncio, sys
from ferrosmtp.server import Server
from ferrosmtp import handlers

class Keep:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK %d bytes" % len(envelope.content)

kind, port = sys.argv[1], int(sys.argv[2])
handler = {"sink": handlers.Sink, "data-hook": Keep}.get(kind)
handler = handler() if handler else handlers.Maildir(sys.argv[3])

async def main():
    server = Server(handler, hostname="mx.test", data_size_limit=None)
    await server.start("127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure(name: str, argv: list[str], port: int, message: bytes) -> tuple[str, int, int, float]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        before = status(proc.pid, "VmRSS")
        started = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
            client.sendmail("a@example.com", ["b@example.net"], message)
        elapsed = time.perf_counter() - started
        peak = status(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(10)
    return name, before, peak, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument(
        "--allow-busy", action="store_true", help="exit 0 even when the machine was busy"
    )
    args = parser.parse_args()
    quiet = QuietCheck()
    print(quiet.before(), file=sys.stderr)
    line = b"x" * 76 + b"\r\n"
    message = b"Subject: big\r\n\r\n" + line * (args.mib * (1 << 20) // len(line))
    size = len(message)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ["sink", "data-hook", "maildir"]:
            port = free_port()
            argv = [sys.executable, "-c", SERVER, kind, str(port), os.path.join(tmp, "md")]
            rows.append(measure(f"ferrosmtp ({kind})", argv, port, message))
        port = free_port()
        aiosmtpd = [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "aiosmtpd.handlers.Sink",
            "-s",
            "0",
        ]
        rows.append(measure("aiosmtpd (Sink)", aiosmtpd, port, message))
    print(quiet.after(), file=sys.stderr)
    print(f"one message of {size / (1 << 20):.0f} MiB, sent with smtplib\n")
    print("| server | RSS before | peak RSS | growth | growth / message | time |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, before, peak, elapsed in rows:
        growth = peak - before
        print(
            f"| {name} | {before / (1 << 20):.0f} MiB | {peak / (1 << 20):.0f} MiB | "
            f"{growth / (1 << 20):.0f} MiB | {growth / size:.2f}x | {elapsed:.2f} s |"
        )
    print(f"\nMachine: {quiet.verdict()}")
    return 1 if quiet.busy and not args.allow_busy else 0


if __name__ == "__main__":
    sys.exit(main())
