"""The one error a bad document produces."""

from __future__ import annotations


class DocumentError(Exception):
    """A document (or one of its pages) cannot be read. `str()` is one line: "<name>: <reason>"."""

    def __init__(self, name: str, reason: str, page: int | None = None) -> None:
        self.name = name
        self.reason = " ".join(str(reason).split())  # one line, whatever the library said
        self.page = page
        super().__init__(f"{name}: {self.reason}")
