"""The one error a bad document produces, and the one way an error becomes one line."""

from __future__ import annotations

import unicodedata

# Characters that break a line or a terminal: C0/C1 controls, line and paragraph separators;
# and lone surrogates, which no encoder accepts.
_CONTROL = frozenset({"Cc", "Zl", "Zp", "Cs"})


def _escape(c: str) -> str:
    if "\udc80" <= c <= "\udcff":  # a file name's undecodable byte (os.fsdecode): show the byte
        return f"\\x{ord(c) - 0xDC00:02x}"
    return repr(c)[1:-1]


def one_line(text: object) -> str:
    r"""`text` with every control character escaped as repr() writes it (a newline becomes
    ``\n``, ESC ``\x1b``), so a file name can never split an error or a summary line. Lone
    surrogates are escaped too (a non-UTF-8 file name's byte 0xE9 becomes ``\xe9``): they
    cannot be printed, encoded or stored in PostgreSQL text."""
    return "".join(
        _escape(c) if unicodedata.category(c) in _CONTROL else c for c in str(text)
    )


class DocumentError(Exception):
    """A document (or one of its pages) cannot be read. `str()` is one line: "<name>: <reason>"."""

    def __init__(self, name: str, reason: str, page: int | None = None) -> None:
        self.name = name
        # one line, whatever the library said (or the file is called)
        self.reason = one_line(" ".join(str(reason).split()))
        self.page = page
        super().__init__(f"{one_line(name)}: {self.reason}")
