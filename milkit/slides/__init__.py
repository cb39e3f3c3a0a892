"""Whole-slide image readers behind one interface (OpenSlide, cuCIM, tifffile/Pillow, DICOM)."""

from milkit.slides.base import SlideReader, slide_id_from_path
from milkit.slides.open import READERS, SLIDE_SUFFIXES, open_slide

__all__ = ["READERS", "SLIDE_SUFFIXES", "SlideReader", "open_slide", "slide_id_from_path"]
