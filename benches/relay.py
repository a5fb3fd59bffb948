#!/usr/bin/env python3
"""Relay benchmark: Postfix ``smtp-source`` -> relay -> Postfix ``smtp-sink``, counted at
the sink, for ``ferrosmtp relay`` and a Postfix relay side by side in one run.

Both relays keep their queue on disk with fsync before every 250 (ferrosmtp: SQLite WAL
with group commit, bodies over 64 KiB in fsynced files; Postfix: its queue files, as
shipped) and forward everything to the same smtp-sink (``--relayhost`` /
``relayhost``).

For each message size (1 KiB, 100 KiB) and each relay (ferrosmtp as one process and with
``--workers 2``, as Postfix spreads its relay over both cores; Postfix):

* **peak**: smtp-source sends N messages as fast as it can; msgs/s is N over the time from
  the first connection until the sink has counted all N. It does so over 5, 10, 20, 50
  and 100 sessions (``--sessions``) in turn, and the peak is the best of these rates, with
  the number of sessions that gave it: Postfix (an fsync a message) is fastest with 5 to
  10 sessions (1 to 3 were slower) and slows beyond, a relay that acknowledges after a
  group commit (one fsync for the sessions waiting) gains up to 100, which is Postfix's
  default process limit for smtpd;
* **latency at half peak**: 20 smtplib clients, paced to about half that relay's peak
  (smtp-source's ``-w`` waits whole seconds); p50/p99 of each message's time from
  arrival (just before its 250) to the next hop's 250, read from the relay's own
  per-delivery log lines (``delay=``, the same field in both relays' logs);
* **peak memory** of the relay (PSS, sampled every 50 ms while it runs): ferrosmtp's one
  process; Postfix's master and all its children summed;
* **CPU** during the best peak run: the relay's CPU time per message (all its processes), and
  each process's share of one core, busiest first (with ``--workers 2``: whether both
  workers are busy), then smtp-source's and smtp-sink's (they share the cores).

Postfix logs ``delay=`` with two decimals, so its p50/p99 have a 10 ms resolution.

The load average is printed before and after (``benches/quiet.py``): a table started with
the 1-minute load over 0.5 is marked, the machine was busy and the figures are not the
quiet-machine figures of README (the reading after includes the run's own processes).

Then the scale-out rows (``benches/scaleout.py``): one node on SQLite, one on PostgreSQL,
two on PostgreSQL behind HAProxy, and Postfix: msgs/s, messages per relay CPU-second,
the database's CPU per message, and the time for a node to finish a killed node's mail.

Usage (as root, Postfix, smtp-sink, PostgreSQL and HAProxy from .ci/install-peers.sh)::

    python benches/relay.py              # a few minutes
    python benches/relay.py --quick      # a smoke run
    python benches/relay.py --no-scale-out
    python benches/relay.py --no-scale-out --no-paced --sizes 100 --relays ferrosmtp-2w,postfix
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.peers import PostfixRelay, SmtpSink, free_port, wait_listening  # noqa: E402

from quiet import QuietCheck  # noqa: E402

SOURCE = "/usr/sbin/smtp-source"
SESSIONS = (5, 10, 20, 50, 100)


def rss_kib(pid: int) -> int:
    """The proportional set size (PSS): shared pages divided among the processes sharing
    them, so a sum over Postfix's processes does not count its libraries many times; for
    one process it is close to its RSS."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Peak of the summed RSS of some processes, sampled every 50 ms."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            self.peak = max(self.peak, sum(rss_kib(p) for p in self.pids()))

    def stop(self) -> int:
        self.stopping.set()
        self.join(5)
        return self.peak


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (every thread, and its children
    that have exited: Postfix's short-lived ones), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc/PID/stat parent links)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(proc.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class Relay:
    name = ""

    def start(self, sink_port: int) -> None: ...

    def stop(self) -> None: ...

    @property
    def port(self) -> int:
        raise NotImplementedError

    def delays(self) -> list[float]:
        raise NotImplementedError

    def rss_pids(self) -> list[int]:
        raise NotImplementedError


class Ferrosmtp(Relay):
    name = "ferrosmtp relay"
    workers = 1

    def start(self, sink_port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-relay-"))
        self._port = free_port()
        self.log = self.dir / "relay.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ferrosmtp",
                    "relay",
                    "--listen",
                    f"127.0.0.1:{self._port}",
                    "--spool",
                    str(self.dir / "spool"),
                    "--relayhost",
                    f"127.0.0.1:{sink_port}",
                    "--workers",
                    str(self.workers),
                ],
                stdout=log,
                stderr=log,
            )
        wait_listening("127.0.0.1", self._port, 20)

    @property
    def port(self) -> int:
        return self._port

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def delays(self) -> list[float]:
        text = self.log.read_text("utf-8", "replace")
        pattern = r", delay=([0-9.e-]+), delays=[^ ]*, dsn=[^ ]*, status=sent"
        return [float(x) for x in re.findall(pattern, text)]

    def rss_pids(self) -> list[int]:
        return descendants(self.proc.pid)  # the process and its workers


