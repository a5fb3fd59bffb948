"""PostgreSQL and HAProxy from Debian, run by the tests themselves on loopback.

* :class:`PostgresCluster`: a cluster made with ``initdb`` in a temporary folder owned by
  the unprivileged ``postgres`` user (``runuser`` when the tests run as root, as in CI),
  listening on 127.0.0.1 on a free port, stopped and removed at the end. ``restart`` and
  ``stop``/``start`` let a test take the database away under load.
* :class:`HAProxy`: ``haproxy -db`` from a config file written here: TCP mode, one
  ``server`` line per relay node with ``send-proxy-v2``, health checks that send the
  PROXY header too.
* :func:`shared_postgres`: one cluster for the whole session, started on first use (the
  relay's queue tests run against it) and stopped by the session fixture in
  tests/conftest.py.

With FERROSMTP_REQUIRE_PEERS=1 (CI) a missing PostgreSQL or HAProxy fails the test that
needs it; otherwise it is skipped.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.peers import free_port, missing, stop_process, which

__all__ = ["HAProxy", "PostgresCluster", "require_service", "shared_postgres", "stop_shared"]

PG_USER = "postgres"  # the system user Debian's package creates; the superuser's name too


def require_service(what: str, found: str | None, hint: str) -> str:
    """``found`` or a skip (a failure with FERROSMTP_REQUIRE_PEERS set)."""
    if found is not None:
        return found
    missing(f"{what} not found; {hint}")


def _pg_bindir() -> str | None:
    """The newest /usr/lib/postgresql/N/bin with initdb (Debian's layout)."""

    def version(path: str) -> int:
        name = Path(path).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    return str(Path(found[-1]).parent) if found else None


def _psycopg() -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        require_service("psycopg", None, "pip install 'ferrosmtp[postgres]'")


class PostgresCluster:
    """A private PostgreSQL on 127.0.0.1:<free port>, trust authentication, as the user
    ``postgres``. ``url(schema=...)`` gives a ``--queue-url`` (a schema keeps tests apart
    in one database)."""

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        bindir = require_service(
            "PostgreSQL (initdb)", _pg_bindir(), "apt-get install postgresql (.ci/run does)"
        )
        _psycopg()
        self.bindir = Path(bindir)
        self.settings = {
            "listen_addresses": "'127.0.0.1'",
            "max_connections": "200",
            "log_min_messages": "warning",
            "log_connections": "off",
            **(settings or {}),
        }
        self.base: Path | None = None
        self.port = 0
        self.database = "ferrosmtp"

    @property
    def data(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    def _as_postgres(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_USER, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
        )

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = (self.data / "log").read_text("utf-8", "replace")[-3000:]
            raise RuntimeError(f"{what} failed: {result.stdout}{result.stderr}\n{log}")

    def start(self) -> PostgresCluster:
        self.base = Path(tempfile.mkdtemp(prefix="ferrosmtp-pg-"))
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_USER)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self.base.chmod(0o700)
        self._check(
            self._as_postgres(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ),
            "initdb",
        )
        self.port = free_port()
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(f"\nport = {self.port}\nunix_socket_directories = '{self.base}'\n")
            conf.writelines(f"{name} = {value}\n" for name, value in self.settings.items())
        self.start_server()
        self.psql(f"CREATE DATABASE {self.database}", database="postgres")
        return self

    def start_server(self) -> None:
        self._check(
            self._as_postgres(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.data / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ),
            "pg_ctl start",
        )

    def stop_server(self, mode: str = "fast") -> None:
        self._check(
            self._as_postgres(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ),
            "pg_ctl stop",
        )

    def restart(self, mode: str = "fast", down: float = 0.0) -> None:
        """Stop the server (``immediate``: as a crash) and start it again after ``down``
        seconds."""
        self.stop_server(mode)
        time.sleep(down)
        self.start_server()

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, schema: str | None = None) -> str:
        url = f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{self.database}"
        if schema is not None:
            url += f"?options=-csearch_path%3D{schema}"
        return url

    def psql(self, sql: str, database: str | None = None) -> str:
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                PG_USER,
                "-d",
                database or self.database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {result.stderr}")
        return result.stdout

    def schema_url(self, name: str) -> str:
        """The --queue-url of a schema named after ``name`` (made on first use; the
        cluster is new each session, so a test's name gives it an empty one)."""
        schema = "t_" + hashlib.sha1(name.encode()).hexdigest()[:16]
        self.psql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        return self.url(schema)

    def stop(self) -> None:
        if self.base is None:
            return
        with contextlib.suppress(Exception):
            if (self.data / "postmaster.pid").exists():
                self.stop_server("immediate")  # its data is thrown away
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_shared: PostgresCluster | None = None


def shared_postgres() -> PostgresCluster:
    """The session's cluster, started on first use."""
    global _shared
    if _shared is None:
        cluster = PostgresCluster()
        cluster.start()
        _shared = cluster
    return _shared


def stop_shared() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None


class HAProxy:
    """``haproxy -db -f haproxy.cfg``: a TCP frontend on 127.0.0.1:<port> balancing over
    ``backends`` (ports on 127.0.0.1), PROXY protocol v2 toward each of them."""

    def __init__(self, backends: Sequence[int], *, workdir: Path) -> None:
        self.binary = require_service(
            "HAProxy", which("haproxy"), "apt-get install haproxy (.ci/run does)"
        )
        self.backends = list(backends)
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        servers = "\n".join(
            f"    server node{i} 127.0.0.1:{port} send-proxy-v2 check check-send-proxy"
            " inter 300ms fall 2 rise 1"
            for i, port in enumerate(self.backends, 1)
        )
        return (
            "global\n"
            "    maxconn 4000\n"
            "defaults\n"
            "    mode tcp\n"
            "    timeout connect 2s\n"
            "    timeout client 60s\n"
            "    timeout server 60s\n"
            "    retries 3\n"
            "    option redispatch\n"
            "frontend smtp\n"
            f"    bind 127.0.0.1:{self.port}\n"
            "    default_backend nodes\n"
            "backend nodes\n"
            "    balance roundrobin\n"
            f"{servers}\n"
        )

    def start(self) -> HAProxy:
        from tests.peers import wait_listening

        self.config.write_text(self.config_text())
        check = subprocess.run(
            [self.binary, "-c", "-f", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c: {check.stdout}{check.stderr}")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "-db", "-f", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        proc = self.proc
        wait_listening("127.0.0.1", self.port, 15, pid=proc.pid, alive=lambda: proc.poll() is None)
        return self

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=10)
            self.proc = None

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
