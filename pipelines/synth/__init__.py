"""Synthetic labelled corpus of the 16 RVL-CDIP classes as born-digital and scanned-looking PDFs."""

from pipelines.synth.corpus import CLASSES, MANIFEST_COLUMNS, generate_corpus, make_document

__all__ = ["CLASSES", "MANIFEST_COLUMNS", "generate_corpus", "make_document"]
