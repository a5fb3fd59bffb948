"""The version is written once (Cargo.toml) and read everywhere else."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import ferrosmtp
from ferrosmtp import _version, codec

ROOT = Path(__file__).resolve().parents[2]


def cargo_version() -> str:
    text = (ROOT / "Cargo.toml").read_text("utf-8")
    match = re.search(r'^\[package\]\nname = "ferrosmtp"\nversion = "([^"]+)"', text, re.M)
    assert match, "Cargo.toml no longer starts [package] with name and version"
    return match.group(1)


def test_version_is_cargo_toml_s() -> None:
    assert ferrosmtp.__version__ == cargo_version()
    assert metadata.version("ferrosmtp") == cargo_version()


def test_source_tree_fallback_reads_cargo_toml() -> None:
    assert _version._from_cargo_toml() == cargo_version()


def test_pyproject_does_not_repeat_the_version() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    assert 'dynamic = ["version"]' in pyproject
    assert not re.search(r"^version\s*=", pyproject, re.M)


def test_cli_version_names_the_version_and_the_codec_backend() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ferrosmtp", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.startswith(f"ferrosmtp {cargo_version()} ({codec.BACKEND} codec, ")
