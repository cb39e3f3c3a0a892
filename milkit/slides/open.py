"""Open a slide with the right backend: ``open_slide(path, reader="auto")``."""

from pathlib import Path
from typing import Literal, get_args

from milkit.errors import DataError
from milkit.slides.base import SlideReader
from milkit.slides.image_reader import PIL_SUFFIXES, TIFF_SUFFIXES
from milkit.slides.tiff_tiles_reader import VENDORS as TILED_TIFF_VENDORS
from milkit.slides.tiff_tiles_reader import TiffTilesReader

ReaderName = Literal["auto", "tiff-tiles", "openslide", "cucim", "tifffile", "pillow", "dicom"]
READERS: tuple[str, ...] = get_args(ReaderName)
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".dcm", ".czi",
                  *TIFF_SUFFIXES, *PIL_SUFFIXES)
"""File endings treated as slides when a folder is given."""


def open_slide(path: Path | str, *, reader: str = "auto", mpp_override: float | None = None) -> SlideReader:
    """Open ``path`` for reading.

    ``reader="auto"`` uses OpenSlide when it recognises the file, decoding the tiles itself
    (``tiff-tiles``) for Aperio SVS and generic tiled TIFF; then tifffile (other TIFF), Pillow
    (PNG/JPEG) or pydicom (DICOM the OpenSlide driver rejects).

    Args:
        path: the slide file.
        reader: one of ``auto``, ``tiff-tiles``, ``openslide``, ``cucim``, ``tifffile``, ``pillow``, ``dicom``.
        mpp_override: level-0 micrometres per pixel to use instead of the file's value.

    Raises:
        DataError: the file is missing or no backend can read it (the message says which were tried).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"slide not found: {path}")
    if reader not in READERS:
        raise DataError(f"unknown reader '{reader}'; choose one of {', '.join(READERS)}")
    if reader == "openslide":
        from milkit.slides.openslide_reader import OpenSlideReader

        return OpenSlideReader(path, mpp_override=mpp_override)
    if reader == "tiff-tiles":
        return TiffTilesReader(path, mpp_override=mpp_override)
    if reader == "cucim":
        from milkit.slides.cucim_reader import CuCIMReader

        return CuCIMReader(path, mpp_override=mpp_override)
    if reader in ("tifffile", "pillow"):
        from milkit.slides.image_reader import ImageReader

        return ImageReader(path, mpp_override=mpp_override)
    if reader == "dicom":
        from milkit.slides.dicom_reader import DicomReader

        return DicomReader(path, mpp_override=mpp_override)
    return _auto(path, mpp_override)


def _auto(path: Path, mpp_override: float | None) -> SlideReader:
    import openslide

    from milkit.slides.openslide_reader import OpenSlideReader

    tried: list[str] = []
    name = path.name.lower()
    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except Exception:
        vendor = None
    if vendor in TILED_TIFF_VENDORS:
        try:
            return TiffTilesReader(path, mpp_override=mpp_override)
        except DataError:
            pass                                # OpenSlide alone below, which reports its own error
    if vendor is not None:
        try:
            return OpenSlideReader(path, mpp_override=mpp_override)
        except DataError as exc:
            tried.append(str(exc))
            if not name.endswith(".dcm"):
                raise
    if name.endswith(".dcm"):
        from milkit.slides.dicom_reader import DicomReader

        try:
            return DicomReader(path, mpp_override=mpp_override)
        except DataError as exc:
            raise DataError(f"{exc}; {tried[0] if tried else 'OpenSlide does not detect the format'}") from exc
    if name.endswith(TIFF_SUFFIXES + PIL_SUFFIXES):
        from milkit.slides.image_reader import ImageReader

        return ImageReader(path, mpp_override=mpp_override)
    if name.endswith(SLIDE_SUFFIXES):
        raise DataError(f"OpenSlide cannot read {path}: not a valid {path.suffix} slide (the file may be "
                        f"truncated or corrupt; {path.stat().st_size} bytes)")
    raise DataError(
        f"no reader recognises {path} ({'; '.join(tried) or 'OpenSlide does not detect the format'}); "
        "supported: OpenSlide formats (svs, ndpi, mrxs, scn, tiff, dcm, ...), plain TIFF, PNG/JPEG"
    )
