"""Find out what a source is (by its first bytes, never by its name) and enforce the size limit."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from pipelines.errors import DocumentError

Kind = Literal["pdf", "tiff", "png", "jpeg"]
HEAD_BYTES = 1024  # the PDF header may legally sit anywhere in the first 1024 bytes


def detect_kind(head: bytes) -> Kind | None:
    """The document kind from its leading bytes, or None when it is none we read."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):  # classic and BigTIFF
        return "tiff"
    if b"%PDF-" in head[:HEAD_BYTES]:
        return "pdf"
    return None


@dataclass
class OpenedDocument:
    """A readable document: `data` is a path (read lazily by the decoders) or a seekable stream
    positioned at its start."""

    name: str
    kind: Kind
    data: Path | BinaryIO
    size: int

    def tail(self, n: int) -> bytes:
        """The last n bytes (to check a PDF ends where it should)."""
        if isinstance(self.data, Path):
            with open(self.data, "rb") as fh:
                fh.seek(max(0, self.size - n))
                return fh.read()
        pos = self.data.tell()
        try:
            self.data.seek(max(0, self.size - n))
            return self.data.read()
        finally:
            self.data.seek(pos)


def source_name(source: str | Path | BinaryIO, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, str | Path):
        return str(source)
    return str(getattr(source, "name", None) or "<stream>")


def open_source(source: str | Path | BinaryIO, name: str, max_file_bytes: int) -> OpenedDocument:
    """Check existence, size and kind; raise DocumentError with a plain reason otherwise."""
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DocumentError(name, "no such file") from None
        except OSError as exc:
            raise DocumentError(name, f"cannot read file ({exc.strerror or exc})") from None
        if path.is_dir():
            raise DocumentError(name, "is a directory, not a document")
        _check_size(name, size, max_file_bytes)
        try:
            with open(path, "rb") as fh:
                head = fh.read(HEAD_BYTES)
        except OSError as exc:
            raise DocumentError(name, f"cannot read file ({exc.strerror or exc})") from None
        return OpenedDocument(name, _kind_or_error(name, head), path, size)

    stream = _seekable_from_start(source, name, max_file_bytes)
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    _check_size(name, size, max_file_bytes)
    head = stream.read(HEAD_BYTES)
    stream.seek(0)
    return OpenedDocument(name, _kind_or_error(name, head), stream, size)


def _seekable_from_start(stream: BinaryIO, name: str, max_file_bytes: int) -> BinaryIO:
    """Decoders need random access from offset 0; copy (bounded) what does not offer it."""
    try:
        if stream.seekable() and stream.tell() == 0:
            return stream
    except (AttributeError, OSError, ValueError):
        pass
    data = stream.read(max_file_bytes + 1)
    _check_size(name, len(data), max_file_bytes)
    return io.BytesIO(data)


def _check_size(name: str, size: int, max_file_bytes: int) -> None:
    if size == 0:
        raise DocumentError(name, "empty file (0 bytes)")
    if size > max_file_bytes:
        raise DocumentError(
            name, f"file too large ({size} bytes; the limit is {max_file_bytes} bytes)"
        )


def _kind_or_error(name: str, head: bytes) -> Kind:
    kind = detect_kind(head)
    if kind is None:
        raise DocumentError(
            name, f"not a PDF, TIFF, PNG or JPEG file (it starts with {head[:8]!r})"
        )
    return kind
