"""Real SMTP peers on loopback: Postfix smtp-sink, full Postfix instances, swaks.

Everything here listens on or connects to 127.0.0.1 only, every wait is bounded and every
process started is stopped again (context managers; the fixtures use them).

Activate the fixtures with ``pytest_plugins = ["tests.peers"]`` in tests/conftest.py, or for
a one-off run with ``pytest -p tests.peers``.

Peers:

* :class:`SmtpSink`: Postfix ``smtp-sink`` (a fast C sink) with running counters and,
  optionally, one dump file per transaction that :meth:`SmtpSink.messages` parses.
* :class:`PostfixRelay`: a full private Postfix that accepts mail on a free port and relays
  everything to ``[127.0.0.1]:relay_to_port`` (the server under test).
* :class:`PostfixServer`: a full private Postfix that receives mail for any domain and
  delivers every message into a Maildir under its base directory, with optional STARTTLS
  (certificate from a trustme CA made at test time) and Cyrus SASL (sasldb) AUTH PLAIN/LOGIN.
* :func:`swaks`: runs swaks against a loopback port and returns the transcript.

The Postfix instances follow the project's verified recipe (research notes,
postfix-peer.md): own config/queue/data directories via ``postfix -c DIR``, chroot off
everywhere, no DNS, logging to a file under the instance's base directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.parser
import email.policy
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import pytest

__all__ = [
    "PEER_SASL_PASSWORD",
    "PEER_SASL_USER",
    "DeliveredMessage",
    "PeerError",
    "PostfixRelay",
    "PostfixServer",
    "RecordedMessage",
    "RecordingHandler",
    "SinkCounters",
    "SinkMessage",
    "SmtpSink",
    "aiosmtpd_recorder",
    "free_port",
    "is_listening",
    "parse_sink_dump",
    "require_peer",
    "require_root",
    "swaks",
    "wait_for",
    "wait_listening",
    "which",
]

LOOPBACK = "127.0.0.1"

# Postfix and swaks live in sbin directories that are often missing from a user's PATH.
SEARCH_DIRS: tuple[str, ...] = (
    "/usr/sbin",
    "/usr/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
    "/sbin",
    "/bin",
)

# In CI the peers are installed (.ci/install-peers.sh), so a missing one is a broken
# install, not a reason to skip: with this variable set, require_peer() fails instead.
STRICT_ENV = "FERROSMTP_REQUIRE_PEERS"

# Keep the private Postfix/smtp-sink directories after a run (for post-mortem reading).
KEEP_ENV = "FERROSMTP_KEEP_PEER_DIRS"


class PeerError(RuntimeError):
    """A peer failed to start, stop or answer; the message carries its logs."""


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (bind to port 0 and let the kernel choose).

    There is an unavoidable race between closing this socket and the peer binding it;
    SmtpSink retries on a fresh port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def which(name: str) -> str | None:
    """Absolute path of an executable, looking in the sbin/bin directories first."""
    for directory in SEARCH_DIRS:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0", "no", "false")


def require_peer(name: str) -> str:
    """Path of the peer binary ``name``; skip the test only when it is not installed.

    A present binary is always used, so a broken peer shows up as a failure, never as a
    skip. With FERROSMTP_REQUIRE_PEERS=1 (CI) even an absent binary is a failure.
    """
    path = which(name)
    if path is not None:
        return path
    message = (
        f"peer binary {name!r} not found in {':'.join(SEARCH_DIRS)} or PATH; "
        "install the peers with .ci/install-peers.sh"
    )
    missing(message)


def missing(message: str) -> NoReturn:
    """A prerequisite this machine lacks (a peer, a service, root): the test is skipped
    where the peers are optional, and fails where they are required (``STRICT_ENV``, as
    CI sets it), so no missing prerequisite can hide a test in CI."""
    if _strict():
        pytest.fail(f"{message} ({STRICT_ENV} is set)", pytrace=False)
    pytest.skip(message)


def require_root(what: str) -> None:
    """Full Postfix instances (``postfix start``) and ``smtp-sink -u`` need root."""
    if os.geteuid() == 0:
        return
    missing(f"{what} needs root (postfix start runs master as root, then drops privileges)")


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until it is true; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def _listening_inodes(host: str, port: int) -> set[int]:
    """Socket inodes in LISTEN state on host:port, read from /proc/net/tcp.

    Reading /proc instead of connecting matters for smtp-sink: a probe connection would
    count as a session in its -c counters and in Postfix's logs.
    """
    packed = socket.inet_aton(host)
    # /proc/net/tcp prints the address as a host-order (little-endian on x86) 32-bit hex.
    want_addr = f"{int.from_bytes(packed, 'little'):08X}"
    any_addr = "00000000"
    want_port = f"{port:04X}"
    inodes: set[int] = set()
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f, None)
        for line in f:
            fields = line.split()
            if len(fields) < 10:
                continue
            addr, _, lport = fields[1].partition(":")
            if lport == want_port and addr in (want_addr, any_addr) and fields[3] == "0A":
                inodes.add(int(fields[9]))
    return inodes


def _pid_socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                target = os.readlink(os.path.join(fd_dir, fd))
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _connect_probe(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def is_listening(host: str, port: int, pid: int | None = None) -> bool:
    """True if host:port is in LISTEN state (owned by ``pid`` when given)."""
    if not os.path.exists("/proc/net/tcp"):
        return _connect_probe(host, port)
    inodes = _listening_inodes(host, port)
    if pid is None or not inodes:
        return bool(inodes)
    return bool(inodes & _pid_socket_inodes(pid))


def wait_listening(
    host: str,
    port: int,
    timeout: float,
    *,
    pid: int | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Wait until host:port listens; fail early if ``alive()`` says the peer has died."""
    deadline = time.monotonic() + timeout
    while True:
        if is_listening(host, port, pid):
            return
        if alive is not None and not alive():
            raise PeerError(f"peer exited before listening on {host}:{port}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.1f}s")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM, bounded wait, then SIGKILL: never leave a child behind."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=grace)


