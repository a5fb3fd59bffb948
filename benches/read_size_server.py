"""``ferrosmtp`` with the server's read size set: for A/B runs of ``READ_SIZE``.

    python benches/load_server.py --fresh --workloads 1mib \\
        --servers floor-asyncio,ferrosmtp-asyncio --server "ferrosmtp-256k=python \\
        benches/read_size_server.py 262144 serve --sink -q --host 127.0.0.1 \\
        --port {port} --loop asyncio"

The first argument is the most bytes the server reads at a time
(``ferrosmtp.server.reads.READ_SIZE``); the rest is ``ferrosmtp``'s command line.
"""

from __future__ import annotations

import sys

import ferrosmtp.server.reads as reads
import ferrosmtp.server.smtp as smtp
from ferrosmtp.cli import main


def set_read_size(size: int) -> None:
    """Every place the read size is taken from: read when the server reads."""
    reads.READ_SIZE = smtp.READ_SIZE = size
    reads._VIEW = memoryview(bytearray(size))


if __name__ == "__main__":
    if len(sys.argv) < 2 or not sys.argv[1].isdigit():
        sys.exit("usage: read_size_server.py BYTES FERROSMTP-ARGS...")
    set_read_size(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
