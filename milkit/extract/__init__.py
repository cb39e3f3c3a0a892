"""Slides -> per-slide feature files: settings, tissue segmentation, tiling, the extraction pipeline."""

from milkit.extract.pipeline import extract_slides, extract_slides_multi
from milkit.extract.report import ExtractionSummary
from milkit.extract.settings import ExtractionSettings, split_extractor_table

__all__ = ["ExtractionSettings", "ExtractionSummary", "extract_slides", "extract_slides_multi", "split_extractor_table"]
