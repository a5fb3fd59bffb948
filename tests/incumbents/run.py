"""Run aiosmtpd's and aiosmtplib's own test suites against ferrosmtp.

    python tests/incumbents/run.py                      # CI: compat gated, default reported
    python tests/incumbents/run.py --suite aiosmtpd --target compat -- -k test_ehlo
    python tests/incumbents/run.py --target incumbent   # the libraries themselves

For each suite this downloads the sdist of the *installed* version (the `test` extra pins
it), copies the suite's tests out of it, and rewrites only the suite's own imports of the
library's public names (`from aiosmtpd.smtp import SMTP` ...) to come from ferrosmtp
(see PUBLIC below); everything else the suite imports, including the library internals
its helpers use and the incumbent server aiosmtplib's tests talk to, stays the library's.
A public name the target does not provide becomes a placeholder that raises when used,
so a test cannot pass by running the incumbent's code in ferrosmtp's place.

Targets: `compat` (ferrosmtp.compat.*; gated by the expected-failures files next to
this script), `default` (ferrosmtp's own names; reported, not gated), `incumbent` (no
rewriting: the baseline).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = ROOT / "build" / "incumbents"
SHIM_MODULE = "_ferrosmtp_shim"

# A silent server cannot hang a run: every blocking socket the suite opens without a
# timeout of its own gives up after this long, and every test after PER_TEST_TIMEOUT.
SOCKET_TIMEOUT = 10.0
PER_TEST_TIMEOUT = 60

# Why a test may fail against ferrosmtp.compat: each expected-failures entry names one.
REASONS = {
    "private": "reads or mocks the incumbent's private internals",
    "security": "a deliberate security defence (README: Switching, SECURITY.md)",
    "path-grammar": "the RFC 5321 path grammar (README: Switching)",
    "cpython": "needs a newer CPython patch release (fails against the incumbent too)",
    # Temporary, while issue 9 is under way: not compatible yet. Empty when it closes.
    "todo": "not compatible yet (issue 9 in progress)",
}


@dataclass(frozen=True)
class Suite:
    dist: str  # the PyPI name, also the importable package
    tests: str  # the tests' folder inside the sdist
    package: str  # the name the copied tests are imported under
    public: dict[str, frozenset[str]]  # module -> public names that resolve to ferrosmtp
    targets: dict[str, tuple[str, dict[str, str]]]  # target -> (module, renames)
    ini: str  # the suite's own pytest settings, without its coverage options
    extra_args: list[str] = field(default_factory=list)


AIOSMTPD_SERVER = frozenset(
    {
        "SMTP", "Session", "Envelope", "AuthResult", "LoginPassword", "MISSING",
        "auth_mechanism", "TLSSetupException",
    }
)  # fmt: skip
AIOSMTPD_CONTROLLERS = frozenset(
    {"Controller", "UnthreadedController", "UnixSocketController", "UnixSocketUnthreadedController"}
)
AIOSMTPLIB_ERRORS = frozenset(
    {
        "SMTPAuthenticationError", "SMTPConnectError", "SMTPConnectResponseError",
        "SMTPConnectTimeoutError", "SMTPDataError", "SMTPException", "SMTPHeloError",
        "SMTPNotSupported", "SMTPReadTimeoutError", "SMTPRecipientRefused",
        "SMTPRecipientsRefused", "SMTPResponseException", "SMTPSenderRefused",
        "SMTPServerDisconnected", "SMTPTimeoutError",
    }
)  # fmt: skip
AIOSMTPLIB_PUBLIC = AIOSMTPLIB_ERRORS | {
    "SMTP", "send", "SMTPResponse", "SMTPStatus", "SMTPTokenGenerator",
}  # fmt: skip

SUITES = {
    "aiosmtpd": Suite(
        dist="aiosmtpd",
        tests="aiosmtpd/tests",
        package="aiosmtpd_tests",
        public={
            "aiosmtpd.smtp": AIOSMTPD_SERVER,
            "aiosmtpd.controller": AIOSMTPD_CONTROLLERS,
            "aiosmtpd.lmtp": frozenset({"LMTP"}),
        },
        targets={
            "compat": ("ferrosmtp.compat.aiosmtpd", {}),
            "default": ("ferrosmtp", {"SMTP": "Server"}),
        },
        extra_args=["--strict-markers"],
        ini="""
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
xfail_strict = true
markers =
    client_data
    controller_data
    handler_data
filterwarnings =
    error
    ignore:pkg_resources is deprecated as an API:DeprecationWarning
    ignore:unclosed transport:ResourceWarning
    ignore:unclosed <socket.socket:ResourceWarning
    ignore:unclosed event loop:ResourceWarning
    ignore:loop is closed:ResourceWarning
