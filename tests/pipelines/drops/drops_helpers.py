"""Helpers for the drops tests: small PDFs, a ListObjectsV2 request counter."""

from __future__ import annotations

import io
from typing import Any


def make_pdf(text: str, pages: int = 1) -> bytes:
    """A small born-digital PDF with a text layer (reportlab)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    for n in range(pages):
        c.setFont("Helvetica", 14)
        c.drawString(72, 760, f"{text} page {n + 1}")
        c.drawString(72, 730, "Invoice number 12345 total amount due 99.00")
        c.showPage()
    c.save()
    return buf.getvalue()


class ListCounter:
    """Counts ListObjectsV2 requests a client makes (a botocore event hook, not a mock)."""

    def __init__(self, client: Any) -> None:
        self.calls = 0
        client.meta.events.register("before-call.s3.ListObjectsV2", self._hit)

    def _hit(self, **_: Any) -> None:
        self.calls += 1
