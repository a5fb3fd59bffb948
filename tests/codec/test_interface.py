"""The Rust core and its pure twin show users the same interface: the same public names
as ``_core.pyi`` declares, the same parameters, and the same docstrings, so that
``help()`` reads the same whichever backend runs (the core's ``///`` docs are the twin's
docstrings, word for word)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

from ferrosmtp import _core, _pure, codec

STUB = Path(_core.__file__).with_name("_core.pyi")
NAMES = [n for n in _pure.__all__ if n not in ("CodecError", "ReplyError")]


def stub_names() -> list[str]:
    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__":
            return list(ast.literal_eval(node.value))
    raise AssertionError("_core.pyi has no __all__")


def test_both_backends_and_the_stub_have_the_same_names() -> None:
    assert sorted(_pure.__all__) == sorted(stub_names())
    for name in _pure.__all__:
        assert hasattr(_core, name), name
        assert hasattr(codec, name), name


def _parameters(obj: Any) -> list[tuple[str, Any, str]]:
    """Name, kind and default of each parameter; annotations differ (the core has none)
    and a dataclass's empty-container factory is the core's None default."""
    result = []
    for p in inspect.signature(obj).parameters.values():
        if p.name == "self":  # positional-only in a builtin method, not in a Python one
            continue
        default = p.default
        if repr(default) == "<factory>":
            default = None
        result.append((p.name, p.kind, "" if default is p.empty else repr(default)))
    return result


@pytest.mark.parametrize("name", NAMES)
def test_same_parameters(name: str) -> None:
    assert _parameters(getattr(_core, name)) == _parameters(getattr(_pure, name))


def _documented_members(cls: type) -> dict[str, Any]:
    """Public methods and properties of a pure class (its fields are plain values)."""
    members = {}
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, property) or inspect.isfunction(value):
            members[attr] = value
    return members


@pytest.mark.parametrize("name", NAMES)
def test_same_docstrings(name: str) -> None:
    core, pure = getattr(_core, name), getattr(_pure, name)
    assert inspect.getdoc(pure), f"_pure.{name} has no docstring"
    assert inspect.getdoc(core) == inspect.getdoc(pure)
    if isinstance(pure, type):
        for attr in _documented_members(pure):
            pure_doc = inspect.getdoc(getattr(pure, attr))
            assert pure_doc, f"_pure.{name}.{attr} has no docstring"
            assert inspect.getdoc(getattr(core, attr)) == pure_doc, f"{name}.{attr}"
            if callable(getattr(pure, attr)):
                assert _parameters(getattr(core, attr)) == _parameters(getattr(pure, attr))


def test_help_reads_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    """The text of ``help()`` after the signature line (which shows the twin's
    annotations) is the same."""
    help(_core.parse_command)
    core = capsys.readouterr().out.splitlines()
    help(_pure.parse_command)
    pure = capsys.readouterr().out.splitlines()
    assert any(line.startswith("parse_command(line, *, smtputf8=False)") for line in core)
    body = lambda lines: [line for line in lines if line.startswith("    ")]  # noqa: E731
    assert body(core) == body(pure) and len(body(core)) > 3


def test_the_stub_carries_the_same_docstrings() -> None:
    """_core.pyi is what editors show for ``codec.*``: its docstrings are the twin's."""
    tree = ast.parse(STUB.read_text())
    seen = 0
    for node in tree.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)) or node.name not in NAMES:
            continue
        pure = getattr(_pure, node.name)
        assert ast.get_docstring(node) == inspect.getdoc(pure), node.name
        seen += 1
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name in _documented_members(pure):
                    expected = inspect.getdoc(getattr(pure, item.name))
                    assert ast.get_docstring(item) == expected, f"{node.name}.{item.name}"
    assert seen == len(NAMES)