""",
    ),
    "aiosmtplib": Suite(
        dist="aiosmtplib",
        tests="tests",
        package="tests",  # its conftest finds certificates under ./tests/certs
        public={
            "aiosmtplib": AIOSMTPLIB_PUBLIC,
            "aiosmtplib.smtp": frozenset({"SMTP"}),
            "aiosmtplib.api": frozenset({"send"}),
            "aiosmtplib.errors": AIOSMTPLIB_ERRORS,
            "aiosmtplib.response": frozenset({"SMTPResponse"}),
            "aiosmtplib.typing": frozenset({"SMTPStatus"}),
            "aiosmtplib.status": frozenset({"SMTPStatus"}),
        },
        targets={
            "compat": ("ferrosmtp.compat.aiosmtplib", {}),
            "default": ("ferrosmtp", {"SMTP": "Client"}),
        },
        ini="""
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
markers =
    smtpd_options
    smtpd_mocks
    smtp_client_options
    skip_if_uvloop
filterwarnings =
    ignore:'typing.ByteString' and 'collections.abc.ByteString' are deprecated:DeprecationWarning
""",
        extra_args=["--strict-markers"],
    ),
}

SHIM = '''"""Written by tests/incumbents/run.py: the suite's public names, from {target}."""
import importlib

_target = importlib.import_module({target!r})
_renames = {renames!r}


def _absent(name):
    def refuse(*args, **kwargs):
        raise NotImplementedError(f"{target} provides no {{name}}")

    return type(name, (), {{"__init__": refuse, "__init_subclass__": classmethod(lambda c: None)}})


def __getattr__(name):
    value = getattr(_target, _renames.get(name, name), _absent)
    return _absent(name) if value is _absent else value
