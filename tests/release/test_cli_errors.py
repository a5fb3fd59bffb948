"""Every bad argument of ``ferrosmtp serve`` and ``ferrosmtp send`` is one line on stderr
that names the option (or the file, or the variable) and exit status 2: never a
traceback. Each case runs the real command in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

# The cases refer to these files by {name}.
FILES = {
    "message": b"From: a@example.org\r\nTo: b@example.org\r\n\r\nhi\r\n",
    "garbage": b"this is not PEM\n",
    "users_bad": b"alice:secret\nno-colon-here\n",
    "users_latin1": "alice:s\xe9cret\n".encode("latin-1"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli-errors")
    paths = {}
    for name, data in FILES.items():
        (root / name).write_bytes(data)
        paths[name] = str(root / name)
    ca = trustme.CA()
    cert = ca.issue_cert("mx.test")
    other = ca.issue_cert("other.test")
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    other.private_key_pem.write_to_path(str(root / "other-key.pem"))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    (root / "encrypted-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    for name in ("cert.pem", "key.pem", "other-key.pem", "encrypted-key.pem"):
        paths[name.removesuffix(".pem").replace("-", "_")] = str(root / name)
    paths["dir"] = str(root)
    paths["missing"] = str(root / "missing.pem")
    return paths


def run_cli(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FERROSMTP_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ferrosmtp", *argv],
        capture_output=True,
        text=True,
        env=environ,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


SERVE_CASES = [
    # (arguments, environment, what the one line must say)
    (["--port", "99999"], {}, "--port: 99999 is not a port number (0-65535)"),
    (["--port", "-1"], {}, "--port: -1 is not a port number"),
    (["--port", "smtp"], {}, "--port: 'smtp' is not a port number"),
    (["--timeout", "-5"], {}, "--timeout: -5 is not a positive number of seconds"),
    (["--timeout", "nan"], {}, "--timeout: nan is not a positive number of seconds"),
    (["--max-size", "-1"], {}, "--max-size: '-1' is not a positive size"),
    (["--max-size", "lots"], {}, "--max-size: 'lots' is not a positive size"),
    (["--max-recipients", "-3"], {}, "--max-recipients: -3 is less than 1"),
    (["--max-connections-per-ip", "-1"], {}, "--max-connections-per-ip: -1 is less than 0"),
    (["--workers", "0"], {}, "--workers: 0 is less than 1"),
    (["--proxy-protocol", "0"], {}, "--proxy-protocol: 0 is not a positive number"),
    (["--connection-limit-exempt", "lan"], {}, "--connection-limit-exempt: 'lan' is not an IP"),
    (["--loop", "trio"], {}, "--loop: invalid choice: 'trio'"),
    (
        ["--tls-cert", "{missing}", "--tls-key", "{key}"],
        {},
        "--tls-cert: cannot read {missing}: No such file or directory",
    ),
    (
        ["--tls-cert", "{cert}", "--tls-key", "{missing}"],
        {},
        "--tls-key: cannot read {missing}: No such file or directory",
    ),
    (["--tls-cert", "{dir}", "--tls-key", "{key}"], {}, "--tls-cert: cannot read {dir}"),
    (
        ["--tls-cert", "{garbage}", "--tls-key", "{key}"],
        {},
        "--tls-cert: {garbage} holds no PEM certificate",
    ),
    (
        ["--tls-cert", "{cert}", "--tls-key", "{garbage}"],
        {},
        "--tls-key: {garbage} is not the PEM private key of the certificate in {cert}",
    ),
    (
        ["--tls-cert", "{cert}", "--tls-key", "{other_key}"],
        {},
        "--tls-key: {other_key} is not the PEM private key of the certificate in {cert}",
    ),
    (
        ["--tls-cert", "{cert}", "--tls-key", "{encrypted_key}"],
        {},
        "--tls-key: {encrypted_key} is encrypted",
    ),
    (["--tls-cert", "{cert}"], {}, "--tls-cert and --tls-key go together"),
    (
        ["--auth-file", "{users_bad}", "--allow-insecure-auth"],
        {},
        "--auth-file: {users_bad}:2: expected 'user:password'",
    ),
    (
        ["--auth-file", "{users_latin1}", "--allow-insecure-auth"],
        {},
        "--auth-file: {users_latin1}: not UTF-8 text",
    ),
    (["--auth-file", "{missing}"], {}, "--auth-file: cannot read {missing}"),
    (["--log-file", "{missing}/log"], {}, "--log-file: {missing}/log: No such file or directory"),
    ([], {"FERROSMTP_PORT": "70000"}, "FERROSMTP_PORT: 70000 is not a port number"),
    ([], {"FERROSMTP_TIMEOUT": "-1"}, "FERROSMTP_TIMEOUT: -1 is not a positive number"),
    ([], {"FERROSMTP_TLS_CERT": "{missing}"}, "FERROSMTP_TLS_CERT: cannot read {missing}"),
    ([], {"FERROSMTP_SINK": "maybe"}, "FERROSMTP_SINK='maybe': use 1/true/yes or 0/false/no"),
    (
        [],
        {"FERROSMTP_MBOX": "a.mbox", "FERROSMTP_MAILDIR": "md"},
        "cannot be used together",
    ),
    ([], {"FERROSMTP_BACKEND": "bogus"}, "FERROSMTP_BACKEND must be 'rust' or 'pure', not 'bogus'"),
]

SEND_CASES = [
    (["{message}", "--port", "99999"], "--port: 99999 is not a port number (1-65535)"),
    (["{message}", "--port", "0"], "--port: 0 is not a port number (1-65535)"),
    (["{message}", "--timeout", "-5"], "--timeout: -5 is not a positive number of seconds"),
    (["{message}", "--pool", "0"], "--pool: 0 is less than 1"),
    (["{message}", "--cafile", "{missing}"], "--cafile: cannot read {missing}"),
    (["{message}", "--cafile", "{garbage}"], "--cafile: {garbage} holds no PEM certificate"),
    (
        ["{message}", "--user", "u", "--password-file", "{missing}"],
        "--password-file: cannot read {missing}",
    ),
    (["{missing}"], "{missing}: no such file"),
]


def check_one_line(out: subprocess.CompletedProcess[str], prog: str, expected: str) -> None:
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"{prog}: "), lines[0]
    assert expected in lines[0], (expected, lines[0])


@pytest.mark.parametrize(("argv", "env", "expected"), SERVE_CASES)
def test_serve_bad_argument_is_one_line_and_exit_2(
    files: dict[str, str], argv: list[str], env: dict[str, str], expected: str
) -> None:
    argv = [a.format(**files) for a in argv]
    env = {k: v.format(**files) for k, v in env.items()}
    # With a variable under test, nothing on the command line may override it.
    base = [] if env else ["--port", "0", "--sink"]
    out = run_cli(["serve", *base, *argv], env)
    prog = "ferrosmtp" if "FERROSMTP_BACKEND" in env else "ferrosmtp serve"
    check_one_line(out, prog, expected.format(**files))


@pytest.mark.parametrize(("argv", "expected"), SEND_CASES)
def test_send_bad_argument_is_one_line_and_exit_2(
    files: dict[str, str], argv: list[str], expected: str
) -> None:
    out = run_cli(["send", *(a.format(**files) for a in argv)])
    check_one_line(out, "ferrosmtp send", expected.format(**files))


@pytest.mark.parametrize("argv", [["--version"], ["send", "x"], []])
def test_unknown_backend_is_one_line_for_every_command(argv: list[str]) -> None:
    out = run_cli(argv, {"FERROSMTP_BACKEND": "bogus"})
    check_one_line(out, "ferrosmtp", "FERROSMTP_BACKEND must be 'rust' or 'pure'")


def test_serve_help_lists_exit_codes_signals_and_environment() -> None:
    out = run_cli(["serve", "--help"])
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "Exit status: 0 stopped by SIGTERM or SIGINT 2 bad arguments" in text
    assert "3 could not start" in text
    assert "SIGHUP reopens --log-file and reloads the TLS certificate" in text
    assert "FERROSMTP_PORT=2525" in text
    for flag in ("--log-format {text,json}", "--log-file PATH"):
        assert flag in text


def test_send_help_lists_exit_codes() -> None:
    out = run_cli(["send", "--help"])
    assert "Exit codes: 0 all sent; 1 some refused or failed; 2 usage error" in " ".join(
        out.stdout.split()
    )


def test_no_storage_is_created_for_a_bad_command_line(tmp_path: Path) -> None:
    """The storage is the only thing serve creates, and only once arguments are valid."""
    out = run_cli(["serve", "--port", "99999", "--maildir", str(tmp_path / "md")])
    assert out.returncode == 2
    assert not (tmp_path / "md").exists()


def test_rust_backend_asked_for_without_the_extension(tmp_path: Path) -> None:
    """A source tree without the compiled extension: the default falls back to the pure
    codec (and says so); FERROSMTP_BACKEND=rust is one line and exit 2."""
    import shutil

    import ferrosmtp

    tree = tmp_path / "tree"
    shutil.copytree(
        Path(ferrosmtp.__file__).parent,
        tree / "ferrosmtp",
        ignore=shutil.ignore_patterns("_core*.so", "_core*.pyd", "__pycache__"),
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FERROSMTP_")}
    environ["PYTHONPATH"] = str(tree)

    def run(*env: tuple[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ferrosmtp", "--version"],
            capture_output=True,
            text=True,
            env={**environ, **dict(env)},
            cwd=tmp_path,
            timeout=30,
        )

    fallback = run()
    assert fallback.returncode == 0 and "(pure codec" in fallback.stdout, fallback
    out = run(("FERROSMTP_BACKEND", "rust"))
    check_one_line(
        out, "ferrosmtp", "FERROSMTP_BACKEND=rust, but the Rust extension cannot be imported"
    )
