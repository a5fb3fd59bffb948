#!/usr/bin/env python3
"""Server load benchmark: Postfix ``smtp-source`` drives several SMTP servers in one run.

Servers (each in its own process, on its own 127.0.0.1 port, all started up front):

* ``aiosmtpd``: ``python -m aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Sink``
* ``smtp-sink``: Postfix's C sink, the fast reference
* ``ferrosmtp`` / ``ferrosmtp-pure``: ``python -m ferrosmtp serve --host 127.0.0.1 --port PORT
  --sink -q`` (no log line per message, like the other two) with FERROSMTP_BACKEND=rust /
  pure; skipped with a message while that command does not exist yet
* ``ferrosmtp-2w``: the same with ``--workers 2`` (two processes on one port; peak RSS
  counts the whole process tree)
* ``ferrosmtp-asyncio``: ``ferrosmtp serve --sink -q --loop asyncio`` (asyncio's own loop)
* ``compat-aiosmtpd`` / ``compat-aiosmtpd-uvloop``: ``benches/compat_server.py``, a
  ``ferrosmtp.compat.aiosmtpd.Controller`` with aiosmtpd's ``Sink`` (the drop-in a user
  switching from aiosmtpd builds), on asyncio's loop / uvloop: compare with
  ``ferrosmtp-asyncio`` / ``ferrosmtp`` (issue 9 wants it within 10%)
* ``floor`` / ``floor-asyncio``: ``benches/floor_server.py``, a responder that parses
  nothing (greets, 250 to every line, 354 to DATA, 250 at the end of data) on uvloop /
  asyncio's loop: the floor of any Python server on that loop; ``vs floor`` compares each
  ferrosmtp row with the floor on the same loop
* anything else with ``--server NAME='command ... {port} ...'``

Workloads (smtp-source does not pipeline and sends HELO, one recipient per message):

* ``reuse``: 20 sessions, 1 KiB messages, many messages per connection (-d)
* ``per-conn``: 20 sessions, 1 KiB messages, one connection per message
* ``1mib``: 4 sessions, 1 MiB messages, reusing connections; peak RSS of each server is
  measured over this workload (VmHWM reset through /proc/PID/clear_refs, plus sampling)

Each measurement is the wall time around one smtp-source run; every workload is repeated
and the median reported, and the servers are interleaved (rotating order per repeat) so
that noise on a shared machine hits all of them alike. Every run is checked: smtp-source
must exit 0 (it aborts on any unexpected reply), its -c counter must reach the message
count, smtp-sink's own -c counter must match, and the server must still be alive. Failures
are printed loudly, excluded from the medians, and make the exit status 1.

``server CPU us/msg`` is the server's own CPU time (its process and any workers, from
``/proc``) per message, median of the runs: the rate depends on how two cores are shared
with smtp-source and moves by 10% or more from run to run; the CPU a message costs the
server moves less. ``--fresh`` starts every server anew (warmed up with a tenth of the
workload) before each run, so that no single process's luck decides a row.

Usage::

    python benches/load_server.py            # full run, a few minutes
    python benches/load_server.py --quick    # short run, well under a minute of load
    python benches/load_server.py --servers aiosmtpd,smtp-sink --repeats 3

The load average is printed before and after; a table taken on a busy machine (1-minute
load over 0.5) is marked NOT PUBLISHABLE and the exit status is 1 (``--allow-busy``: 0).

MB/s counts smtp-source's payload bytes (-l) in units of 10^6 bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from quiet import QuietCheck

HOST = "127.0.0.1"
SBIN_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
SOURCE_HELO = "bench.localdomain"
KIB = 1024
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    key: str
    title: str
    sessions: int
    messages: int
    size: int
    reuse: bool
    run_timeout: float

    def source_flags(self) -> list[str]:
        flags = ["-s", str(self.sessions), "-m", str(self.messages), "-l", str(self.size)]
        if self.reuse:
            flags.append("-d")
        return flags


def workloads(quick: bool) -> list[Workload]:
    # Counts give the fastest servers (~37k msgs/s reusing connections, ~12k with one per
    # message, ~700 at 1 MiB) a second or more per run in full mode, so that a run's time
    # is not mostly smtp-source's start and end (runs of 0.2 s moved by 20% from one to the
    # next); the slowest (aiosmtpd) takes 10 to 20 s. Quick mode: about a second for it.
    if quick:
        return [
            Workload("reuse", "20 sessions x 1 KiB, reused connections", 20, 3000, KIB, True, 60),
            Workload("per-conn", "20 sessions x 1 KiB, 1 connection/msg", 20, 1000, KIB, False, 60),
            Workload("1mib", "4 sessions x 1 MiB, reused connections", 4, 40, MIB, True, 90),
        ]
    return [
        Workload("reuse", "20 sessions x 1 KiB, reused connections", 20, 40000, KIB, True, 240),
        Workload("per-conn", "20 sessions x 1 KiB, 1 connection/msg", 20, 12000, KIB, False, 240),
        Workload("1mib", "4 sessions x 1 MiB, reused connections", 4, 600, MIB, True, 300),
    ]


WARMUP = Workload("warmup", "warm-up", 4, 200, KIB, True, 60)


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """How to start one server: ``argv(port)``; ``unavailable()`` explains a skip."""

    name: str
    argv: Callable[[int], list[str]]
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    unavailable: Callable[[], str | None] = lambda: None
    # smtp-sink prints its own message counter (-c), an independent acceptance check.
    sink_counter: bool = False
    start_timeout: float = 20.0


def find_binary(name: str) -> str | None:
    for directory in SBIN_DIRS:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def _aiosmtpd_argv(port: int) -> list[str]:
    return [
        sys.executable, "-m", "aiosmtpd", "-n",
        "-l", f"{HOST}:{port}", "-c", "aiosmtpd.handlers.Sink",
    ]  # fmt: skip


def _aiosmtpd_unavailable() -> str | None:
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        return "aiosmtpd is not installed in this Python"
    return None


def _smtp_sink_argv(port: int) -> list[str]:
    binary = find_binary("smtp-sink") or "smtp-sink"
    argv = [binary, "-c", "-4", "-h", "smtp-sink.bench", "-m", "1024"]
    if os.geteuid() == 0:
        argv += ["-u", "postfix"]  # smtp-sink refuses to keep root privileges
    return [*argv, f"inet:{HOST}:{port}", "1024"]


def _smtp_sink_unavailable() -> str | None:
    if find_binary("smtp-sink") is None:
        return "smtp-sink not found (install postfix: .ci/install-peers.sh)"
    return None


def _ferrosmtp_argv(port: int) -> list[str]:
    # -q: no log line per connection and message, like the others (aiosmtpd's CLI logs
    # errors only, smtp-sink nothing). With them ferrosmtp spends ~18 us a line.
    return [
        sys.executable, "-m", "ferrosmtp", "serve",
        "--host", HOST, "--port", str(port), "--sink", "-q",
    ]  # fmt: skip


_ferrosmtp_probe_cache: list[str | None] = []


def _ferrosmtp_unavailable() -> str | None:
    """``python -m ferrosmtp serve --help`` must work and mention --sink."""
    if _ferrosmtp_probe_cache:
        return _ferrosmtp_probe_cache[0]
    reason: str | None = None
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ferrosmtp", "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = f"`python -m ferrosmtp serve --help` failed: {exc}"
    else:
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            reason = f"`python -m ferrosmtp serve` not available yet: {last}"
        elif "--sink" not in result.stdout:
            reason = "`python -m ferrosmtp serve` has no --sink option yet"
    _ferrosmtp_probe_cache.append(reason)
    return reason


def _floor_argv(loop: str) -> Callable[[int], list[str]]:
    script = str(Path(__file__).resolve().with_name("floor_server.py"))

    def argv(port: int) -> list[str]:
        return [sys.executable, script, "--host", HOST, "--port", str(port), "--loop", loop]

    return argv


def _uvloop_unavailable() -> str | None:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "uvloop is not installed in this Python"
    return None


def _compat_argv(loop: str) -> Callable[[int], list[str]]:
    script = str(Path(__file__).resolve().with_name("compat_server.py"))

    def argv(port: int) -> list[str]:
        return [sys.executable, script, "--host", HOST, "--port", str(port), "--loop", loop]

    return argv


# The parse-nothing responder on the same loop as each ferrosmtp row ("vs floor").
FLOOR_OF = {
    "ferrosmtp": "floor",
    "ferrosmtp-2w": "floor",
    "ferrosmtp-asyncio": "floor-asyncio",
    "compat-aiosmtpd": "floor-asyncio",
    "compat-aiosmtpd-uvloop": "floor",
}


def builtin_servers() -> dict[str, ServerSpec]:
    return {
        "floor": ServerSpec("floor", _floor_argv("uvloop"), unavailable=_uvloop_unavailable),
        "floor-asyncio": ServerSpec("floor-asyncio", _floor_argv("asyncio")),
        "ferrosmtp-asyncio": ServerSpec(
            "ferrosmtp-asyncio",
            lambda port: [*_ferrosmtp_argv(port), "--loop", "asyncio"],
            env={"FERROSMTP_BACKEND": "rust"},
            unavailable=_ferrosmtp_unavailable,
        ),
        "aiosmtpd": ServerSpec("aiosmtpd", _aiosmtpd_argv, unavailable=_aiosmtpd_unavailable),
        "compat-aiosmtpd": ServerSpec(
            "compat-aiosmtpd", _compat_argv("asyncio"), env={"FERROSMTP_BACKEND": "rust"}
        ),
        "compat-aiosmtpd-uvloop": ServerSpec(
            "compat-aiosmtpd-uvloop",
            _compat_argv("uvloop"),
            env={"FERROSMTP_BACKEND": "rust"},
            unavailable=_uvloop_unavailable,
        ),
        "smtp-sink": ServerSpec(
            "smtp-sink", _smtp_sink_argv, unavailable=_smtp_sink_unavailable, sink_counter=True
        ),
        "ferrosmtp": ServerSpec(
            "ferrosmtp",
            _ferrosmtp_argv,
            env={"FERROSMTP_BACKEND": "rust"},
            unavailable=_ferrosmtp_unavailable,
        ),
        "ferrosmtp-pure": ServerSpec(
            "ferrosmtp-pure",
            _ferrosmtp_argv,
            env={"FERROSMTP_BACKEND": "pure"},
            unavailable=_ferrosmtp_unavailable,
        ),
        # Two worker processes on one port (SO_REUSEPORT): what a relay that needs more
        # than one core runs. Not a like-for-like row: the other servers use one process.
        "ferrosmtp-2w": ServerSpec(
            "ferrosmtp-2w",
            lambda port: [*_ferrosmtp_argv(port), "--workers", "2"],
            env={"FERROSMTP_BACKEND": "rust"},
            unavailable=_ferrosmtp_unavailable,
        ),
    }


def custom_server(text: str) -> ServerSpec:
    """``NAME=command with {port}`` from the command line."""
    name, sep, command = text.partition("=")
    if not sep or not name or "{port}" not in command:
        raise argparse.ArgumentTypeError(f"--server wants NAME='command ... {{port}} ...': {text}")
    template = shlex.split(command)

    def argv(port: int) -> list[str]:
        return [part.replace("{port}", str(port)) for part in template]

    return ServerSpec(name, argv)


# --------------------------------------------------------------------------------------
# Processes, ports, memory
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def is_listening(port: int) -> bool:
    """LISTEN on 127.0.0.1:port per /proc/net/tcp; no probe connection, so no server
    sees (and counts) a session that is not part of a measurement."""
    want = f"{int.from_bytes(socket.inet_aton(HOST), 'little'):08X}:{port:04X}"
    any_addr = f"00000000:{port:04X}"
    try:
        with open("/proc/net/tcp", encoding="ascii") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[1] in (want, any_addr) and fields[3] == "0A":
                    return True
    except OSError:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return True
    return False


def _status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _descendants(pid: int) -> list[int]:
    """pid and all its descendants (a server may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name can contain spaces and parentheses: split after the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a server has used: its process and any workers."""
    ticks = 0
    for each in _descendants(pid):
        try:
            with open(f"/proc/{each}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15
    return ticks / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Peak RSS of a process tree during a block: VmHWM after resetting it, and VmRSS
    sampled every 20 ms as a cross-check (and fallback where clear_refs is refused)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sampled_kib = 0
        self.hwm_kib: int | None = None
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            total = sum(_status_kib(p, "VmRSS") or 0 for p in _descendants(self.pid))
            self.sampled_kib = max(self.sampled_kib, total)

    def __enter__(self) -> RssSampler:
        ok = True
        for p in _descendants(self.pid):
            try:
                # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
                with open(f"/proc/{p}/clear_refs", "w", encoding="ascii") as f:
                    f.write("5")
            except OSError:
                ok = False
        self.hwm_reset = ok
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        values = [_status_kib(p, "VmHWM") for p in _descendants(self.pid)]
        self.hwm_kib = sum(v for v in values if v is not None) if values else None

    @property
    def peak_kib(self) -> int:
        return max(self.sampled_kib, self.hwm_kib or 0)


class RunningServer:
    def __init__(self, spec: ServerSpec, workdir: Path) -> None:
        self.spec = spec
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout_path = workdir / f"{spec.name}.stdout"
        self.stderr_path = workdir / f"{spec.name}.stderr"
        self.idle_rss_kib: int | None = None

    def start(self) -> None:
        last = ""
        # A couple of attempts: the free port can be taken between our probe and the bind.
        for _ in range(3):
            self.port = free_port()
            env = {**os.environ, **self.spec.env}
            with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    self.spec.argv(self.port),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=env,
                )
            deadline = time.monotonic() + self.spec.start_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if is_listening(self.port):
                    time.sleep(0.2)  # let an interpreter finish its startup work
                    self.idle_rss_kib = _status_kib(self.proc.pid, "VmRSS")
                    return
                time.sleep(0.05)
            last = self.log_tail()
            self.stop()
        raise RuntimeError(f"{self.spec.name} did not start listening: {last}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 5) -> str:
        text = ""
        for path in (self.stderr_path, self.stdout_path):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"

    def sink_messages(self) -> int:
        """smtp-sink's cumulative -c message counter ("sess=N quit=N mesg=N\\r")."""
        try:
            data = self.stdout_path.read_bytes()
        except OSError:
            return 0
        found = re.findall(rb"mesg=(\d+)", data)
        return int(found[-1]) if found else 0


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Sample:
    seconds: float
    ok: bool
    problem: str = ""
    cpu: float | None = None  # the server's CPU seconds during the run


@dataclasses.dataclass
class Cell:
    """All runs of one workload against one server."""

    samples: list[Sample] = dataclasses.field(default_factory=list)
    peak_rss_kib: int = 0
    hwm_reset: bool = True
    skipped_runs: int = 0

    @property
    def good(self) -> list[float]:
        return [s.seconds for s in self.samples if s.ok]

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def cpu_us_per_message(self, messages: int) -> float | None:
        """The server's CPU time per message, median of the good runs: unlike the rate,
        it does not move with how the two cores are shared with smtp-source."""
        cpu = [s.cpu for s in self.samples if s.ok and s.cpu is not None]
        return statistics.median(cpu) / messages * 1e6 if cpu else None


def run_source(source: str, workload: Workload, server: RunningServer, timeout: float) -> Sample:
    argv = [
        source, "-c", *workload.source_flags(),
        "-M", SOURCE_HELO, "-f", f"sender@{SOURCE_HELO}", "-t", f"rcpt@{SOURCE_HELO}",
        f"inet:{HOST}:{server.port}",
    ]  # fmt: skip
    before = server.sink_messages() if server.spec.sink_counter else 0
    # smtp-source's output goes to files, not pipes: with -c it writes after every message,
    # and a pipe would wake this process thousands of times per second on a 2-core box.
    out_path = server.stdout_path.with_name("smtp-source.stdout")
    err_path = server.stdout_path.with_name("smtp-source.stderr")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        # A blocking wait, with a watchdog for the timeout: Popen.wait(timeout) (and
        # subprocess.run(timeout=...)) polls with sleeps of up to 50 ms, which quantized
        # every run (a 0.27 s run read as 0.27 or 0.32 s: 17% steps between rates).
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        watchdog = threading.Timer(timeout, kill)
        watchdog.start()
        try:
            returncode = proc.wait()
        finally:
            watchdog.cancel()
        elapsed = time.perf_counter() - start
        if timed_out.is_set():
            return Sample(elapsed, False, f"smtp-source timed out after {timeout:.0f}s")
    problems: list[str] = []
    if returncode != 0:
        lines = err_path.read_text(errors="replace").strip().splitlines()
        problems.append(f"smtp-source rc={returncode}: {lines[-1] if lines else ''}")
    # -c prints the number of completed DATA transactions, CR-separated.
    counts = re.findall(rb"\d+", out_path.read_bytes())
    done = int(counts[-1]) if counts else 0
    if done != workload.messages:
        problems.append(f"client counted {done}/{workload.messages} accepted messages")
    if server.spec.sink_counter:
        # smtp-sink updates its counter when it sees "."; give the file a moment.
        deadline = time.monotonic() + 3
        while server.sink_messages() - before < workload.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        got = server.sink_messages() - before
        if got != workload.messages:
            problems.append(f"smtp-sink counted {got}/{workload.messages} messages")
    if not server.alive():
        problems.append(f"server died: {server.log_tail()}")
    return Sample(elapsed, not problems, "; ".join(problems))


def restart(server: RunningServer, source: str, workload: Workload) -> str | None:
    """A new process for ``server`` (``--fresh``), warmed up with a tenth of ``workload``
    (a process new to 1 MiB messages, say, first grows its buffers and glibc's mmap
    threshold: a long-running server has done that long ago); what went wrong, if
    anything."""
    server.stop()
    try:
        server.start()
    except RuntimeError as exc:
        return str(exc)
    warmup = dataclasses.replace(workload, messages=max(workload.messages // 10, 40))
    sample = run_source(source, warmup, server, workload.run_timeout)
    return None if sample.ok else f"warm-up: {sample.problem}"


def fmt_rate(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def fmt_ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "n/a"
    return f"{value / base:.2f}x"


def fmt_mib(kib: int | None) -> str:
    return "n/a" if not kib else f"{kib / 1024:.1f} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (CI smoke)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per cell (5; quick 3)")
    parser.add_argument(
        "--servers",
        default="aiosmtpd,smtp-sink,floor,ferrosmtp,floor-asyncio,ferrosmtp-asyncio,"
        "compat-aiosmtpd,ferrosmtp-pure",
        help="comma-separated built-in servers: aiosmtpd, smtp-sink, floor, floor-asyncio, "
        "ferrosmtp, ferrosmtp-asyncio, compat-aiosmtpd, compat-aiosmtpd-uvloop, "
        "ferrosmtp-pure, ferrosmtp-2w",
    )
    parser.add_argument(
        "--server",
        action="append",
        type=custom_server,
        default=[],
        metavar="NAME=CMD",
        help="extra server: NAME='command ... {port} ...' (repeatable)",
    )
    parser.add_argument(
        "--workloads", default="reuse,per-conn,1mib", help="comma-separated: reuse,per-conn,1mib"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="hard budget for all runs (900; quick 240); later runs are skipped loudly",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="a new process for every server before each run, warmed up with a tenth of "
        "the workload: a process's own rate moves by up to ~10%% (memory layout, hash "
        "seed), and one process per row would carry that into the table",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    parser.add_argument(
        "--allow-busy", action="store_true", help="exit 0 even when the machine was busy"
    )
    args = parser.parse_args(argv)
    quiet = QuietCheck()
    print(quiet.before(), file=sys.stderr)

    repeats = args.repeats or (3 if args.quick else 5)
    budget = args.max_seconds or (240.0 if args.quick else 900.0)
    source = find_binary("smtp-source")
    if source is None:
        print("smtp-source not found: install postfix (.ci/install-peers.sh)", file=sys.stderr)
        return 2

    known = builtin_servers()
    specs: list[ServerSpec] = []
    for name in filter(None, (n.strip() for n in args.servers.split(","))):
        if name not in known:
            parser.error(f"unknown server {name!r}; built-in: {', '.join(known)}")
        specs.append(known[name])
    specs += args.server
    chosen = [w for w in workloads(args.quick) if w.key in args.workloads.split(",")]
    if not chosen:
        parser.error("no workloads selected")

    notes: list[str] = []
    failed = False
    deadline = time.monotonic() + budget
    results: dict[str, dict[str, Cell]] = {w.key: {} for w in chosen}

    with (
        tempfile.TemporaryDirectory(prefix="ferrosmtp-load-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        servers: list[RunningServer] = []
        for spec in specs:
            reason = spec.unavailable()
            if reason:
                note = f"SKIPPED {spec.name}: {reason}"
                notes.append(note)
                print(note, file=sys.stderr)
                continue
            server = RunningServer(spec, Path(tmp))
            try:
                server.start()
            except RuntimeError as exc:
                note = f"SKIPPED {spec.name}: {exc}"
                notes.append(note)
                print(note, file=sys.stderr)
                continue
            stack.callback(server.stop)
            servers.append(server)
            print(
                f"started {spec.name} on {HOST}:{server.port} (pid {server.pid})", file=sys.stderr
            )
        if not servers:
            print("no server could be started", file=sys.stderr)
            return 1

        # Warm-up (not measured): imports, allocator pools, first-connection paths.
        for server in servers:
            sample = run_source(source, WARMUP, server, WARMUP.run_timeout)
            if not sample.ok:
                failed = True
                print(f"!!! FAIL warm-up {server.spec.name}: {sample.problem}", file=sys.stderr)

        for workload in chosen:
            for server in servers:
                results[workload.key][server.spec.name] = Cell()
            for rep in range(repeats):
                # Rotate the order each repeat so drift on a noisy machine is shared.
                order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
                for server in order:
                    cell = results[workload.key][server.spec.name]
                    if args.fresh:
                        problem = restart(server, source, workload)
                        if problem is not None:
                            failed = True
                            name = server.spec.name
                            print(f"!!! FAIL restart {name}: {problem}", file=sys.stderr)
                    remaining = deadline - time.monotonic()
                    if remaining <= 1 or not server.alive():
                        cell.skipped_runs += 1
                        continue
                    timeout = min(workload.run_timeout, remaining)
                    cpu_before = cpu_seconds(server.pid)
                    if workload.key == "1mib":
                        with RssSampler(server.pid) as rss:
                            sample = run_source(source, workload, server, timeout)
                        cell.peak_rss_kib = max(cell.peak_rss_kib, rss.peak_kib)
                        cell.hwm_reset = cell.hwm_reset and rss.hwm_reset
                    else:
                        sample = run_source(source, workload, server, timeout)
                    if server.alive():
                        sample.cpu = cpu_seconds(server.pid) - cpu_before
                    cell.samples.append(sample)
                    # A failed run's "rate" means nothing (smtp-source stopped early).
                    rate = f"{workload.messages / sample.seconds:10,.0f}" if sample.ok else "-"
                    status = "ok" if sample.ok else f"FAIL: {sample.problem}"
                    print(
                        f"[{workload.key} {rep + 1}/{repeats}] {server.spec.name:>14}: "
                        f"{rate:>10} msgs/s  {sample.seconds:7.2f} s  {status}",
                        file=sys.stderr,
                    )
                    if not sample.ok:
                        failed = True
                        print(
                            f"!!! FAIL {workload.key} {server.spec.name}: {sample.problem}",
                            file=sys.stderr,
                        )

        names = [s.spec.name for s in servers]
        idle = {s.spec.name: s.idle_rss_kib for s in servers}
    print(quiet.after(), file=sys.stderr)

    skipped_total = sum(c.skipped_runs for cells in results.values() for c in cells.values())
    if skipped_total:
        failed = True
        notes.append(
            f"BUDGET: {skipped_total} run(s) skipped (time budget {budget:.0f}s exhausted "
            "or server dead)"
        )

    # ---- report ------------------------------------------------------------------------
    pf_version = ""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        emptycf = tempfile.mkdtemp()
        postconf = find_binary("postconf")
        if postconf:
            pf_version = subprocess.run(
                [postconf, "-c", emptycf, "-dh", "mail_version"],
                capture_output=True, text=True, timeout=10, check=False,
            ).stdout.strip()  # fmt: skip
        os.rmdir(emptycf)
    print()
    print(
        f"Server load, smtp-source (Postfix {pf_version or '?'}) on loopback; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{'quick' if args.quick else 'full'} run, median of {repeats} interleaved runs"
        f"{', a new server process for each' if args.fresh else ''}."
    )
    print()
    print(
        "| workload | server | msgs/s | MB/s | vs aiosmtpd | vs smtp-sink | vs floor | runs ok "
        "| min-max msgs/s | server CPU us/msg | peak RSS |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    json_rows: list[dict[str, object]] = []
    for workload in chosen:
        medians: dict[str, float | None] = {}
        for name in names:
            good = results[workload.key][name].good
            medians[name] = workload.messages / statistics.median(good) if good else None
        for name in names:
            cell = results[workload.key][name]
            median_rate = medians[name]
            mbs = median_rate * workload.size / 1e6 if median_rate is not None else None
            rates = [workload.messages / s for s in cell.good]
            cpu = cell.cpu_us_per_message(workload.messages)
            spread = f"{min(rates):,.0f}-{max(rates):,.0f}" if rates else "n/a"
            runs = f"{len(cell.good)}/{len(cell.samples) + cell.skipped_runs}"
            if cell.failures or cell.skipped_runs:
                runs += " **FAIL**"
            rss_text = ""
            if workload.key == "1mib":
                rss_text = fmt_mib(cell.peak_rss_kib) + ("" if cell.hwm_reset else " (sampled)")
            print(
                f"| {workload.title} | {name} | {fmt_rate(median_rate)} | {fmt_rate(mbs, 1)} "
                f"| {fmt_ratio(median_rate, medians.get('aiosmtpd'))} "
                f"| {fmt_ratio(median_rate, medians.get('smtp-sink'))} "
                f"| {fmt_ratio(median_rate, medians.get(FLOOR_OF.get(name, '')))} "
                f"| {runs} | {spread} | {fmt_rate(cpu, 1)} | {rss_text} |"
            )
            json_rows.append(
                {
                    "workload": workload.key,
                    "server": name,
                    "msgs_per_s": median_rate,
                    "mb_per_s": mbs,
                    "runs_ok": len(cell.good),
                    "runs": len(cell.samples) + cell.skipped_runs,
                    "seconds": [s.seconds for s in cell.samples],
                    "failures": [s.problem for s in cell.failures],
                    "cpu_us_per_msg": cpu,
                    "peak_rss_kib": cell.peak_rss_kib or None,
                    "idle_rss_kib": idle.get(name),
                }
            )
    print()
    print(f"Machine: {quiet.verdict()}")
    print("Idle RSS after start: " + ", ".join(f"{n} {fmt_mib(idle[n])}" for n in names))
    for note in notes:
        print(f"- {note}")
    if failed:
        print("\n!!! SOME RUNS FAILED (see FAIL lines above); their times are excluded.")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "fresh": args.fresh,
                    "busy": quiet.busy,
                    "load": quiet.readings,
                    "rows": json_rows,
                },
                indent=2,
            )
        )
    if quiet.busy and not args.allow_busy:
        print("\n!!! THE MACHINE WAS BUSY: this table is not publishable.", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