def _traversable(path: Path) -> bool:
    """Every directory from / down to ``path`` has o+x, so user postfix can reach it."""
    for part in (path, *path.parents):
        try:
            if not part.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _make_base_dir(prefix: str) -> Path:
    """A fresh 0755 directory that the unprivileged postfix user can traverse.

    mkdtemp gives 0700, and master then dies with "open lock file ... Permission denied"
    (postfix-peer.md pitfall). We do not chmod parents we did not create (pytest's
    basetemp is 0700 on purpose), so we pick a temp root whose chain is already
    traversable: $TMPDIR if it is, else /tmp, else /var/tmp.
    """
    roots = [tempfile.gettempdir(), "/tmp", "/var/tmp"]
    for root in roots:
        if os.path.isdir(root) and _traversable(Path(root)):
            base = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
            base.chmod(0o755)
            return base
    raise PeerError(f"no temp directory traversable by user postfix among {roots}")


def _remove_base_dir(base: Path) -> None:
    if os.environ.get(KEEP_ENV):
        return
    shutil.rmtree(base, ignore_errors=True)


def _postfix_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("postfix")
    except KeyError as exc:
        raise PeerError("user 'postfix' does not exist; install the postfix package") from exc
    return entry.pw_uid, entry.pw_gid


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------
# smtp-sink
# --------------------------------------------------------------------------------------

_COUNTER_RE = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


@dataclasses.dataclass(frozen=True)
class SinkCounters:
    """smtp-sink -c counters; cumulative since start.

    ``sessions`` counts sessions that have ended, ``quits`` QUIT commands, ``messages``
    transactions that ended with "." and a 250 reply.
    """

    sessions: int = 0
    quits: int = 0
    messages: int = 0


@dataclasses.dataclass(frozen=True)
class SinkMessage:
    """One smtp-sink dump file, split into its X- headers and the message as received.

    smtp-sink writes lines with LF endings (CRLF stripped), after dot-unstuffing, and
    appends one empty line, which is removed from ``content``.
    """

    path: Path
    client_addr: str
    client_proto: str
    helo: str | None
    mail_args: str
    rcpt_args: tuple[str, ...]
    content: bytes

    @property
    def mail_from(self) -> str:
        """The reverse path without the angle brackets (MAIL parameters dropped)."""
        return _strip_path(self.mail_args)

    @property
    def rcpt_tos(self) -> tuple[str, ...]:
        return tuple(_strip_path(a) for a in self.rcpt_args)

    def message(self) -> EmailMessage:
        parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(self.content)
        assert isinstance(parsed, EmailMessage)
        return parsed


def _strip_path(args: str) -> str:
    path = args.split(" ", 1)[0]
    if path.startswith("<") and path.endswith(">"):
        return path[1:-1]
    return path


def parse_sink_dump(path: Path) -> SinkMessage:
    data = path.read_bytes()
    lines = data.split(b"\n")
    fields: dict[str, list[str]] = {}
    i = 0
    # The smtp-sink headers end with a three-line Received: header (two TAB continuations).
    while i < len(lines):
        line = lines[i]
        i += 1
        name, _, value = line.partition(b": ")
        if name == b"Received":
            while i < len(lines) and lines[i].startswith(b"\t"):
                i += 1
            break
        fields.setdefault(name.decode("ascii", "replace"), []).append(
            value.decode("utf-8", "replace")
        )
    else:
        raise PeerError(f"{path}: no smtp-sink Received header (incomplete dump?)")
    content = b"\n".join(lines[i:])
    if content.endswith(b"\n\n"):
        content = content[:-1]

    def one(name: str) -> str | None:
        values = fields.get(name)
        return values[-1] if values else None

    return SinkMessage(
        path=path,
        client_addr=one("X-Client-Addr") or "",
        client_proto=one("X-Client-Proto") or "",
        helo=one("X-Helo-Args"),
        mail_args=one("X-Mail-Args") or "",
        rcpt_args=tuple(fields.get("X-Rcpt-Args", [])),
        content=content,
    )


