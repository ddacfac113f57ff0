"""Where documents come from. A source yields one reference type, ``DocumentRef`` (uri, etag,
sha256), for everything it found, non-documents included (with the reason in ``skip``), and
opens a uri as a binary stream; the store keys documents on (uri, etag or sha256), so a second
drop of the same file is a no-op. Here: local files and folders (``file://`` URIs). Other
sources (S3, ...) implement the same calls and register an opener for their scheme."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote_to_bytes, urlparse

from pipelines.errors import one_line

log = logging.getLogger(__name__)

# What the page pipeline can read; everything else in a folder is ignored.
DOCUMENT_SUFFIXES = frozenset({".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff"})

SYMLINK_OUTSIDE = "symlink leaves the input folder"


@dataclass(frozen=True)
class DocumentRef:
    """One thing a source found: its uri and version (an object store's etag, a file's sha256),
    its size when known, and ``skip``: why it is not a document (recorded SKIPPED with that
    reason, never read), None for a document."""

    uri: str
    etag: str | None = None
    sha256: str | None = None
    size: int | None = None
    skip: str | None = None


class DocumentSource(Protocol):
    """Iterating lists the source (cheap checks only); ``screen`` adds the reasons that need a
    look at the bytes (an S3 key with no known suffix), for the refs the caller does not know
    yet; ``open`` reads one."""

    def __iter__(self) -> Iterator[DocumentRef]: ...

    def screen(self, refs: Sequence[DocumentRef]) -> list[DocumentRef]: ...

    def open(self, uri: str) -> BinaryIO: ...


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def path_to_uri(path: Path) -> str:
    """The path's bytes (os.fsencode), percent-escaped: ASCII whatever the file is called."""
    return path.resolve().as_uri()


def uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"not a local file uri: {uri!r}")
    # Escapes decode to the path's bytes, not to UTF-8 text: a name that is not UTF-8 (Latin-1
    # b"r\xe9sum\xe9.pdf") comes back as the same file (os.fsdecode: surrogateescape).
    return Path(os.fsdecode(unquote_to_bytes(parsed.path)))


class LocalSource:
    """Files and folders (searched recursively, sorted) as ``file://`` URIs with their sha256.

    Explicitly named files are kept whatever their suffix, so a bad input is recorded as a
    failed document rather than skipped silently; folder members are filtered by suffix.
    A folder member that is a symlink resolving outside its folder is neither opened nor
    yielded unless ``follow_symlinks``: it lands in ``skipped`` as ``(uri, reason)`` (the uri
    of the link itself), for the caller to record. A file gone between listing and hashing is
    left out with a warning.
    """

    def __init__(self, paths: Iterable[str | Path], suffixes: frozenset[str] = DOCUMENT_SUFFIXES,
                 *, follow_symlinks: bool = False):
        self.paths = [Path(p) for p in paths]
        self.suffixes = suffixes
        self.follow_symlinks = follow_symlinks
        self.skipped: list[tuple[str, str]] = []

    def files(self) -> list[Path]:
        found: list[Path] = []
        skipped: dict[str, str] = {}
        for p in self.paths:
            if p.is_dir():
                root = p.resolve()
                for f in sorted(p.rglob("*")):
                    if not (f.is_file() and f.suffix.lower() in self.suffixes) or any(
                        part.startswith(".") for part in f.relative_to(p).parts
                    ):
                        continue
                    if not self.follow_symlinks and not f.resolve().is_relative_to(root):
                        skipped[f.absolute().as_uri()] = SYMLINK_OUTSIDE
                        continue
                    found.append(f)
            elif p.is_file():
                found.append(p)
            else:
                raise FileNotFoundError(f"no such file or folder: {p}")
        self.skipped = list(skipped.items())
        for uri, reason in self.skipped:
            log.warning("skipped %s: %s", one_line(uri), reason)
        seen: set[Path] = set()
        unique = []
        for f in found:
            r = f.resolve()
            if r not in seen:
                seen.add(r)
                unique.append(f)
        return unique

    def __iter__(self) -> Iterator[DocumentRef]:
        """The documents (with their sha256), then what was refused (with the reason)."""
        for f in self.files():
            try:
                sha = sha256_file(f)
                size = f.stat().st_size
            except FileNotFoundError:  # deleted (or moved) since it was listed
                log.warning("skipped %s: it is gone (deleted after it was listed)", one_line(f))
                continue
            yield DocumentRef(path_to_uri(f), sha256=sha, size=size)
        for uri, reason in self.skipped:
            yield DocumentRef(uri, skip=reason)

    def screen(self, refs: Sequence[DocumentRef]) -> list[DocumentRef]:
        """Nothing to add: every reason is known from the listing."""
        return list(refs)

    def open(self, uri: str) -> BinaryIO:
        return open(uri_to_path(uri), "rb")


# An opener takes (uri, version): the version a document was registered with (an S3 etag),
# so a store that can check it refuses an object replaced since; None means "as it is now".
Opener = Callable[[str, "str | None"], BinaryIO]

# scheme -> opener; sources for other schemes add themselves with `register_opener`.
_OPENERS: dict[str, Opener] = {"file": lambda uri, _version: LocalSource([]).open(uri)}


def register_opener(scheme: str, opener: Opener) -> None:
    _OPENERS[scheme] = opener


def open_uri(uri: str, version: str | None = None) -> BinaryIO:
    scheme = urlparse(uri).scheme
    opener = _OPENERS.get(scheme)
    if opener is None:
        raise ValueError(f"no source can open {uri!r} (scheme {scheme!r})")
    return opener(uri, version)


def name_of(uri: str) -> str:
    """A short display name for messages: the file name of the uri, decoded; bytes that are not
    UTF-8 shown escaped (``\\xe9``), so the name is always printable and storable."""
    last = urlparse(uri).path.rsplit("/", 1)[-1]
    return unquote_to_bytes(last).decode("utf-8", "backslashreplace") or uri
