"""``ferrosmtp serve`` as a real process: stores into a Maildir, logs, stops on SIGTERM."""

from __future__ import annotations

import logging
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferrosmtp.cli import build_parser, main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.communicate()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start listening")


def test_serve_stores_into_the_default_maildir(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrosmtp", "serve", "--port", str(port), "--hostname", "mx.test"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.net"], b"Subject: cli\r\n\r\nhello\r\n")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    log = out.decode()
    assert "listening on 127.0.0.1" in log and "storing into maildir" in log
    assert "connected" in log and "message from=<a@example.com> rcpts=1" in log
    [stored] = list((tmp_path / "maildir" / "new").iterdir())
    data = stored.read_bytes()
    assert data.startswith(b"Received: from ") and data.endswith(b"Subject: cli\r\n\r\nhello\r\n")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--implicit-tls"]) == 2
    assert "--implicit-tls needs --tls-cert" in capsys.readouterr().err
    assert main(["serve", "--auth-file", os.devnull]) == 2
    assert "passwords in clear" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["serve", "--max-size", "lots"])
    assert info.value.code == 2
    assert main([]) == 2


def test_port_in_use_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--sink", "-q"]) == 3
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ferrosmtp", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in [
        "--host",
        "--port",
        "--maildir",
        "--mbox",
        "--stdout",
        "--tls-cert",
        "--tls-key",
        "--implicit-tls",
        "--auth-file",
        "--max-size",
        "--hostname",
        "--lmtp",
    ]:
        assert flag in result.stdout


SERVE = [sys.executable, "-m", "ferrosmtp", "serve", "--hostname", "mx.test"]


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in path.read_text().split()}