class Ferrosmtp2W(Ferrosmtp):
    """Two worker processes on one port and one spool (``--workers 2``): Postfix's relay
    spreads over both cores too (smtpd, cleanup, qmgr and smtp processes)."""

    name = "ferrosmtp relay, 2 workers"
    workers = 2


class Postfix(Relay):
    name = "Postfix relay"

    def start(self, sink_port: int) -> None:
        self.pf = PostfixRelay(sink_port, main_cf={"smtp_destination_concurrency_limit": "20"})
        self.pf.start()

    @property
    def port(self) -> int:
        return self.pf.address[1]

    def stop(self) -> None:
        self.pf.stop()

    def delays(self) -> list[float]:
        text = self.pf.maillog()
        return [
            float(x) for x in re.findall(r"postfix/smtp\[.*?, delay=([0-9.]+),.*status=sent", text)
        ]

    def rss_pids(self) -> list[int]:
        master = self.pf._read_master_pid()
        return descendants(master) if master else []


RELAYS: tuple[type[Relay], ...] = (Ferrosmtp, Ferrosmtp2W, Postfix)
RELAY_NAMES: dict[str, type[Relay]] = {
    "ferrosmtp": Ferrosmtp,
    "ferrosmtp-2w": Ferrosmtp2W,
    "postfix": Postfix,
}


@contextlib.contextmanager
def running(relay: Relay, sink: SmtpSink) -> Iterator[Relay]:
    relay.start(sink.port)
    try:
        yield relay
    finally:
        relay.stop()


def source(port: int, count: int, size: int, sessions: int) -> float:
    argv = [
        SOURCE,
        "-s",
        str(sessions),
        "-m",
        str(count),
        "-l",
        str(size),
        "-f",
        "bench@source.test",
        "-t",
        "sink@dest.test",
    ]
    started = time.monotonic()
    subprocess.run([*argv, f"127.0.0.1:{port}"], check=True, capture_output=True, timeout=900)
    return started


def paced(port: int, count: int, size: int, rate: float, threads: int = 20) -> float:
    """``count`` messages at ``rate`` a second over ``threads`` smtplib connections (each
    message on a fixed schedule; smtp-source can only wait whole seconds). Ten threads
    topped out near 1,900 msgs/s, under half of two workers' peak at 1 KiB."""
    body = b"Subject: paced\r\n\r\n" + (b"x" * 78 + b"\r\n") * max(size // 80, 1)
    started = time.monotonic()
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
                for i in range(index, count, threads):
                    delay = started + i / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    smtp.sendmail("bench@source.test", ["sink@dest.test"], body)
        except BaseException as error:  # reported below
            errors.append(error)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(900)
    if errors:
        raise errors[0]
    return started


def peak_run(relay: Relay, sink: SmtpSink, size: int, count: int, sessions: int) -> dict[str, Any]:
    """One peak run: ``count`` messages over ``sessions`` smtp-source sessions; the rate
    and the CPU the relay's processes (and smtp-source and smtp-sink) spent on it."""
    pids = relay.rss_pids()
    cpu_before = {pid: cpu_seconds(pid) for pid in pids}
    assert sink.proc is not None
    sink_before = cpu_seconds(sink.proc.pid)
    counted = sink.counters().messages
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = source(relay.port, count, size, sessions)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)  # smtp-source, reaped
    source_cpu = done.ru_utime + done.ru_stime - children.ru_utime - children.ru_stime
    sink.wait_counters(messages=counted + count, timeout=900)
    elapsed = time.monotonic() - started
    # Each process's share of one core during the run, busiest first (for --workers:
    # whether the work is spread over the workers).
    pids = relay.rss_pids()  # with those started during the run
    used = sorted((cpu_seconds(p) - cpu_before.get(p, 0.0) for p in pids), reverse=True)
    shares = "/".join(f"{u / elapsed:.0%}" for u in used if u > 0.01 * elapsed)
    sink_cpu = cpu_seconds(sink.proc.pid) - sink_before
    shares += f" (source {source_cpu / elapsed:.0%}, sink {sink_cpu / elapsed:.0%})"
    return {
        "peak": count / elapsed,
        "sessions": sessions,
        "cpu_ms": sum(used) / count * 1000,
        "shares": shares,
    }