class SmtpSink:
    """Postfix ``smtp-sink`` on 127.0.0.1:<free port>, as a context manager.

    Keyword flags map onto smtp-sink options so a test can shape the EHLO reply: turning
    ``pipelining``/``eightbitmime``/``dsn``/``enhanced_status_codes``/``auth``/``xclient``/
    ``xforward``/``esmtp`` off adds -p/-8/-N/-E/-a/-C/-F/-e. (smtp-sink 3.7 has no
    CHUNKING/BDAT and no SMTPUTF8 at all.) ``reject``/``soft_reject``/``disconnect``/
    ``reply_421`` take command names (e.g. ``["RCPT"]``, ``["."]``) for -f/-r/-q/-Q.

    With ``dump=True`` each transaction is written to ``dump_dir`` (one file per message,
    -d), which :meth:`messages` parses. Dumping costs disk I/O: leave it off for load tests.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        dump: bool = False,
        hostname: str = "smtp-sink.test",
        backlog: int = 256,
        max_connections: int = 256,
        command_timeout: int = 100,
        esmtp: bool = True,
        pipelining: bool = True,
        eightbitmime: bool = True,
        dsn: bool = True,
        enhanced_status_codes: bool = True,
        auth: bool = True,
        xclient: bool = True,
        xforward: bool = True,
        lmtp: bool = False,
        reject: Sequence[str] = (),
        soft_reject: Sequence[str] = (),
        disconnect: Sequence[str] = (),
        reply_421: Sequence[str] = (),
        verbose: bool = False,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
    ) -> None:
        self.binary = require_peer("smtp-sink")
        self.host = LOOPBACK
        self._fixed_port = port
        self.port = port or 0
        self.dump = dump
        self.hostname = hostname
        self.backlog = backlog
        self.start_timeout = start_timeout
        flags: list[str] = ["-c", "-4", "-h", hostname, "-m", str(max_connections)]
        flags += ["-t", str(command_timeout)]
        for enabled, flag in (
            (esmtp, "-e"),
            (pipelining, "-p"),
            (eightbitmime, "-8"),
            (dsn, "-N"),
            (enhanced_status_codes, "-E"),
            (auth, "-a"),
            (xclient, "-C"),
            (xforward, "-F"),
        ):
            if not enabled:
                flags.append(flag)
        if lmtp:
            flags.append("-L")
        for commands, flag in (
            (reject, "-f"),
            (soft_reject, "-r"),
            (disconnect, "-q"),
            (reply_421, "-Q"),
        ):
            if commands:
                flags += [flag, ",".join(commands)]
        if verbose:
            flags.append("-v")
        flags += list(extra_args)
        self._flags = flags
        self.base: Path | None = None
        self.dump_dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.argv: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> SmtpSink:
        self.base = _make_base_dir("ferrosmtp-sink-")
        try:
            flags = list(self._flags)
            as_root = os.geteuid() == 0
            if self.dump:
                self.dump_dir = self.base / "dump"
                self.dump_dir.mkdir(mode=0o755)
                if as_root:
                    # smtp-sink writes dumps after dropping to -u postfix.
                    uid, gid = _postfix_ids()
                    os.chown(self.dump_dir, uid, gid)
                flags += ["-d", f"{self.dump_dir}/msg."]
            if as_root:
                # smtp-sink refuses to run as root without -u; it binds first, then drops.
                flags += ["-u", "postfix"]
            last_error: Exception | None = None
            # A few attempts: free_port() can race with another process taking the port.
            for _ in range(3 if self._fixed_port is None else 1):
                self.port = self._fixed_port or free_port()
                try:
                    self._spawn(flags)
                    return self
                except PeerError as exc:
                    last_error = exc
                    self._kill()
            raise PeerError(f"smtp-sink did not start: {last_error}")
        except BaseException:
            self.stop()
            raise

    def _spawn(self, flags: list[str]) -> None:
        assert self.base is not None
        self.argv = [self.binary, *flags, f"inet:{self.host}:{self.port}", str(self.backlog)]
        self._stdout_path = self.base / "stdout"
        self._stderr_path = self.base / "stderr"
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.base
            )
        proc = self.proc
        try:
            wait_listening(
                self.host,
                self.port,
                self.start_timeout,
                pid=proc.pid,
                alive=lambda: proc.poll() is None,
            )
        except (PeerError, TimeoutError) as exc:
            raise PeerError(f"{exc}; argv={self.argv}; stderr={self.stderr()!r}") from exc

    def _kill(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def stop(self) -> None:
        self._kill()
        if self.base is not None:
            _remove_base_dir(self.base)
            self.base = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection --------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, "smtp-sink not started"
        return self.proc.pid

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def stderr(self) -> str:
        with contextlib.suppress(OSError, AttributeError):
            return self._stderr_path.read_text(errors="replace")
        return ""

    def counters(self) -> SinkCounters:
        """The latest -c counter line (smtp-sink rewrites it with CR after each event)."""
        try:
            data = self._stdout_path.read_bytes()
        except (OSError, AttributeError):
            return SinkCounters()
        matches = _COUNTER_RE.findall(data)
        if not matches:
            return SinkCounters()
        sess, quit_, mesg = (int(x) for x in matches[-1])
        return SinkCounters(sessions=sess, quits=quit_, messages=mesg)

    def wait_counters(
        self, *, messages: int = 0, sessions: int = 0, timeout: float = 10.0
    ) -> SinkCounters:
        """Wait until at least ``messages`` messages and ``sessions`` ended sessions."""
        wait_for(
            lambda: self.counters().messages >= messages and self.counters().sessions >= sessions,
            timeout,
            what=f"smtp-sink counters >= {messages} messages, {sessions} sessions "
            f"(have {self.counters()})",
        )
        return self.counters()

    def messages(self) -> list[SinkMessage]:
        """Parsed dump files, oldest first (requires ``dump=True``)."""
        if self.dump_dir is None:
            raise PeerError("SmtpSink was started without dump=True")
        files = sorted(
            (p for p in self.dump_dir.glob("msg.*") if p.is_file()),
            key=lambda p: (p.stat().st_mtime_ns, p.name),
        )
        return [parse_sink_dump(p) for p in files]

    def wait_messages(self, count: int, timeout: float = 10.0) -> list[SinkMessage]:
        self.wait_counters(messages=count, timeout=timeout)
        return self.messages()


# --------------------------------------------------------------------------------------
# Full Postfix instances
# --------------------------------------------------------------------------------------

# master.cf of postfix-peer.md: chroot = n everywhere (a chroot would need /etc files
# copied into the private queue) and no default "smtp inet" line on port 25. The smtpd
# line is prepended with the chosen port. tlsmgr is there for the TLS options.
_MASTER_CF_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _run(
    argv: Sequence[str], *, timeout: float, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )


class _PostfixInstance:
    """A private Postfix (master + daemons) with its own config/queue/data directories.

    Subclasses fill in :meth:`_main_cf` and may prepare extra files in :meth:`_prepare`.
    """

    role = "postfix"

    def __init__(
        self,
        *,
        myhostname: str,
        debug_peer: bool = False,
        main_cf: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        require_root(f"a full Postfix instance ({self.role})")
        self.postfix = require_peer("postfix")
        self.postconf_bin = require_peer("postconf")
        self.postqueue_bin = require_peer("postqueue")
        self.myhostname = myhostname
        self.debug_peer = debug_peer
        self.extra_main_cf = dict(main_cf or {})
        self.start_timeout = start_timeout
        self.host = LOOPBACK
        self.port = 0
        self.base = Path("/nonexistent")
        self._started = False
        self._master_pid: int | None = None

    # -- paths -------------------------------------------------------------------------

    @property
    def config_dir(self) -> Path:
        return self.base / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.base / "spool"

    @property
    def maillog_path(self) -> Path:
        return self.base / "maillog"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    # -- configuration -----------------------------------------------------------------

    def _common_main_cf(self) -> dict[str, str]:
        b = str(self.base)
        cf = {
            "compatibility_level": "3.6",
            "queue_directory": f"{b}/spool",
            "data_directory": f"{b}/data",
            "maillog_file": f"{b}/maillog",
            # The default prefixes only allow /var and /dev/stdout (postfix-peer.md).
            "maillog_file_prefixes": b,
            "myhostname": self.myhostname,
            "mydomain": "localdomain",
            "myorigin": "$myhostname",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_banner": f"$myhostname ESMTP {self.role}",
            # No DNS at all: never send a packet off loopback.
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            # Fast retries so tests that make the next hop fail temporarily see a retry in
            # seconds, not the default 300s/4000s.
            "queue_run_delay": "2s",
            "minimal_backoff_time": "2s",
            "maximal_backoff_time": "10s",
            "smtp_connect_timeout": "5s",
            # Never slow down smtpd because the queue is busy (load tests feed it fast).
            "in_flow_delay": "0",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            "smtputf8_enable": "yes",
            "delay_warning_time": "0",
        }
        if self.debug_peer:
            cf["debug_peer_list"] = LOOPBACK
            cf["debug_peer_level"] = "2"
        return cf

    def _main_cf(self) -> dict[str, str]:
        return self._common_main_cf()

    def _master_cf(self) -> str:
        return f"{self.host}:{self.port} inet n - n - - smtpd\n{_MASTER_CF_SERVICES}"

    def _prepare(self) -> None:
        """Hook for subclasses: files to create before ``postfix check``."""

    # -- running Postfix commands ------------------------------------------------------

    def _postfix_cmd(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return _run([self.postfix, "-c", str(self.config_dir), *args], timeout=timeout)

    def _diagnose(self, what: str, result: subprocess.CompletedProcess[str]) -> PeerError:
        """Postfix prints errors to stderr only on a tty (else to syslog, absent here), so
        re-run ``postfix check`` under script(1) to capture the actual message."""
        detail = f"{result.stdout}{result.stderr}".strip()
        script = which("script")
        if script is not None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                cmd = f"{self.postfix} -c {self.config_dir} check"
                tty = _run([script, "-qec", cmd, "/dev/null"], timeout=30)
                detail += f"\npostfix check (on a pty): rc={tty.returncode} {tty.stdout.strip()}"
        return PeerError(
            f"{self.role}: {what} failed (rc={result.returncode}) in {self.base}\n{detail}\n"
            f"--- maillog tail ---\n{_tail(self.maillog())}"
        )

    def postconf(self, *, reload: bool = True, **settings: str) -> None:
        """Change main.cf settings (``postconf -e``), then ``postfix reload``."""
        assignments = [f"{k} = {v}" for k, v in settings.items()]
        result = _run(
            [self.postconf_bin, "-c", str(self.config_dir), "-e", *assignments], timeout=30
        )
        if result.returncode != 0:
            raise self._diagnose("postconf -e", result)
        if reload and self._started:
            result = self._postfix_cmd("reload")
            if result.returncode != 0:
                raise self._diagnose("postfix reload", result)

    def postconf_n(self) -> str:
        """The effective non-default settings (``postconf -n``)."""
        return _run([self.postconf_bin, "-c", str(self.config_dir), "-n"], timeout=30).stdout

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> _PostfixInstance:
        uid, gid = _postfix_ids()
        self.base = _make_base_dir(f"ferrosmtp-{self.role}-")
        try:
            self.port = free_port()
            (self.base / "etc").mkdir(mode=0o755)
            # queue_directory must be root-owned, data_directory owned by mail_owner.
            (self.base / "spool").mkdir(mode=0o755)
            (self.base / "data").mkdir(mode=0o700)
            os.chown(self.base / "data", uid, gid)
            self._prepare()
            cf = self._main_cf()
            cf.update(self.extra_main_cf)
            (self.config_dir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in cf.items()))
            (self.config_dir / "master.cf").write_text(self._master_cf())
            # `check` creates the queue sub-directories with the right owners.
            result = self._postfix_cmd("check")
            if result.returncode != 0:
                raise self._diagnose("postfix check", result)
            # Marked started before the command: a failed or timed-out start may still
            # leave a master behind, and stop() must then run `postfix stop` for it.
            self._started = True
            result = self._postfix_cmd("start", timeout=self.start_timeout)
            if result.returncode != 0:
                raise self._diagnose("postfix start", result)
            self._master_pid = self._read_master_pid()
            try:
                wait_listening(self.host, self.port, self.start_timeout, alive=self._status_running)
            except (PeerError, TimeoutError) as exc:
                raise PeerError(
                    f"{self.role}: smtpd not listening on {self.host}:{self.port}: {exc}\n"
                    f"--- maillog tail ---\n{_tail(self.maillog())}"
                ) from exc
            return self
        except BaseException:
            self.stop()
            raise

    def _read_master_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        return None

    def _status_running(self) -> bool:
        return self._postfix_cmd("status", timeout=15).returncode == 0

    def _master_alive(self) -> bool:
        pid = self._master_pid
        if pid is None:
            return False
        try:
            # Guard against PID reuse: only our master counts.
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return False
        return comm == "master"

    def stop(self) -> None:
        """``postfix -c DIR stop``; if master lingers, ``abort`` and finally SIGKILL it."""
        try:
            if self._started:
                self._started = False
                if self._master_pid is None:
                    self._master_pid = self._read_master_pid()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._postfix_cmd("stop", timeout=30)
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: not self._master_alive(), 15, what="master to exit")
                if self._master_alive():
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._postfix_cmd("abort", timeout=15)
                    with contextlib.suppress(TimeoutError):
                        wait_for(lambda: not self._master_alive(), 5, what="master abort")
                if self._master_alive() and self._master_pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self._master_pid, signal.SIGKILL)
        finally:
            if self.base != Path("/nonexistent"):
                _remove_base_dir(self.base)

    def __enter__(self) -> _PostfixInstance:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection --------------------------------------------------------------------

    def maillog(self) -> str:
        """The instance's log file (written by postlogd, so it can lag a few ms)."""
        try:
            return self.maillog_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) matches the maillog; returns the last match."""
        regex = re.compile(pattern)
        found: list[re.Match[str]] = []

        def check() -> bool:
            found[:] = list(regex.finditer(self.maillog()))
            return bool(found)

        try:
            wait_for(check, timeout, interval=0.1, what=f"maillog /{pattern}/")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n--- maillog tail ---\n{_tail(self.maillog())}") from exc
        return found[-1]

    def queue(self) -> str:
        """``postqueue -p`` output ("Mail queue is empty" when empty)."""
        result = _run([self.postqueue_bin, "-c", str(self.config_dir), "-p"], timeout=30)
        if result.returncode != 0:
            raise self._diagnose("postqueue -p", result)
        return result.stdout

    def queue_is_empty(self) -> bool:
        return "Mail queue is empty" in self.queue()

    def wait_queue_empty(self, timeout: float = 20.0) -> None:
        try:
            wait_for(self.queue_is_empty, timeout, interval=0.2, what="an empty mail queue")
        except TimeoutError as exc:
            raise TimeoutError(
                f"{exc}\n--- postqueue -p ---\n{self.queue()}"
                f"--- maillog tail ---\n{_tail(self.maillog())}"
            ) from exc

    def flush(self) -> None:
        """``postqueue -f``: retry all deferred mail now."""
        result = _run([self.postqueue_bin, "-c", str(self.config_dir), "-f"], timeout=30)
        if result.returncode != 0:
            raise self._diagnose("postqueue -f", result)


class PostfixRelay(_PostfixInstance):
    """Postfix that accepts from 127.0.0.0/8 on a free port and relays everything to
    ``[127.0.0.1]:relay_to_port`` (the SMTP server under test).

    Postfix's smtp client uses PIPELINING toward the relay host when it is advertised (it
    sends MAIL, RCPT..., DATA in one write, and QUIT right after "."); ``pipelining=False``
    makes it ignore the keyword (smtp_discard_ehlo_keywords). It never sends BDAT: Postfix
    3.7 implements CHUNKING only in smtpd (the smtp binary has no BDAT code), so BDAT
    interop needs PostfixServer as the receiving side. ``smtp_tls_security_level``
    ("may", "encrypt", "verify", ...) and ``smtp_tls_ca_file`` are for TLS toward the
    relay host.
    """

    role = "relay"

    def __init__(
        self,
        relay_to_port: int,
        *,
        myhostname: str = "pfx-relay.localdomain",
        debug_peer: bool = False,
        pipelining: bool = True,
        smtp_tls_security_level: str | None = None,
        smtp_tls_ca_file: str | os.PathLike[str] | None = None,
        main_cf: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            myhostname=myhostname,
            debug_peer=debug_peer,
            main_cf=main_cf,
            start_timeout=start_timeout,
        )
        self.relay_to_port = relay_to_port
        self.pipelining = pipelining
        self.smtp_tls_security_level = smtp_tls_security_level
        self.smtp_tls_ca_file = smtp_tls_ca_file

    def _main_cf(self) -> dict[str, str]:
        cf = self._common_main_cf()
        cf.update(
            {
                "mydestination": "",
                "local_recipient_maps": "",
                "local_transport": "error:5.1.1 local delivery disabled in this test relay",
                "relayhost": f"[{LOOPBACK}]:{self.relay_to_port}",
                "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
                "smtpd_recipient_restrictions": "",
            }
        )
        if not self.pipelining:
            cf["smtp_discard_ehlo_keywords"] = "pipelining"
        if self.smtp_tls_security_level is not None:
            cf["smtp_tls_security_level"] = self.smtp_tls_security_level
            cf["smtp_tls_loglevel"] = "1"
        if self.smtp_tls_ca_file is not None:
            cf["smtp_tls_CAfile"] = os.fspath(self.smtp_tls_ca_file)
        return cf

    def start(self) -> PostfixRelay:
        super().start()
        return self

    def __enter__(self) -> PostfixRelay:
        return self.start()


@dataclasses.dataclass(frozen=True)
class DeliveredMessage:
    """A message that PostfixServer's virtual(8) delivered into a recipient's Maildir.

    ``content`` is the file as stored: LF line endings, with Return-Path, Delivered-To and
    Received headers that Postfix prepended.
    """

    path: Path
    recipient: str
    content: bytes

    def message(self) -> EmailMessage:
        parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(self.content)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def body(self) -> bytes:
        """Everything after the first empty line."""
        _, _, body = self.content.partition(b"\n\n")
        return body


def _delivered_to(content: bytes) -> str:
    """The first Delivered-To header: virtual(8) prepends it, so it is ours, not the
    sender's."""
    header, _, _ = content.partition(b"\n\n")
    for line in header.split(b"\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"delivered-to":
            return value.strip().decode("utf-8", "replace")
    return ""


class PostfixServer(_PostfixInstance):
    """Postfix that receives mail on 127.0.0.1:<free port> and keeps it where a test can
    read it: every recipient domain is a virtual mailbox domain, and virtual(8) delivers
    each recipient's copy into the one Maildir ``<base>/mail/inbox/``, with a
    ``Delivered-To: <recipient>`` header that :meth:`messages` filters on.

    * ``tls=True``: STARTTLS with a certificate from a trustme CA made now (names
      localhost, 127.0.0.1 and ``myhostname``); clients get :meth:`client_ssl_context`
      or :attr:`ca_cert_path`. ``require_tls=True`` makes TLS mandatory (level encrypt).
    * ``sasl_users={"alice": "password"}``: Cyrus SASL with a sasldb made by saslpasswd2,
      AUTH PLAIN and LOGIN, offered only after STARTTLS when ``tls`` (smtpd_tls_auth_only).
      ``auth_required=True`` rejects RCPT from unauthenticated clients.
    * Its EHLO offers PIPELINING, SIZE, ETRN, ENHANCEDSTATUSCODES, 8BITMIME, DSN, SMTPUTF8
      and CHUNKING (BDAT), so it is the real BDAT peer for client tests;
      ``discard_ehlo_keywords=["chunking", "pipelining"]`` hides some (fallback tests).
    * ``open_to_loopback``: by default 127.0.0.0/8 is *not* in mynetworks, so restrictions
      apply to the test client the way they apply to a stranger on the Internet.
    """

    role = "server"

    def __init__(
        self,
        *,
        myhostname: str = "pfx-server.localdomain",
        tls: bool = False,
        require_tls: bool = False,
        sasl_users: Mapping[str, str] | None = None,
        sasl_mechanisms: Sequence[str] = ("PLAIN", "LOGIN"),
        auth_required: bool = False,
        auth_only_after_tls: bool | None = None,
        message_size_limit: int = 10_240_000,
        discard_ehlo_keywords: Sequence[str] = (),
        debug_peer: bool = False,
        main_cf: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            myhostname=myhostname,
            debug_peer=debug_peer,
            main_cf=main_cf,
            start_timeout=start_timeout,
        )
        self.discard_ehlo_keywords = tuple(discard_ehlo_keywords)
        self.tls = tls or require_tls
        self.require_tls = require_tls
        self.sasl_users = dict(sasl_users or {})
        self.sasl_mechanisms = tuple(sasl_mechanisms)
        self.auth_required = auth_required
        self.auth_only_after_tls = self.tls if auth_only_after_tls is None else auth_only_after_tls
        self.message_size_limit = message_size_limit
        if self.sasl_users:
            self.saslpasswd2 = require_peer("saslpasswd2")
        self.ca: Any = None  # trustme.CA when tls
        self.ca_cert_path: Path | None = None

    @property
    def mail_dir(self) -> Path:
        return self.base / "mail"

    @property
    def sasl_dir(self) -> Path:
        return self.config_dir / "sasl"

    def _prepare(self) -> None:
        _, gid = _postfix_ids()
        # virtual(8) runs as the uid of virtual_uid_maps; nobody rather than postfix,
        # because the mail system owner should not own delivered mail.
        nobody = pwd.getpwnam("nobody")
        self._mail_uid, self._mail_gid = nobody.pw_uid, nobody.pw_gid
        self.mail_dir.mkdir(mode=0o755)
        os.chown(self.mail_dir, self._mail_uid, self._mail_gid)
        if self.tls:
            self._make_certificate()
        if self.sasl_users:
            self._make_sasldb(gid)

    def _make_certificate(self) -> None:
        import trustme  # test extra; imported only when TLS is asked for

        tls_dir = self.config_dir / "tls"
        tls_dir.mkdir(mode=0o755)
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("localhost", LOOPBACK, self.myhostname)
        # smtpd reads the key while still root, so the key can stay root-only.
        key_path = tls_dir / "key.pem"
        cert.private_key_pem.write_to_path(str(key_path))
        key_path.chmod(0o600)
        chain_path = tls_dir / "cert.pem"
        with open(chain_path, "wb") as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        self.ca_cert_path = tls_dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_cert_path))

    def _make_sasldb(self, postfix_gid: int) -> None:
        self.sasl_dir.mkdir(mode=0o755)
        sasldb = self.sasl_dir / "sasldb2"
        for user, password in self.sasl_users.items():
            # -p reads the password from stdin without a confirmation prompt; -u sets the
            # realm to myhostname, Cyrus's default realm (the server FQDN smtpd passes).
            result = _run(
                [self.saslpasswd2, "-f", str(sasldb), "-p", "-c", "-u", self.myhostname, user],
                timeout=30,
                input_text=password,
            )
            if result.returncode != 0:
                raise PeerError(f"saslpasswd2 failed for {user!r}: {result.stderr.strip()}")
        # smtpd runs as user postfix (no chroot) and opens the sasldb itself.
        os.chown(sasldb, 0, postfix_gid)
        sasldb.chmod(0o640)
        (self.sasl_dir / "smtpd.conf").write_text(
            "pwcheck_method: auxprop\n"
            "auxprop_plugin: sasldb\n"
            f"mech_list: {' '.join(self.sasl_mechanisms)}\n"
            f"sasldb_path: {sasldb}\n"
        )

    def _main_cf(self) -> dict[str, str]:
        cf = self._common_main_cf()
        b = str(self.base)
        recipient_restrictions = ["reject_unauth_destination"]
        if self.auth_required:
            recipient_restrictions = ["permit_sasl_authenticated", "reject"]
        cf.update(
            {
                # Nothing is "local": every domain is a virtual mailbox domain (static: maps
                # answer for any key), delivered by virtual(8) into Maildirs.
                "mydestination": "",
                "local_recipient_maps": "",
                "local_transport": "error:5.1.1 local delivery disabled",
                "relay_transport": "error:5.7.1 relaying disabled in this test server",
                "default_transport": "error:5.7.1 relaying disabled in this test server",
                "virtual_mailbox_domains": "static:all",
                "virtual_mailbox_base": f"{b}/mail",
                # One catch-all Maildir: virtual(8) refuses $n substitutions from regexp
                # maps, so per-recipient directories are not possible without knowing the
                # recipients in advance. Delivered-To tells the recipient apart instead.
                "virtual_mailbox_maps": "static:inbox/",
                "virtual_uid_maps": f"static:{self._mail_uid}",
                "virtual_gid_maps": f"static:{self._mail_gid}",
                "virtual_mailbox_limit": "0",
                "message_size_limit": str(self.message_size_limit),
                # Loopback clients are strangers here unless they authenticate.
                "mynetworks": "127.255.255.254/32",
                "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
                "smtpd_recipient_restrictions": ", ".join(recipient_restrictions),
            }
        )
        if self.discard_ehlo_keywords:
            cf["smtpd_discard_ehlo_keywords"] = ", ".join(self.discard_ehlo_keywords)
        if self.tls:
            cf.update(
                {
                    "smtpd_tls_cert_file": f"{b}/etc/tls/cert.pem",
                    "smtpd_tls_key_file": f"{b}/etc/tls/key.pem",
                    "smtpd_tls_security_level": "encrypt" if self.require_tls else "may",
                    "smtpd_tls_loglevel": "1",
                    "smtpd_tls_received_header": "yes",
                    "smtpd_tls_session_cache_database": "",
                }
            )
        if self.sasl_users:
            cf.update(
                {
                    "smtpd_sasl_auth_enable": "yes",
                    "smtpd_sasl_type": "cyrus",
                    "smtpd_sasl_path": "smtpd",
                    "cyrus_sasl_config_path": f"{b}/etc/sasl",
                    # Empty: Cyrus then looks users up in the realm myhostname (the one
                    # saslpasswd2 -u used) and Postfix logs and stamps the bare login name.
                    "smtpd_sasl_local_domain": "",
                    "smtpd_sasl_security_options": "noanonymous",
                    "smtpd_sasl_authenticated_header": "yes",
                    "smtpd_tls_auth_only": "yes" if self.auth_only_after_tls else "no",
                }
            )
        return cf

    def start(self) -> PostfixServer:
        super().start()
        return self

    def __enter__(self) -> PostfixServer:
        return self.start()

    # -- TLS for clients ---------------------------------------------------------------

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's test CA (hostname: localhost)."""
        if self.ca is None:
            raise PeerError("PostfixServer was started without tls=True")
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    # -- delivered mail ----------------------------------------------------------------

    def messages(self, recipient: str | None = None) -> list[DeliveredMessage]:
        """Delivered messages, oldest first; ``recipient`` filters by user@domain."""
        found: list[DeliveredMessage] = []
        if not self.mail_dir.is_dir():
            return found
        new_dir = self.mail_dir / "inbox" / "new"
        # Maildir: virtual(8) writes into tmp/ and renames into new/, so files in new/ are
        # complete.
        if not new_dir.is_dir():
            return found
        for path in new_dir.iterdir():
            if not path.is_file():
                continue
            content = path.read_bytes()
            rcpt = _delivered_to(content)
            if recipient is not None and rcpt.lower() != recipient.lower():
                continue
            found.append(DeliveredMessage(path, rcpt, content))
        found.sort(key=lambda m: (m.path.stat().st_mtime_ns, m.path.name))
        return found

    def wait_messages(
        self, count: int = 1, timeout: float = 20.0, recipient: str | None = None
    ) -> list[DeliveredMessage]:
        try:
            wait_for(
                lambda: len(self.messages(recipient)) >= count,
                timeout,
                interval=0.1,
                what=f"{count} delivered message(s)" + (f" for {recipient}" if recipient else ""),
            )
        except TimeoutError as exc:
            raise TimeoutError(
                f"{exc}\n--- postqueue -p ---\n{self.queue()}"
                f"--- maillog tail ---\n{_tail(self.maillog())}"
            ) from exc
        return self.messages(recipient)


