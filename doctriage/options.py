"""Where the settings meet the pipelines' option objects (pipelines never read the settings)."""

from __future__ import annotations

from doctriage.settings import Settings
from pipelines.options import IngestOptions


def ingest_options(settings: Settings, **overrides: object) -> IngestOptions:
    """IngestOptions from the settings; keyword overrides that are not None win (CLI flags)."""
    values: dict[str, object] = {
        "ocr_mode": settings.ocr_mode,
        "dpi": settings.dpi,
        "ocr_dpi": settings.ocr_dpi,
        "ocr_timeout_s": settings.ocr_timeout_s,
        "ocr_lang": settings.ocr_lang,
        "min_ocr_conf": settings.min_ocr_conf,
        "max_pages": settings.max_pages,
        "max_page_pixels": settings.max_page_pixels,
        "max_page_words": settings.max_page_words,
        "max_file_bytes": settings.max_file_bytes,
        "max_image_pixels": settings.max_image_pixels,
        "max_page_objects": settings.max_page_objects,
        "max_parse_mb": settings.max_parse_mb,
        "max_artifact_bytes": settings.max_artifact_bytes,
        "max_ingest_s": settings.max_ingest_s,
        "min_text_coverage": settings.min_text_coverage,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return IngestOptions(**values)  # type: ignore[arg-type]
