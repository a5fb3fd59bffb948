"""The scale-out rows of ``benches/relay.py``: one node on SQLite, one node on PostgreSQL,
two nodes on PostgreSQL behind HAProxy, and the Postfix relay, in one run.

Each row: Postfix ``smtp-source`` (20 sessions, 1 KiB messages) -> relay(s) -> one
``smtp-sink``, counted at the sink. Columns:

* **msgs/s**: messages over the time from smtp-source's start until the sink has them all;
* **msgs per relay CPU-s**: messages over the CPU seconds (user + system, from
  ``/proc/PID/stat``) the relay processes spent meanwhile: ferrosmtp's node processes;
  Postfix's master and every child (the ones it reaped are in its cutime/cstime). On a
  2-core machine shared by the load, the database, HAProxy and the nodes, wall-clock
  speed-up cannot show; CPU per message shows what coordination costs;
* **DB CPU-ms per msg**: the PostgreSQL server's own CPU (postmaster and backends) per
  message;
* **take-over**: for two nodes, a second phase: load through HAProxy, ``kill -9`` one
  node, and the time until the other has delivered everything the dead one held (its
  leases expire after ``--lease``, 5 s here).

Two nodes are measured twice: with smtp-source's 20 sessions in all (each node gets about
10), and with 20 sessions per node (40), the concurrency the single node had. A node's
CPU per message falls as its concurrency rises (more sessions served per event-loop
wake-up, more writes per commit), so the first compares unequal loads per node.

Run by ``benches/relay.py`` (``--scale-out-only`` runs just these rows).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.peers import PostfixRelay, SmtpSink, free_port, wait_listening  # noqa: E402
from tests.scaleout.nodes import Load  # noqa: E402
from tests.scaleout.services import HAProxy, PostgresCluster  # noqa: E402

SOURCE = "/usr/sbin/smtp-source"
SESSIONS = 20
SIZE = 1024
LEASE = 5.0
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of a process (and cutime + cstime: the children it has reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def tree_cpu(root: int) -> float:
    """CPU of ``root`` (with the children it reaped) and of every live descendant."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(proc.name))
    total, todo = cpu_seconds(root, children=True), list(children.get(root, []))
    while todo:
        pid = todo.pop()
        total += cpu_seconds(pid, children=True)
        todo.extend(children.get(pid, []))
    return total


class Nodes:
    """``count`` ferrosmtp relay processes on one queue (a spool, or a database URL),
    behind HAProxy when more than one."""

    def __init__(self, workdir: Path, count: int, sink: int, url: str | None) -> None:
        self.workdir = workdir
        self.count = count
        self.sink = sink
        self.url = url
        self.ports = [free_port() for _ in range(count)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.haproxy = HAProxy(self.ports, workdir=workdir) if count > 1 else None

    def argv(self, i: int) -> list[str]:
        queue = ["--queue-url", self.url] if self.url else ["--spool", str(self.workdir / "spool")]
        proxy = ["--proxy-protocol", "5"] if self.haproxy else []
        return [
            sys.executable,
            "-m",
            "ferrosmtp",
            "relay",
            "--listen",
            f"127.0.0.1:{self.ports[i]}",
            *queue,
            *proxy,
            "--lease",
            str(LEASE),
            "--relayhost",
            f"127.0.0.1:{self.sink}",
            "-q",
        ]

    def start_node(self, i: int) -> None:
        log = open(self.workdir / f"node{i}.log", "ab")
        self.procs[i] = subprocess.Popen(self.argv(i), stdout=log, stderr=log)
        log.close()
        wait_listening("127.0.0.1", self.ports[i], 30)

    @property
    def port(self) -> int:
        return self.haproxy.port if self.haproxy else self.ports[0]

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs if p is not None)

    def start(self) -> None:
        for i in range(self.count):
            self.start_node(i)
        if self.haproxy:
            self.haproxy.start()
            time.sleep(1)  # the first health checks pass

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.kill()
        proc.wait(10)
        self.procs[i] = None

    def stop(self) -> None:
        if self.haproxy:
            self.haproxy.stop()
        for proc in self.procs:
            if proc is not None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)