def measure(
    relay_cls: type[Relay],
    size: int,
    count: int,
    paced_run: bool = True,
    sessions: tuple[int, ...] = SESSIONS,
) -> dict[str, Any]:
    # What the runs before left for the disk to write back (queue files, a spool being
    # removed) is written now, not during this run. Without this, the 100 KiB rows of a
    # full table came out up to 30% below the same relays run alone.
    os.sync()
    time.sleep(1)
    with SmtpSink(max_connections=256) as sink:
        relay = relay_cls()
        with running(relay, sink):
            sampler = Sampler(relay.rss_pids)
            sampler.start()
            runs = [peak_run(relay, sink, size, count, n) for n in sessions]
            best = max(runs, key=lambda run: run["peak"])
            best["runs"] = ", ".join(f"{run['sessions']}: {run['peak']:.0f}" for run in runs)
            peak = best["peak"]
            if not paced_run:
                rss = sampler.stop()
                return {
                    **best,
                    "half": float("nan"),
                    "p50": float("nan"),
                    "p99": float("nan"),
                    "rss": rss / 1024,
                }
            before = sink.counters().messages
            half_count = max(int(peak / 2 * 5), 200)  # about 5 s at half the peak rate
            paced_start = paced(relay.port, half_count, size, peak / 2)
            sink.wait_counters(messages=before + half_count, timeout=900)
            achieved = half_count / (time.monotonic() - paced_start)
            rss = sampler.stop()
            delays = relay.delays()[-half_count:]
    delays.sort()
    return {
        **best,
        "half": achieved,
        "p50": statistics.median(delays) * 1000 if delays else float("nan"),
        "p99": delays[int(len(delays) * 0.99) - 1] * 1000 if delays else float("nan"),
        "rss": rss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--scale-out",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the scale-out rows: SQLite, PostgreSQL, 2 nodes behind HAProxy, Postfix "
        "(benches/scaleout.py; needs postgresql and haproxy)",
    )
    parser.add_argument(
        "--sizes",
        default="1,100",
        metavar="KIB,...",
        help="message sizes in KiB (default 1,100)",
    )
    parser.add_argument(
        "--relays",
        default=",".join(RELAY_NAMES),
        metavar="NAME,...",
        help=f"which relays to run, of {','.join(RELAY_NAMES)} (default all; the 'vs "
        "Postfix' column needs postfix)",
    )
    parser.add_argument("--count", type=int, help="messages per peak run (default by size)")
    parser.add_argument(
        "--sessions",
        default=",".join(map(str, SESSIONS)),
        metavar="N,...",
        help="smtp-source's session counts; the peak is the best of their rates "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--paced",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the latency run at half the peak rate (--no-paced: peak msgs/s and CPU only)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0 or not os.path.exists(SOURCE):
        print("relay bench: needs root and Postfix's smtp-source (.ci/install-peers.sh)")
        return 2
    try:
        sizes = [int(float(k) * 1024) for k in args.sizes.split(",")]
        relays = [RELAY_NAMES[name] for name in args.relays.split(",")]
        sessions = tuple(int(n) for n in args.sessions.split(","))
    except (ValueError, KeyError) as error:
        parser.error(f"--sizes/--relays: {error}")
    default = {1024: 1000 if args.quick else 10000, 100 * 1024: 300 if args.quick else 2000}
    counts = {size: args.count or default.get(size, 2000) for size in sizes}
    quiet = QuietCheck()
    print(quiet.before())
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for size, count in counts.items():
        for relay_cls in relays:
            results[(relay_cls.name, size)] = measure(relay_cls, size, count, args.paced, sessions)
    scale_out: list[str] = []
    if args.scale_out:
        import scaleout  # beside this script

        scale_out = scaleout.table(args.quick)
    print(quiet.after())
    busy = quiet.busy
    mark = " (*)" if busy else ""
    print()
    print(
        f"| relay{mark} | size | msgs/s peak | sessions | vs Postfix | msgs/s paced | p50 ms "
        "| p99 ms | peak PSS MiB | CPU ms/msg | CPU by process |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size in counts:
        base = results.get((Postfix.name, size), {}).get("peak", float("nan"))
        for relay_cls in relays:
            r = results[(relay_cls.name, size)]
            ratio = f"{r['peak'] / base:.2f}x" if base == base else "-"  # nan: no Postfix row
            paced = (
                f"{r['half']:.0f} | {r['p50']:.1f} | {r['p99']:.1f}" if args.paced else "- | - | -"
            )
            print(
                f"| {relay_cls.name} | {size / 1024:g} KiB | {r['peak']:.0f} | {r['sessions']} "
                f"| {ratio} | "
                f"{paced} | {r['rss']:.0f} | {r['cpu_ms']:.2f} | {r['shares']} |"
            )
    print("\nPeak runs (msgs/s by smtp-source sessions):")
    for size in counts:
        for relay_cls in relays:
            runs = results[(relay_cls.name, size)]["runs"]
            print(f"- {relay_cls.name}, {size / 1024:g} KiB: {runs}")
    if scale_out:
        print()
        print("\n".join(scale_out))
    print(f"\n{'(*) ' if busy else ''}Machine: {quiet.verdict()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
