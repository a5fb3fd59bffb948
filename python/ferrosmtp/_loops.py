"""Which event loop to run on: uvloop when it is installed (``auto``), or asyncio's own.

One rule for ``ferrosmtp serve --loop`` and ``Controller(loop=...)``, which own their loop.
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Literal

__all__ = [
    "LOOP_CHOICES",
    "LoopChoice",
    "new_event_loop",
    "prime_read_buffers",
    "uvloop_module",
]

LoopChoice = Literal["auto", "asyncio", "uvloop"]
LOOP_CHOICES: tuple[LoopChoice, ...] = ("auto", "asyncio", "uvloop")

# Bigger than the 256 KiB bytes object asyncio's own loop allocates for every recv(), and
# big enough that glibc keeps what a read of message content frees (that buffer and the
# core's copy of the content): glibc gives the heap's free top back to the system past
# twice this size. With 512 KiB, a server reading 1 MiB messages on asyncio's loop shrank
# and regrew its heap 14 times a message (brk calls under strace, each regrowth fresh
# zeroed pages); with 2 MiB, once in 300 messages, and the server took 408 us of CPU a
# message instead of 425 (medians of six interleaved runs of 600 messages, on either loop).
_READ_BUFFER_PRIMER = 2 << 20
_primed = False


def prime_read_buffers() -> None:
    """Make glibc serve asyncio's per-read buffers from the heap, once per process.

    asyncio's own loop (not uvloop) reads with ``sock.recv(256 KiB)``: a new 256 KiB bytes
    object every read, shrunk to what arrived (the server's sockets now read 32 KiB,
    server/reads.py; TLS transports and other protocols still read this way). Above
    glibc's mmap threshold (128 KiB at start) each one costs an mmap, an mremap and an
    munmap; glibc raises the threshold only when it frees a big mmapped block, and these
    are shrunk before they are freed, so whether a process ever escapes depends on what it
    happened to allocate before. Measured with smtp-source on a reused connection, before
    the server's reads were limited: ``ferrosmtp serve --sink --loop asyncio`` ran at
    5,900 or 12,500 msgs/s depending only on how it was launched (its argv[0]), the slow
    one making 3 extra system calls per read. Freeing one block
    bigger than a read buffer raises the threshold above it for good, and the heap's trim
    threshold to twice that (elsewhere than glibc this is one allocation, nothing
    more)."""
    global _primed
    if not _primed:
        _primed = True
        primer = bytes(_READ_BUFFER_PRIMER)  # mmapped by glibc...
        del primer  # ...and freed whole: the threshold rises above its size


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
