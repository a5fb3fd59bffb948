"""The runnable examples of the documentation run: each Python block marked below is
executed in a process of its own (its port 8025 replaced by a free one) and its output
checked, so a quick start cannot rot."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (file, the heading the block follows, what its output must contain)
EXAMPLES = [
    ("README.md", "## Quick start", "a@example.org ['b@example.org']"),
    ("docs/getting-started.md", "## The same in Python", "from a@example.org to ['b@example.org']"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def python_block(path: Path, heading: str) -> str:
    text = path.read_text("utf-8")
    start = text.index(heading)
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no python block after {heading!r} in {path}"
    return match.group(1)


@pytest.mark.parametrize(("file", "heading", "expected"), EXAMPLES)
def test_example_runs(file: str, heading: str, expected: str, tmp_path: Path) -> None:
    code = python_block(ROOT / file, heading).replace("8025", str(free_port()))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert expected in out.stdout, out.stdout


def test_cli_reference_is_what_help_prints() -> None:
    """docs/cli.md is the commands' --help (regenerate with python docs/cli_help.py)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "cli_help.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
