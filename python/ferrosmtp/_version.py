"""``__version__``, read from the installed package's metadata.

The version is written once, in ``Cargo.toml``; maturin copies it into the metadata of
every wheel and sdist. A source tree used without installing (``PYTHONPATH=python``) has
no metadata, so the version is then read from ``Cargo.toml`` itself.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

__all__ = ["__version__"]


def _from_cargo_toml() -> str:
    cargo = Path(__file__).resolve().parents[2] / "Cargo.toml"
    try:
        text = cargo.read_text("utf-8")
    except OSError:
        return "0+unknown"
    # The first `version = "..."` is the [package] one: it is the table's second key.
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else "0+unknown"


def _version() -> str:
    try:
        return metadata.version("ferrosmtp")
    except metadata.PackageNotFoundError:
        return _from_cargo_toml()


__version__: str = _version()
