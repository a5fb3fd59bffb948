"""The package's public names: all importable, loaded on first use (so that the command
can report a bad FERROSMTP_BACKEND itself), and the same objects as in their modules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import ferrosmtp


def test_every_public_name_resolves_to_its_module_s_object() -> None:
    for name in ferrosmtp.__all__:
        value = getattr(ferrosmtp, name)
        module = ferrosmtp._WHERE.get(name)
        if module is not None:
            assert value is getattr(importlib.import_module(module), name), name
    assert set(ferrosmtp._WHERE) | {"codec", "__version__"} == set(ferrosmtp.__all__)
    assert set(ferrosmtp.__all__) <= set(dir(ferrosmtp))


def test_importing_the_package_imports_no_codec_until_a_name_is_used() -> None:
    code = (
        "import sys, ferrosmtp; assert 'ferrosmtp.codec' not in sys.modules; "
        "ferrosmtp.Server; assert 'ferrosmtp.codec' in sys.modules; "
        "from ferrosmtp import send, SMTPTimeoutError, codec; print(codec.BACKEND)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("rust", "pure")


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        ferrosmtp.Nope  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as error:
        assert "has no attribute 'Nope'" in str(error)
    else:
        raise AssertionError("ferrosmtp.Nope resolved")
