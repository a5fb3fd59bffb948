#!/usr/bin/env python3
"""The relay's CPU time per message: ``smtp-source`` -> ``ferrosmtp relay`` -> ``smtp-sink``.

Wall-clock rates on a shared machine move with everybody else's load; the CPU time the
relay process spends on one message moves much less. This script runs the relay as the
benchmark does (``--relayhost`` to smtp-sink, the spool on disk, one log line per
delivery), sends a warm-up batch, then ``--count`` messages over 20 sessions, waits until
the sink has them all and the relay has gone idle, and prints the relay's CPU time (user +
system, every thread, from ``/proc/PID/stat``) per message, with the wall time and the
load average for context. ``--rounds`` repeats the measured batch; the median is printed,
then how much of it each thread spent (the event loop's, the spool's syncer, the worker
threads of checkpoints), and the threads that ended meanwhile (the syncer's fsync threads,
a few per batch of body files).

    python benches/relay_cpu.py                      # 1 KiB, 5000 messages, 3 rounds
    python benches/relay_cpu.py --size 102400 --count 1000
    python benches/relay_cpu.py --relay-arg=-q       # without the per-delivery log
    python benches/relay_cpu.py --profile out.pstats # cProfile of the relay's event loop
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.peers import SmtpSink, free_port, wait_listening  # noqa: E402

SOURCE = "/usr/sbin/smtp-source"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process, every thread."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def thread_times(pid: int) -> dict[int, tuple[str, float]]:
    """Name and CPU seconds (user + system) of each thread of a process, by thread id."""
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name, fields = (task / "stat").read_text().rsplit(")", 1)
        except OSError:  # the thread ended meanwhile
            continue
        values = fields.split()
        comm = name.split("(", 1)[1]
        times[int(task.name)] = (comm, (int(values[11]) + int(values[12])) / TICK)
    return times


def settle(pid: int, quiet: float = 0.3, limit: float = 60.0) -> float:
    """Wait until the relay has used no CPU for ``quiet`` seconds; its CPU time then."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now == last:
            return now
        last = now
    return last