'''


def rewrite(source: str, suite: Suite, target: str) -> str:
    """The suite's source with its imports of public names pointed at the shim; line
    numbers are kept so tracebacks match the original files."""
    source = source.replace(f"{suite.dist}.tests", suite.package)
    if target == "incumbent":
        return source
    lines = source.splitlines(keepends=True)
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.level or node.module not in suite.public:
            continue
        public = suite.public[node.module]
        mapped = [a for a in node.names if a.name in public]
        if not mapped:
            continue
        kept = [a for a in node.names if a.name not in public]

        def names(aliases: list[ast.alias]) -> str:
            return ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in aliases)

        statements = [f"from {SHIM_MODULE} import {names(mapped)}"]
        if kept:
            statements.insert(0, f"from {node.module} import {names(kept)}")
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        indent = lines[first][: node.col_offset]
        lines[first] = indent + "; ".join(statements) + "\n"
        for i in range(first + 1, last + 1):
            lines[i] = "\n"
    return "".join(lines)


def sdist(suite: Suite) -> Path:
    """The sdist of the installed version, downloaded once into build/incumbents."""
    wanted = version(suite.dist)
    found = sorted(WORK.glob(f"{suite.dist}-{wanted}.tar.gz"))
    if found:
        return found[0]
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
         "-d", str(WORK), f"{suite.dist}=={wanted}"],
        check=True,
    )  # fmt: skip
    return WORK / f"{suite.dist}-{wanted}.tar.gz"


def prepare(suite: Suite, target: str) -> Path:
    """A fresh folder holding the suite's (rewritten) tests, the shim and a pytest.ini."""
    work = WORK / f"{suite.dist}-{target}"
    shutil.rmtree(work, ignore_errors=True)
    destination = work / suite.package
    with tarfile.open(sdist(suite)) as archive:
        top = archive.getmembers()[0].name.split("/")[0]
        prefix = f"{top}/{suite.tests}/"
        for member in archive.getmembers():
            if not member.isfile() or not member.name.startswith(prefix):
                continue
            path = destination / member.name[len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            data = archive.extractfile(member).read()  # type: ignore[union-attr]
            if path.suffix == ".py":
                data = rewrite(data.decode(), suite, target).encode()
            path.write_bytes(data)
    if target != "incumbent":
        module, renames = suite.targets[target]
        (work / f"{SHIM_MODULE}.py").write_text(SHIM.format(target=module, renames=renames))
    shutil.copy(HERE / "plugin.py", work / "_ferrosmtp_harness.py")
    (work / "pytest.ini").write_text("[pytest]" + suite.ini)
    return work


def run(suite: Suite, target: str, pytest_args: list[str]) -> dict[str, str]:
    """Run the suite; the outcome of every test, keyed by its id inside the suite."""
    work = prepare(suite, target)
    results = work / "results.json"
    env = dict(os.environ, PYTHONPATH=str(work), FERROSMTP_HARNESS_RESULTS=str(results))
    env["FERROSMTP_HARNESS_SOCKET_TIMEOUT"] = str(SOCKET_TIMEOUT)
    command = [
        sys.executable, "-m", "pytest", suite.package, "-q", "-p", "no:cacheprovider",
        "-p", "_ferrosmtp_harness", f"--timeout={PER_TEST_TIMEOUT}", "--tb=line", "-rfE",
        *suite.extra_args, *pytest_args,
    ]  # fmt: skip
    command = isolated(command)
    log = work / "pytest.log"
    with log.open("w") as out:
        done = subprocess.run(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    # 0: all passed, 1: some failed; anything else (a collection error, an interrupted
    # or empty run) means the suite did not run as a whole.
    if done.returncode not in (0, 1) or not results.exists():
        sys.exit(f"{suite.dist}: pytest exited {done.returncode}; see {log}")
    outcomes: dict[str, str] = json.loads(results.read_text())
    return {test.removeprefix(suite.package + "/"): outcome for test, outcome in outcomes.items()}


def isolated(command: list[str]) -> list[str]:
    """The command in a network namespace of its own with only loopback, when this
    machine allows it (root on Linux): aiosmtpd's suite listens on the fixed port 8025,
    which another run on the same machine may hold."""
    if not (shutil.which("unshare") and shutil.which("ip") and os.geteuid() == 0):
        return command
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        return command
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]


def expected_failures(suite: Suite) -> dict[str, str]:
    """`<test id>  # <reason>: <why>` per line; the reason is one of REASONS."""
    entries: dict[str, str] = {}
    path = HERE / f"{suite.dist}.expected-failures"
    for number, line in enumerate(path.read_text().splitlines(), 1):
        test, _, comment = line.partition("#")
        if not test.strip():
            continue
        reason = comment.split(":", 1)[0].strip()
        if reason not in REASONS:
            sys.exit(f"{path.name}:{number}: the reason must be one of {sorted(REASONS)}")
        entries[test.strip()] = reason
    return entries


def update_expected(suite: Suite, outcomes: dict[str, str]) -> None:
    """Rewrite the expected-failures file from a run: entries that pass now go, their
    reasons stay for the rest, and a new failure comes in as `todo` to be triaged."""
    path = HERE / f"{suite.dist}.expected-failures"
    old = {}
    for line in path.read_text().splitlines():
        test, _, comment = line.partition("#")
        if test.strip():
            old[test.strip()] = comment.strip()
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    failed = sorted(t for t, o in outcomes.items() if o == "failed")
    width = max(map(len, failed), default=0)
    body = [f"{t.ljust(width)}  # {old.get(t) or 'todo: triage'}" for t in failed]
    path.write_text("\n".join(header + body) + "\n")


def report(suite: Suite, target: str, outcomes: dict[str, str], gated: bool) -> bool:
    where = suite.targets[target][0] if target != "incumbent" else suite.dist
    counts = {o: sum(1 for v in outcomes.values() if v == o) for o in ("passed", "failed")}
    skipped = len(outcomes) - counts["passed"] - counts["failed"]
    print(
        f"{suite.dist} {version(suite.dist)}'s suite through {where}: "
        f"{counts['passed']} / {len(outcomes)} pass ({counts['failed']} fail"
        + (f", {skipped} skip)" if skipped else ")")
    )
    if not gated:
        return True
    expected = expected_failures(suite)
    failed = {t for t, o in outcomes.items() if o == "failed"}
    unexpected = sorted(failed - expected.keys())
    stale = sorted(t for t in expected if outcomes.get(t) == "passed")
    unknown = sorted(t for t in expected if t not in outcomes)
    by_reason = {r: sum(1 for t in failed if expected.get(t) == r) for r in REASONS}
    print("  expected failures by reason: " + ", ".join(f"{r} {n}" for r, n in by_reason.items()))
    for test in stale:
        print(f"  passes now, remove from {suite.dist}.expected-failures: {test}")
    for test in unknown:
        print(f"  no such test, remove from {suite.dist}.expected-failures: {test}")
    for test in unexpected:
        print(f"  UNEXPECTED FAILURE: {test}")
    return not unexpected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", choices=sorted(SUITES), action="append")
    parser.add_argument("--target", choices=["compat", "default", "incumbent"], action="append")
    parser.add_argument(
        "--update-expected",
        action="store_true",
        help="rewrite the compat expected-failures files from this run (review the diff)",
    )
    parser.add_argument("pytest_args", nargs="*", help="after --: passed on to pytest")
    args = parser.parse_args()
    suites = args.suite or sorted(SUITES)
    targets = args.target or ["compat", "default"]
    ok = True
    for target in targets:
        for name in suites:
            suite = SUITES[name]
            outcomes = run(suite, target, args.pytest_args)
            gated = target == "compat" and not args.pytest_args
            if gated and args.update_expected:
                update_expected(suite, outcomes)
            ok = report(suite, target, outcomes, gated) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
