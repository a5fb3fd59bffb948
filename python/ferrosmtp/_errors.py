"""Exceptions shared by both codec backends.

They live in plain Python so that ``except CodecError`` catches the same class whichever
backend is active: the Rust core imports this module and raises these very classes (a
PyO3 class cannot subclass ``ValueError`` under the abi3 limited API before 3.12).
"""

from __future__ import annotations


class CodecError(ValueError):
    """Input the codec refuses, with the SMTP reply a server should send for it.

    ``code`` is the basic reply code (e.g. 501), ``enhanced`` the RFC 3463 enhanced status
    code (e.g. ``"5.5.4"``) and ``text`` the human-readable reply text.
    """

    code: int
    enhanced: str
    text: str

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(code, enhanced, text)
        self.code = code
        self.enhanced = enhanced
        self.text = text

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    def __repr__(self) -> str:
        return f"CodecError({self.code!r}, {self.enhanced!r}, {self.text!r})"


class ReplyError(ValueError):
    """A server reply that breaks the RFC 5321 §4.2 grammar or the reader's bounds.

    The connection it came from is out of step and must be closed.
    """