def send(port: int, count: int, size: int, sessions: int) -> None:
    subprocess.run(
        [
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
            f"127.0.0.1:{port}",
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--relay-arg", action="append", default=[], help="passed to the relay")
    parser.add_argument(
        "--sink-only",
        action="store_true",
        help="measure 'ferrosmtp serve --sink' instead (the server's share of the cost)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="FILE",
        help="sample the relay with py-spy (--native) during the measured rounds; "
        "FILE gets collapsed stacks",
    )
    parser.add_argument("--profile", metavar="FILE", help="run the relay under cProfile")
    parser.add_argument(
        "--callgrind",
        metavar="FILE",
        help="run the relay under valgrind's callgrind, counting instructions during the "
        "measured rounds only (written to FILE; use small counts: ~50x slower)",
    )
    args = parser.parse_args()
    if not os.path.exists(SOURCE):
        print("relay_cpu: needs Postfix's smtp-source (.ci/install-peers.sh)")
        return 2
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
    work = Path(tempfile.mkdtemp(prefix="relay-cpu-"))
    port = free_port()
    with SmtpSink(max_connections=256) as sink:
        prefix = [sys.executable]
        if args.callgrind:
            prefix = [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                "--separate-threads=yes",
                f"--callgrind-out-file={args.callgrind}",
                *prefix,
            ]
        if args.profile:
            prefix += ["-m", "cProfile", "-o", args.profile]
        argv = [
            *prefix,
            "-m",
            "ferrosmtp",
            "relay",
            "--listen",
            f"127.0.0.1:{port}",
            "--spool",
            str(work / "spool"),
            "--relayhost",
            f"127.0.0.1:{sink.port}",
            *args.relay_arg,
        ]
        if args.sink_only:
            argv = [
                *prefix,
                "-m",
                "ferrosmtp",
                "serve",
                "--sink",
                "--port",
                str(port),
                *args.relay_arg,
            ]
        delivered = 0 if args.sink_only else 1
        with open(work / "relay.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log)
        try:
            wait_listening("127.0.0.1", port, 30)
            expected = args.warmup * delivered
            send(port, args.warmup, args.size, args.sessions)
            sink.wait_counters(messages=expected, timeout=600)
            per_message = []
            if args.callgrind:
                settle(proc.pid)
                subprocess.run(
                    ["callgrind_control", "-i", "on", str(proc.pid)],
                    check=True,
                    capture_output=True,
                )
            spy = None
            if args.py_spy:
                settle(proc.pid)
                spy = subprocess.Popen(
                    [
                        "perf",
                        "record",
                        "-e",
                        "cpu-clock",
                        "-F",
                        "2000",
                        "-g",
                        "-o",
                        args.py_spy,
                        "-p",
                        str(proc.pid),
                    ]
                    if args.py_spy.endswith(".perf")
                    else [
                        "py-spy",
                        "record",
                        "--native",
                        "--format",
                        "raw",
                        "-r",
                        "400",
                        "-o",
                        args.py_spy,
                        "-p",
                        str(proc.pid),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
            settle(proc.pid)
            threads0 = thread_times(proc.pid)
            total0 = sum(cpu_times(proc.pid))
            for _ in range(args.rounds):
                settle(proc.pid)
                user0, system0 = cpu_times(proc.pid)
                started = time.monotonic()
                send(port, args.count, args.size, args.sessions)
                expected += args.count * delivered
                sink.wait_counters(messages=expected, timeout=600)
                wall = time.monotonic() - started
                settle(proc.pid)
                user1, system1 = cpu_times(proc.pid)
                used = user1 - user0 + system1 - system0
                per_message.append(used / args.count * 1e6)
                print(
                    f"  {args.count} x {args.size} B: relay CPU {used:.2f} s = "
                    f"{per_message[-1]:.0f} us/msg (user {user1 - user0:.2f} s, system "
                    f"{system1 - system0:.2f} s); {args.count / wall:.0f} msgs/s wall"
                )
            threads1 = thread_times(proc.pid)
            total1 = sum(cpu_times(proc.pid))
            if spy is not None:
                spy.send_signal(2)
                spy.wait(60)
            if args.callgrind:
                subprocess.run(
                    ["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True
                )
        finally:
            proc.terminate()
            proc.wait(60)
    print(f"load average after:  {Path('/proc/loadavg').read_text().strip()}")
    print(
        f"relay CPU per message (median of {args.rounds}): {statistics.median(per_message):.0f} us"
    )
    # Which thread spends it: the event loop (the thread whose id is the process's) and
    # the others (the spool's syncer, worker threads), over every round; what is left of
    # the process's total was spent by threads that ended (the syncer's fsync threads).
    spent = sorted(
        ((used - threads0.get(t, ("", 0.0))[1], t, name) for t, (name, used) in threads1.items()),
        reverse=True,
    )
    messages = args.count * args.rounds
    ended = total1 - total0 - sum(used for used, _, _ in spent)
    print(
        "  by thread: "
        + ", ".join(
            [
                f"{'event loop' if tid == proc.pid else f'{name} {tid}'}"
                f" {used / messages * 1e6:.0f} us"
                for used, tid, name in spent
                if used > 0
            ]
            + ([f"threads that ended {ended / messages * 1e6:.0f} us"] if ended > 0 else [])
        )
    )
    if args.callgrind:
        total = 0
        for dump in Path(args.callgrind).parent.glob(Path(args.callgrind).name + ".*"):
            for line in dump.read_text().splitlines():
                if line.startswith("summary:"):  # one file per thread: their sum
                    total += int(line.split()[1])
        print(
            f"instructions per message: {total / (args.count * args.rounds):,.0f} "
            f"(callgrind_annotate {args.callgrind})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
