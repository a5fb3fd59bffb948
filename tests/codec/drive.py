"""Drive a ServerReader the way a protocol would, and normalize what comes out.

Normalized items are plain tuples, so items of the Rust core and of the pure twin can be
compared, and adjacent Data items are merged, so feeds of different chunkings compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

Norm = tuple[Any, ...]


def norm_path(p: Any) -> Norm | None:
    if p is None:
        return None
    return (p.local_part, p.domain, tuple(p.source_route))


def norm_violation(v: Any) -> Norm | None:
    if v is None:
        return None
    return ("violation", v.kind, v.code, v.enhanced, v.text, v.fatal)


def norm_item(item: Any) -> Norm:
    name = type(item).__name__
    if name == "Command":
        return (
            "command",
            item.verb,
            item.arg,
            norm_path(item.path),
            tuple(item.params.items()),
            item.chunk_size,
            item.last,
        )
    if name == "Violation":
        return norm_violation(item)  # type: ignore[return-value]
    if name == "Data":
        return ("data", item.data)
    if name == "DataEnd":
        return (
            "end",
            item.last,
            item.size,
            item.bare_lf,
            item.bare_cr,
            norm_violation(item.violation),
        )
    if name == "Line":
        return ("line", item.data)
    raise AssertionError(f"unexpected item {item!r}")


def normalize(items: Iterable[Any]) -> list[Norm]:
    out: list[Norm] = []
    for item in items:
        n = norm_item(item)
        if n[0] == "data" and out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + n[1])
        elif n[0] == "data" and not n[1]:
            continue
        else:
            out.append(n)
    return out


def drive(codec: ModuleType, chunks: Sequence[bytes], **options: Any) -> list[Norm]:
    """Feed ``chunks`` and answer every pause as an accepting server would: DATA gets its
    354 (expect_data), AUTH reads one line then returns to commands, STARTTLS is refused
    (expect_command), QUIT ends the dialog."""
    reader = codec.ServerReader(**options)
    items: list[Any] = []

    def settle(new: list[Any]) -> bool:
        """Record items, resolve pauses; False once the dialog is over."""
        while True:
            items.extend(new)
            if reader.mode == "closed":
                return False
            if reader.mode != "paused":
                return True
            last = items[-1]
            name = type(last).__name__
            if name == "Command" and last.verb == "QUIT":
                return False
            if name == "Command" and last.verb == "DATA":
                new = reader.expect_data()
            elif name == "Command" and last.verb == "AUTH":
                new = reader.expect_line()
            else:  # STARTTLS refused, an AUTH line read, or an overlong AUTH line
                new = reader.expect_command()

    for chunk in chunks:
        if not settle(reader.feed(chunk)):
            break
    return normalize(items)


def splits(stream: bytes) -> Iterable[list[bytes]]:
    """The stream whole, cut at every point, and in 1-byte chunks."""
    yield [stream]
    for i in range(1, len(stream)):
        yield [stream[:i], stream[i:]]
    yield [stream[i : i + 1] for i in range(len(stream))]
