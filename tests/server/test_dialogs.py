"""Every dialog file, byte for byte, against ServerConnection and against a live server,
for both codec backends."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.server.dialog import all_dialogs, expected, load, run_live, run_sansio

DIALOGS = all_dialogs()


@pytest.mark.parametrize("path", DIALOGS, ids=[p.stem for p in DIALOGS])
def test_dialog_sansio(codec: ModuleType, path: Path) -> None:
    dialog = load(path)
    assert run_sansio(dialog, codec) == expected(dialog)


@pytest.mark.parametrize("path", DIALOGS, ids=[p.stem for p in DIALOGS])
def test_dialog_live(codec: ModuleType, path: Path) -> None:
    dialog = load(path)
    assert run_live(dialog, codec) == expected(dialog)


def test_there_are_dialogs() -> None:
    assert len(DIALOGS) >= 15
