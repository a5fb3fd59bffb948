"""The smoke test of an installed ferrosmtp, run by the interpreter it is installed in,
from outside the source tree (so only the installed package can be imported):

    python wheel_smoke.py rust|pure

The expected codec backend is active, the typing files are inside, ``ferrosmtp --version``
names the backend, and ``ferrosmtp serve`` stores what ``ferrosmtp send`` sends. Plain
Python and subprocesses only, so the release workflow runs it on Linux, macOS and Windows.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ferrosmtp_command() -> list[str]:
    """The installed console script (its presence is part of the test)."""
    scripts = sysconfig.get_path("scripts")  # bin/ on POSIX, Scripts\ on Windows
    script = shutil.which("ferrosmtp", path=scripts)
    if script is None:
        raise SystemExit(f"wheel smoke: no ferrosmtp script next to {sys.executable}")
    return [script]


def wait_for_port(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"wheel smoke: ferrosmtp serve exited with {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("wheel smoke: ferrosmtp serve did not listen within 30 s")


def main(expected: str) -> None:
    import ferrosmtp
    from ferrosmtp import codec

    assert codec.BACKEND == expected, (codec.BACKEND, expected)
    files = importlib.resources.files("ferrosmtp")
    assert (files / "py.typed").is_file() and (files / "_core.pyi").is_file()
    assert codec.parse_command(b"MAIL FROM:<a@example.org>\r\n").verb == "MAIL"
    cli = ferrosmtp_command()
    version = subprocess.run([*cli, "--version"], check=True, capture_output=True, text=True)
    assert f"{expected} codec" in version.stdout, version.stdout
    print("installed", ferrosmtp.__version__, "from", ferrosmtp.__file__)
    print(version.stdout.strip())

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        maildir = work / "mail"
        server = subprocess.Popen([*cli, "serve", "--port", str(port), "--maildir", str(maildir)])
        try:
            wait_for_port(port, server)
            message = work / "msg.eml"
            message.write_bytes(
                b"From: a@example.org\r\nTo: b@example.org\r\nSubject: wheel smoke\r\n"
                b"\r\nHello.\r\n"
            )
            subprocess.run(
                [*cli, "send", str(message), "--host", "127.0.0.1", "--port", str(port)],
                check=True,
                timeout=60,
            )
        finally:
            if os.name == "nt":
                server.terminate()  # no SIGTERM on Windows; the message is stored already
            else:
                server.send_signal(signal.SIGTERM)
            code = server.wait(30)
        if os.name != "nt":
            assert code == 0, f"ferrosmtp serve exited with {code} on SIGTERM"
        stored = list((maildir / "new").iterdir())
        assert len(stored) == 1, stored
        assert b"Subject: wheel smoke" in stored[0].read_bytes()
    print(f"wheel smoke: ok ({expected} codec; serve stored what send sent)")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("rust", "pure"):
        raise SystemExit(__doc__)
    main(sys.argv[1])