# --------------------------------------------------------------------------------------
# swaks
# --------------------------------------------------------------------------------------


def swaks(
    *args: str,
    port: int,
    server: str = LOOPBACK,
    timeout: float = 30.0,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``swaks --server 127.0.0.1 --port PORT *args``; stdout holds the transcript.

    swaks' own network timeout is set a little below ``timeout`` so it reports the stuck
    step itself instead of being killed. Loopback only: any other server is refused.
    """
    if server not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError(f"swaks helper is loopback-only, got server={server!r}")
    binary = require_peer("swaks")
    swaks_timeout = max(1, int(timeout) - 2)
    argv = [
        binary,
        "--server",
        server,
        "--port",
        str(port),
        "--timeout",
        f"{swaks_timeout}s",
        *args,
    ]
    return subprocess.run(
        argv,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------------------
# An aiosmtpd handler that records messages (relay target for PostfixRelay tests)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RecordedMessage:
    peer: Any
    helo: str | None
    mail_from: str
    mail_options: tuple[str, ...]
    rcpt_tos: tuple[str, ...]
    content: bytes


class RecordingHandler:
    """aiosmtpd handler keeping every message; thread-safe, with a bounded wait."""

    def __init__(self) -> None:
        self.messages: list[RecordedMessage] = []
        self._cond = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        record = RecordedMessage(
            peer=session.peer,
            helo=session.host_name,
            mail_from=envelope.mail_from,
            mail_options=tuple(envelope.mail_options),
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=bytes(content),
        )
        with self._cond:
            self.messages.append(record)
            self._cond.notify_all()
        return "250 2.0.0 OK recorded"

    def wait(self, count: int = 1, timeout: float = 20.0) -> list[RecordedMessage]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout=timeout):
                raise TimeoutError(
                    f"timed out after {timeout:.1f}s waiting for {count} message(s); "
                    f"have {len(self.messages)}"
                )
            return list(self.messages)


@contextlib.contextmanager
def aiosmtpd_recorder(**controller_kwargs: Any) -> Iterator[tuple[Any, RecordingHandler]]:
    """An aiosmtpd Controller on 127.0.0.1:<free port> with a RecordingHandler."""
    from aiosmtpd.controller import Controller

    handler = RecordingHandler()
    controller = Controller(
        handler, hostname=LOOPBACK, port=free_port(), ready_timeout=10, **controller_kwargs
    )
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


# --------------------------------------------------------------------------------------
# pytest fixtures (activate with pytest_plugins = ["tests.peers"])
# --------------------------------------------------------------------------------------


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """smtp-sink with dump files on, default EHLO (PIPELINING, 8BITMIME, DSN, ...)."""
    with SmtpSink(dump=True) as sink:
        yield sink


@pytest.fixture
def smtp_sink_factory() -> Iterator[Callable[..., SmtpSink]]:
    """Start smtp-sinks with custom flags: ``smtp_sink_factory(pipelining=False)``."""
    with contextlib.ExitStack() as stack:

        def make(**kwargs: Any) -> SmtpSink:
            return stack.enter_context(SmtpSink(**kwargs))

        yield make


@pytest.fixture
def postfix_relay_factory() -> Iterator[Callable[..., PostfixRelay]]:
    """``postfix_relay_factory(relay_to_port, **options)`` -> a started PostfixRelay."""
    with contextlib.ExitStack() as stack:

        def make(relay_to_port: int, **kwargs: Any) -> PostfixRelay:
            return stack.enter_context(PostfixRelay(relay_to_port, **kwargs))

        yield make


@pytest.fixture
def postfix_server_factory() -> Iterator[Callable[..., PostfixServer]]:
    """``postfix_server_factory(tls=True, sasl_users={...})`` -> a started PostfixServer."""
    with contextlib.ExitStack() as stack:

        def make(**kwargs: Any) -> PostfixServer:
            return stack.enter_context(PostfixServer(**kwargs))

        yield make


@pytest.fixture
def postfix_server() -> Iterator[PostfixServer]:
    """A receiving Postfix with STARTTLS offered (not required), no AUTH."""
    with PostfixServer(tls=True) as server:
        yield server


PEER_SASL_USER = "alice"
PEER_SASL_PASSWORD = "wonderland-7f3a"


@pytest.fixture
def postfix_auth_server() -> Iterator[PostfixServer]:
    """A receiving Postfix with STARTTLS and AUTH PLAIN/LOGIN after TLS for
    PEER_SASL_USER / PEER_SASL_PASSWORD; RCPT needs authentication."""
    with PostfixServer(
        tls=True,
        sasl_users={PEER_SASL_USER: PEER_SASL_PASSWORD},
        auth_required=True,
    ) as server:
        yield server


@pytest.fixture
def aiosmtpd_recording() -> Iterator[tuple[Any, RecordingHandler]]:
    """(aiosmtpd Controller, RecordingHandler) on a free loopback port."""
    with aiosmtpd_recorder() as pair:
        yield pair
