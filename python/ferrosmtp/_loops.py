"""Which event loop to run on: uvloop when it is installed (``auto``), or asyncio's own.

One rule for ``ferrosmtp serve --loop`` and ``Controller(loop=...)``, which own their loop.
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Literal

__all__ = ["LOOP_CHOICES", "LoopChoice", "new_event_loop", "uvloop_module"]

LoopChoice = Literal["auto", "asyncio", "uvloop"]
LOOP_CHOICES: tuple[LoopChoice, ...] = ("auto", "asyncio", "uvloop")


def uvloop_module(choice: str) -> ModuleType | None:
    """uvloop for ``auto`` (when installed) and ``uvloop``; None for asyncio's own loop.

    Raises ValueError for another choice, and ImportError for ``uvloop`` when it is not
    installed (``pip install uvloop``)."""
    if choice not in LOOP_CHOICES:
        raise ValueError(f"the event loop must be one of {', '.join(LOOP_CHOICES)}: {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        if choice == "uvloop":
            raise ImportError("the uvloop event loop needs: pip install uvloop") from None
        return None
    module: ModuleType = uvloop
    return module


def new_event_loop(choice: str = "auto") -> asyncio.AbstractEventLoop:
    """A new event loop of the kind ``choice`` names (``uvloop_module``'s rule)."""
    uvloop = uvloop_module(choice)
    if uvloop is None:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
