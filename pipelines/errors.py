"""The one error a bad document produces, and the one way an error becomes one line."""

from __future__ import annotations

import unicodedata

# Characters that break a line or a terminal: C0/C1 controls, line and paragraph separators.
_CONTROL = frozenset({"Cc", "Zl", "Zp"})


def one_line(text: object) -> str:
    r"""`text` with every control character escaped as repr() writes it (a newline becomes
    ``\n``, ESC ``\x1b``), so a file name can never split an error or a summary line."""
    return "".join(
        repr(c)[1:-1] if unicodedata.category(c) in _CONTROL else c for c in str(text)
    )


class DocumentError(Exception):
    """A document (or one of its pages) cannot be read. `str()` is one line: "<name>: <reason>"."""

    def __init__(self, name: str, reason: str, page: int | None = None) -> None:
        self.name = name
        # one line, whatever the library said (or the file is called)
        self.reason = one_line(" ".join(str(reason).split()))
        self.page = page
        super().__init__(f"{one_line(name)}: {self.reason}")