def smtp_source(port: int, count: int, sessions: int = SESSIONS) -> None:
    subprocess.run(
        [
            SOURCE,
            "-s",
            str(sessions),
            "-m",
            str(count),
            "-l",
            str(SIZE),
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


def queued(cluster: PostgresCluster) -> int:
    return int(cluster.psql("SELECT count(*) FROM relay_messages"))


def db_counters(cluster: PostgresCluster) -> tuple[int, int]:
    """(WAL bytes written so far, transactions committed in the queue's database)."""
    out = cluster.psql(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,"
        " xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    wal, commits = out.strip().split("|")
    return int(wal), int(commits)


def run_ferrosmtp(
    count: int, nodes_count: int, postgres: bool, sessions: int = SESSIONS, takeovers: bool = True
) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    with SmtpSink(max_connections=256) as sink, contextlib.ExitStack() as stack:
        cluster = stack.enter_context(PostgresCluster()) if postgres else None
        nodes = Nodes(workdir, nodes_count, sink.port, cluster.url() if cluster else None)
        nodes.start()
        try:
            smtp_source(nodes.port, 200)  # warm up: schema, pools, connections
            sink.wait_counters(messages=200, timeout=120)
            cpu0, db0 = nodes.cpu(), tree_cpu(cluster.postmaster_pid()) if cluster else 0.0
            wal0, commits0 = db_counters(cluster) if cluster else (0, 0)
            base = sink.counters().messages
            started = time.monotonic()
            smtp_source(nodes.port, count, sessions)
            sink.wait_counters(messages=base + count, timeout=900)
            elapsed = time.monotonic() - started
            cpu = nodes.cpu() - cpu0
            db = (tree_cpu(cluster.postmaster_pid()) - db0) if cluster else float("nan")
            wal, commits = db_counters(cluster) if cluster else (0, 0)
            nan = float("nan")
            result = {
                "rate": count / elapsed,
                "per_cpu": count / cpu,
                "db_ms": db / count * 1000,
                "takeover": nan,
                "held": 0.0,
                "wal": (wal - wal0) / count if cluster else nan,
                "commits": (commits - commits0) / count if cluster else nan,
            }
            if cluster is not None and nodes_count > 1 and takeovers:
                result.update(takeover(nodes, cluster))
            return result
        finally:
            nodes.stop()


def takeover(nodes: Nodes, cluster: PostgresCluster) -> dict[str, float]:
    """Load through HAProxy, kill -9 node 0, time until the survivors emptied the queue."""
    load = Load(nodes.port, clients=10, prefix="takeover").start()
    load.wait_sent(300, 60)
    nodes.kill(0)
    killed = time.monotonic()
    held = int(
        cluster.psql(
            "SELECT count(*) FROM relay_messages WHERE lease_owner LIKE"
            f" '%:{nodes.ports[0]}/%' AND lease_until > 0"
        )
    )
    time.sleep(0.5)
    load.stop()
    deadline = killed + 120
    while queued(cluster) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"takeover": time.monotonic() - killed, "held": float(held)}


def idle_poll_cost(polls: int = 2000) -> tuple[float, float]:
    """What one node's scheduler costs the database when there is nothing to do: a
    ``lease`` of an empty queue (it runs one a second per node). Returns (DB CPU-ms,
    wall ms) per poll."""
    import asyncio

    from ferrosmtp.relay.postgres import PostgresQueue

    with PostgresCluster() as cluster:

        async def main() -> tuple[float, float]:
            queue = PostgresQueue(cluster.url(), node="poll")
            await queue.open()
            try:
                for _ in range(100):
                    await queue.lease(100, 60)
                cpu0, started = tree_cpu(cluster.postmaster_pid()), time.monotonic()
                for _ in range(polls):
                    await queue.lease(100, 60)
                wall = time.monotonic() - started
                cpu = tree_cpu(cluster.postmaster_pid()) - cpu0
                return cpu / polls * 1000, wall / polls * 1000
            finally:
                await queue.close()

        return asyncio.run(main())


def run_postfix(count: int) -> dict[str, float]:
    with SmtpSink(max_connections=256) as sink:
        pf = PostfixRelay(sink.port, main_cf={"smtp_destination_concurrency_limit": "20"})
        pf.start()
        try:
            port = pf.address[1]
            smtp_source(port, 200)
            sink.wait_counters(messages=200, timeout=120)
            master = pf._read_master_pid()
            assert master is not None
            cpu0 = tree_cpu(master)
            base = sink.counters().messages
            started = time.monotonic()
            smtp_source(port, count)
            sink.wait_counters(messages=base + count, timeout=900)
            elapsed = time.monotonic() - started
            cpu = tree_cpu(master) - cpu0
        finally:
            pf.stop()
    nan = float("nan")
    return {
        "rate": count / elapsed,
        "per_cpu": count / cpu,
        "db_ms": nan,
        "takeover": nan,
        "held": 0.0,
        "wal": nan,
        "commits": nan,
    }


TWO = "ferrosmtp, 2 nodes, PostgreSQL + HAProxy"
TWO_BUSY = f"ferrosmtp, 2 nodes, PostgreSQL + HAProxy, {2 * SESSIONS} sessions"
ROWS = (
    ("ferrosmtp, 1 node, SQLite", lambda n: run_ferrosmtp(n, 1, postgres=False)),
    ("ferrosmtp, 1 node, PostgreSQL", lambda n: run_ferrosmtp(n, 1, postgres=True)),
    (TWO, lambda n: run_ferrosmtp(n, 2, postgres=True)),
    # The same sessions per node as the single node has (a node's cost per message falls
    # as its concurrency rises: more work per event-loop wake-up and per commit).
    (TWO_BUSY, lambda n: run_ferrosmtp(n, 2, True, sessions=2 * SESSIONS, takeovers=False)),
    ("Postfix relay", run_postfix),
)


def table(quick: bool) -> list[str]:
    count = 1000 if quick else 5000
    results = {name: run(count) for name, run in ROWS}
    one_pg = results["ferrosmtp, 1 node, PostgreSQL"]["per_cpu"]
    one_sqlite = results["ferrosmtp, 1 node, SQLite"]["per_cpu"]
    two_pg = results[TWO]
    two_busy = results[TWO_BUSY]

    def fmt(value: float, spec: str) -> str:
        return "-" if value != value else format(value, spec)

    lines = [
        f"Scale-out, {count} messages of {SIZE // 1024} KiB, {SESSIONS} smtp-source sessions:",
        "",
        "| relay | msgs/s | msgs per relay CPU-s | DB CPU-ms per msg | WAL bytes per msg "
        "| commits per msg | take-over after kill -9 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, _ in ROWS:
        r = results[name]
        over = (
            f"{r['takeover']:.1f} s ({r['held']:.0f} held, --lease {LEASE:.0f})"
            if r["takeover"] == r["takeover"]
            else "-"
        )
        lines.append(
            f"| {name} | {r['rate']:.0f} | {r['per_cpu']:.0f} | "
            f"{fmt(r['db_ms'], '.2f')} | {fmt(r['wal'], '.0f')} | "
            f"{fmt(r['commits'], '.2f')} | {over} |"
        )
    poll_cpu, poll_wall = idle_poll_cost(500 if quick else 2000)
    lines += [
        "",
        f"An idle node's lease poll (one a second per node): {poll_cpu:.3f} ms of database CPU, "
        f"{poll_wall:.2f} ms round trip.",
        f"2 nodes / 1 node on PostgreSQL, per relay CPU-s: {two_pg['per_cpu'] / one_pg:.2f}x "
        f"with {SESSIONS} sessions in all, {two_busy['per_cpu'] / one_pg:.2f}x with "
        f"{SESSIONS} per node (target >= 0.8)",
        f"1 node PostgreSQL / 1 node SQLite, per relay CPU-s: {one_pg / one_sqlite:.2f}x "
        "(target >= 0.5)",
    ]
    return lines


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
    lines = table(args.quick)
    print(f"load average after:  {Path('/proc/loadavg').read_text().strip()}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
