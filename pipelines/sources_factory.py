"""One call from a command line argument to a source: local files/folders, or an S3 prefix."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO

from pipelines.sources import DocumentRef, DocumentSource, LocalSource, open_uri

if TYPE_CHECKING:  # pipelines.s3 loads boto3: imported below only for s3:// targets
    from pipelines.s3 import S3Options


class ChainSource:
    """Several sources as one: iterate each in turn; open by the uri's scheme."""

    def __init__(self, sources: Sequence[DocumentSource]) -> None:
        self.sources = list(sources)

    def __iter__(self) -> Iterator[DocumentRef]:
        for source in self.sources:
            yield from source

    def screen(self, refs: Sequence[DocumentRef]) -> list[DocumentRef]:
        """Each source screens its own refs and passes the others through."""
        out = list(refs)
        for source in self.sources:
            out = source.screen(out)
        return out

    def open(self, uri: str) -> BinaryIO:
        return open_uri(uri)


def source_for(targets: str | Sequence[str], s3: S3Options | None = None, *,
               follow_symlinks: bool = False) -> DocumentSource:
    """``s3://bucket/prefix`` targets become S3 sources (and s3:// URIs become openable in
    this process), everything else local files or folders. A bad s3 uri raises S3SourceError
    (a FileNotFoundError) here, an unlistable bucket or a missing path raises it from
    iteration, like LocalSource. ``follow_symlinks``
    lets local folders yield symlinks that resolve outside them (LocalSource)."""
    items = [targets] if isinstance(targets, str) else list(targets)
    s3_targets = [t for t in items if t.startswith("s3://")]
    local = [t for t in items if not t.startswith("s3://")]
    sources: list[DocumentSource] = []
    if s3_targets:
        from pipelines.s3 import (
            S3Options,
            S3Source,
            S3SourceError,
            S3UriError,
            make_client,
            register_s3_opener,
        )

        options = s3 or S3Options()
        register_s3_opener(options)
        client = make_client(options)
        try:
            sources += [S3Source(t, client, options) for t in s3_targets]
        except S3UriError as exc:
            raise S3SourceError(str(exc)) from None
    if local:
        sources.append(LocalSource(local, follow_symlinks=follow_symlinks))
    return sources[0] if len(sources) == 1 else ChainSource(sources)