def _wait_for(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _send(port: int, count: int, tag: str) -> None:
    for number in range(count):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail(
                "a@example.com", ["b@example.net"], f"Subject: {tag} {number}\r\n\r\nhi\r\n"
            )


@pytest.mark.skipif(
    not Path("/proc/self/task").exists(),
    reason="finds the worker processes through Linux /proc (SO_REUSEPORT spreading is Linux's)",
)
def test_workers_share_the_port_are_restarted_and_stop_together(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*SERVE, "--port", str(port), "--workers", "2", "--maildir", str(tmp_path / "box")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc)
        _wait_for(lambda: len(_children(proc.pid)) == 2)
        first = _children(proc.pid)
        _send(port, 30, "before")
        # A worker killed outright is replaced, and the port keeps answering meanwhile.
        victim = min(first)
        # (Connections the kernel had queued on its socket die with it, as with any
        # SO_REUSEPORT listener: wait until it is gone.)
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: victim not in _children(proc.pid))
        _send(port, 5, "during")
        _wait_for(lambda: len(_children(proc.pid)) == 2 and victim not in _children(proc.pid))
        replaced = _children(proc.pid)
        _send(port, 30, "after")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = out.decode()
    assert proc.returncode == 0, log
    assert len(list((tmp_path / "box" / "new").iterdir())) == 65
    # Both workers took connections (the kernel spreads them; 30 all to one worker would
    # be a 1 in 2**29 chance), and every worker is gone after the stop.
    served = {int(pid) for pid in re.findall(r"ferrosmtp\.server\[(\d+)\]: \S+ connected", log)}
    assert len(served & first) == 2 and served & (replaced - first), log
    assert "restarting it" in log and "supervisor stopping 2 workers" in log
    for pid in first | replaced:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_workers_stop_when_the_port_is_taken() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [*SERVE, "--port", str(port), "--workers", "2", "--sink"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert out.returncode == 3, out
    assert b"could not start" in out.stderr


def test_workers_need_a_fixed_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--workers", "2", "--sink"]) == 2
    assert "--workers needs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["serve", "--workers", "0", "--sink"])
    assert info.value.code == 2


@pytest.mark.parametrize(
    "fmt",
    [
        "%(asctime)s %(levelname)s %(name)s: %(message)s",
        "%(asctime)s %(levelname)s %(name)s[7]: %(message)s",
        "%(levelname)-8s|%(name)s %%(x)s 100%% %(message).4s",
        "%(message)s",
        "%(name)s%(name)s %(message)s",
    ],
)
def test_log_lines_look_like_basic_config_lines(fmt: str) -> None:
    """LineFormatter's lines, from a record (format) and from its fields (line, by
    position), are logging.Formatter's, whatever the format's specs and escapes."""
    from ferrosmtp._log import LineFormatter

    fast, usual = LineFormatter(fmt), logging.Formatter(fmt)
    assert fast.direct
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        record = logging.LogRecord("ferrosmtp.server", logging.INFO, "x", 1, "%s hi", ("p",), None)
        record.created, record.msecs = created, int(created % 1 * 1000)
        expected = usual.format(record)
        assert fast.format(record) == expected
        assert fast.line("ferrosmtp.server", "INFO", created, "p hi") == expected


_LINE_LOGGER_CHECK = r"""
import io, json, logging, sys
from ferrosmtp import _log

FMT = "%(asctime)s %(levelname)s %(name)s[7]: %(message)s"
ARGS = ("ID", "a@b.test", 0.0033, "250 2.0.0 Ok")
MSG = "%s: to=<%s>, delay=%.2g (%s)"

def lines(json_lines, level=logging.INFO, extra=None):
    logging.root.handlers.clear()
    stream = io.StringIO()
    _log.install(level, FMT, stream, json_lines=json_lines)
    if extra is not None:
        logging.root.addHandler(extra)
    log = logging.getLogger("ferrosmtp.check")
    assert type(log) is _log.LineLogger, type(log)
    log.info(MSG, *ARGS)
    log.info("plain %%s text")
    log.warning("a %s", "warning")
    if extra is not None:
        logging.root.removeHandler(extra)
    # What logging itself makes of the same calls, through the same handler.
    handler = logging.root.handlers[0]
    usual = io.StringIO()
    handler.setStream(usual)
    for msg, args, lvl in ((MSG, ARGS, logging.INFO), ("plain %%s text", (), logging.INFO),
                           ("a %s", ("warning",), logging.WARNING)):
        if lvl >= level:
            logging.Logger.handle(log, log.makeRecord(log.name, lvl, "", 0, msg, args, None))
    return stream.getvalue().splitlines(), usual.getvalue().splitlines()

def untimed(line, json_lines):
    if json_lines:
        entry = json.loads(line)
        del entry["time"]
        return entry
    return line.split(" ", 2)[2]

for json_lines in (False, True):
    fast, usual = lines(json_lines)
    assert len(fast) == 3 and [untimed(x, json_lines) for x in fast] == [
        untimed(x, json_lines) for x in usual], (fast, usual)
    fast, usual = lines(json_lines, level=logging.WARNING)  # -q
    assert len(fast) == 1 and "warning" in fast[0], fast
# Another handler: every line reaches both, through logging's own path.
other = io.StringIO()
fast, _ = lines(False, extra=logging.StreamHandler(other))
assert len(fast) == 3 and len(other.getvalue().splitlines()) == 3, (fast, other.getvalue())
print("ok")
"""


def test_info_lines_written_directly_are_the_lines_logging_writes() -> None:
    """LineLogger's direct INFO lines (text and JSON) are what the handler's formatter
    makes of the same record; -q silences them; with another handler it is logging."""
    out = subprocess.run(
        [sys.executable, "-c", _LINE_LOGGER_CHECK], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _banners(port: int, count: int) -> list[bytes]:
    """The first bytes each of ``count`` simultaneous connections gets."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    try:
        return [sock.recv(200) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("exempt", [None, "10.0.0.0/8"])
def test_per_address_limit_spares_loopback_by_default(exempt: str | None) -> None:
    port = free_port()
    args = [*SERVE, "--port", str(port), "--sink", "--max-connections-per-ip", "2"]
    if exempt:
        args += ["--connection-limit-exempt", exempt]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        banners = _banners(port, 4)
    finally:
        proc.terminate()
        proc.wait(10)
    if exempt is None:  # loopback is exempt unless the exemptions are replaced
        assert all(b.startswith(b"220 ") for b in banners), banners
    else:
        assert [b[:4] for b in banners] == [b"220 ", b"220 ", b"421 ", b"421 "], banners


def test_per_address_limit_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["serve"])
    assert args.max_connections_per_ip == 50
    with pytest.raises(SystemExit) as info:
        main(["serve", "--connection-limit-exempt", "not-a-network", "--sink"])
    assert info.value.code == 2
    assert "--connection-limit-exempt" in capsys.readouterr().err


def test_sigterm_tells_connected_clients_421_and_keeps_no_partial_message(
    tmp_path: Path,
) -> None:
    port = free_port()
    box = tmp_path / "box"
    proc = subprocess.Popen(
        [*SERVE, "--port", str(port), "--maildir", str(box), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        busy = socket.create_connection(("127.0.0.1", port), timeout=10)
        for sock in (idle, busy):
            assert sock.recv(200).startswith(b"220 ")
        busy.sendall(b"EHLO c.example\r\n")
        busy.recv(1000)
        busy.sendall(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
        replies = b""
        while b"354 " not in replies:  # content may only follow the 354 (RFC 2920)
            replies += busy.recv(1000)
        busy.sendall(b"Subject: cut short\r\n\r\n" + b"x" * 100_000 + b"\r\n")
        _wait_for(lambda: any((box / "tmp").iterdir()))  # the message is being written
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        for sock in (idle, busy):
            data = b""
            while chunk := sock.recv(1000):
                data += chunk
            assert data.endswith(b"421 4.3.2 mx.test Service shutting down\r\n"), data
            sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not any((box / "new").iterdir()) and not any((box / "tmp").iterdir())


def test_proxy_protocol_option_names_the_real_client_in_received(tmp_path: Path) -> None:
    port = free_port()
    box = tmp_path / "box"
    proc = subprocess.Popen(
        [*SERVE, "--port", str(port), "--maildir", str(box), "--proxy-protocol", "5", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)  # (a probe without a header: closed by the server)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"PROXY TCP4 198.51.100.9 192.0.2.25 5555 25\r\n")
        client = smtplib.SMTP()
        client.sock, client.file = sock, None
        assert client.getreply()[0] == 220
        client.ehlo("c.example")
        client.sendmail("a@example.com", ["b@example.net"], b"Subject: proxied\r\n\r\nhi\r\n")
        client.quit()
    finally:
        proc.terminate()
        proc.wait(10)
    [stored] = list((box / "new").iterdir())
    assert stored.read_bytes().startswith(b"Received: from c.example ([198.51.100.9])")
    with pytest.raises(SystemExit) as info:
        main(["serve", "--proxy-protocol", "0", "--sink"])
    assert info.value.code == 2
