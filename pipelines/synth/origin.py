"""How a document made by `doctriage synth` can be told from any other: the PDF's Creator.

Both writers of the corpus (reportlab for born-digital documents, Pillow for scanned-looking ones)
set the same Creator, so a model trained on the synthetic corpus can warn when it is pointed at
documents from elsewhere. Reading it opens the PDF's trailer and info dictionary only.
"""

from __future__ import annotations

from typing import BinaryIO

SYNTH_CREATOR = "doctriage synth"

# Far above any synth document (a few hundred KB), far below the ingest limit: a huge file is
# not read whole just to look at one metadata field.
_MAX_BYTES = 64 * 1024 * 1024


def made_by_synth(stream: BinaryIO, name: str) -> bool:
    """Whether the document in `stream` is a PDF whose Creator is `doctriage synth`; False for
    images, other PDFs and anything unreadable."""
    from pipelines.errors import DocumentError
    from pipelines.pdf import PDFIUM_LOCK, open_pdf
    from pipelines.sniff import open_source

    try:
        source = open_source(stream, name, _MAX_BYTES)
        if source.kind != "pdf":
            return False
        with PDFIUM_LOCK:  # pdfium is not thread-safe
            doc = open_pdf(source)
            try:
                return bool(doc.get_metadata_value("Creator") == SYNTH_CREATOR)
            finally:
                doc.close()
    except (DocumentError, OSError):
        return False
