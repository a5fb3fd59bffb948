"""What a user's type checker sees: the codec facade typed with the codec's own classes
(not Any), wrong argument types refused, Pool's keywords spelled out; checked with mypy
and pyright on a snippet of user code."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mypy import api as mypy_api

from ferrosmtp import Client, Pool
from ferrosmtp.client.options import ClientOptions

USER_CODE = """\
from ferrosmtp import Pool, codec

reveal_type(codec.parse_command(b"NOOP\\r\\n"))
reveal_type(codec.parse_path("<a@b.example>"))
reveal_type(codec.ServerReader().feed(b"EHLO x\\r\\n"))
codec.parse_command(12345)


async def bulk(pool: Pool) -> None:
    await pool.send_message(None, bogus=1)
"""


@pytest.fixture
def snippet(tmp_path: Path) -> Path:
    path = tmp_path / "user_code.py"
    path.write_text(USER_CODE)
    return path


def test_mypy_sees_the_codec_s_classes_and_refuses_wrong_arguments(snippet: Path) -> None:
    out, _, status = mypy_api.run(["--strict", "--no-incremental", str(snippet)])
    assert status == 1, out
    assert 'Revealed type is "ferrosmtp._core.Command"' in out
    assert 'Revealed type is "ferrosmtp._core.Path"' in out
    assert "list[ferrosmtp._core.Command | ferrosmtp._core.Violation" in out
    assert 'Argument 1 to "parse_command" has incompatible type "int"; expected "bytes"' in out
    assert 'Unexpected keyword argument "bogus" for "send_message" of "Pool"' in out
    assert "Any" not in out


def test_pyright_sees_the_codec_s_classes_and_refuses_wrong_arguments(snippet: Path) -> None:
    out = subprocess.run(
        ["pyright", "--pythonpath", sys.executable, "--outputjson", str(snippet)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    messages = [d["message"] for d in json.loads(out.stdout)["generalDiagnostics"]]
    assert 'Type of "codec.parse_command(b"NOOP\\r\\n")" is "Command"' in messages
    assert 'Type of "codec.parse_path("<a@b.example>")" is "Path"' in messages
    assert any('is "list[Command | Violation | Data | DataEnd | Line]"' in m for m in messages)
    assert any('"Literal[12345]" cannot be assigned to parameter "line"' in m for m in messages)
    assert 'No parameter named "bogus"' in messages


def _keywords(function: object) -> dict[str, inspect.Parameter]:
    return {
        name: parameter
        for name, parameter in inspect.signature(function).parameters.items()  # type: ignore[arg-type]
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


@pytest.mark.parametrize("method", ["sendmail", "send_message"])
def test_pool_methods_take_the_client_s_keywords(method: str) -> None:
    pool, client = _keywords(getattr(Pool, method)), _keywords(getattr(Client, method))
    assert pool == client


def test_pool_takes_the_client_s_options() -> None:
    assert set(ClientOptions.__annotations__) == set(_keywords(Client.__init__))


def test_public_api_is_typed_and_documented() -> None:
    """``pyright --verifytypes``: what users' type checkers know of the public API (the
    CI step's floor is 98%), and no public function or class without a docstring."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(root / ".ci" / "verifytypes.py"), "--floor", "98"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
