#!/usr/bin/env python3
"""The SQLite spool alone: bodies in their row (inline) or in files, by message size.

How ``SqliteQueue``'s ``inline_limit`` was chosen. For each size, ``--count`` messages are
put by 20 concurrent writers (as 20 sessions would: group commit), then each is leased
back and recorded as delivered (its row deleted, its file unlinked), once with every body
inline and once with every body in a file of its own. Printed per message (medians of
``--rounds``): wall time, CPU time of the process (every thread), and the octets the
process caused to be written to the disk (``/proc/self/io`` ``write_bytes``: the WAL, the
database file at checkpoints, body files). A body in its row is written about four times
its size (measured: the WAL, the database at the checkpoint, the pages around it) with one
fsync per batch; a body in a file once, with an fsync of its own.

    python benches/spool.py                      # 1, 16, 64, 100, 256 KiB
    python benches/spool.py --sizes 102400 --count 2000
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from ferrosmtp.relay.queue import (  # noqa: E402
    Envelope,
    Outcome,
    QueueEntry,
    Recipient,
    RecipientResult,
)
from ferrosmtp.relay.sqlite import SqliteQueue  # noqa: E402

WRITERS = 20


def written() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(spool: Path, size: int, count: int, inline_limit: int) -> dict[str, float]:
    queue = SqliteQueue(spool, inline_limit=inline_limit)
    await queue.open()
    body = (b"x" * 78 + b"\r\n") * (size // 80) + b"\r\n" * ((size % 80) // 2)
    chunk = 64 << 10

    async def writer(n: int) -> None:
        for _ in range(n):
            writing = queue.new_body()
            for start in range(0, len(body), chunk):
                await writing.write(body[start : start + chunk])
            await queue.put(Envelope("a@x.test", [Recipient("b@y.test")]), writing)

    started, cpu0, io0 = time.monotonic(), cpu(), written()
    await asyncio.gather(*(writer(count // WRITERS) for _ in range(WRITERS)))
    put_wall = time.monotonic() - started
    done = 0
    while True:
        entries = await queue.lease(200, 60)
        if not entries:
            break

        async def deliver(entry: QueueEntry) -> None:
            await queue.read_body(entry)
            await queue.record(entry, [RecipientResult("b@y.test", Outcome.SENT)], None)

        await asyncio.gather(*(deliver(e) for e in entries))
        done += len(entries)
    wall = time.monotonic() - started
    used, io = cpu() - cpu0, written() - io0
    await queue.close()
    n = WRITERS * (count // WRITERS)
    assert done == n, (done, n)
    return {
        "put_us": put_wall / n * 1e6,
        "wall_us": wall / n * 1e6,
        "cpu_us": used / n * 1e6,
        "written": io / n / size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[1024, 16384, 65536, 102400, 262144],
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None, help="where to make the spools")
    parser.add_argument("--rounds", type=int, default=3, help="medians of this many runs")
    args = parser.parse_args()
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
    print("| size | bodies | put us/msg | put+deliver us/msg | CPU us/msg | written / size |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        for name, limit in (("inline", 1 << 30), ("files", 0)):
            runs = []
            for _ in range(args.rounds):
                spool = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
                try:
                    runs.append(asyncio.run(run(spool, size, args.count, limit)))
                finally:
                    shutil.rmtree(spool, ignore_errors=True)
            r = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
            print(
                f"| {size // 1024} KiB | {name} | {r['put_us']:.0f} | {r['wall_us']:.0f} | "
                f"{r['cpu_us']:.0f} | {r['written']:.2f} |",
                flush=True,
            )
    print(f"load average after:  {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
