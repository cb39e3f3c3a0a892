"""DICOM VL Whole Slide Microscopy fallback (pydicom) for files OpenSlide rejects.

Reads every VOLUME instance of the file's series found in the same folder as one pyramid
level. Frames are decoded on demand (JPEG via Pillow, others via imagecodecs) and cached.
"""

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from milkit.errors import DataError
from milkit.slides.base import SlideReader


def _decode(frame: bytes, syntax: str) -> np.ndarray:
    if syntax in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"):
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(frame)).convert("RGB"))
    import imagecodecs

    return np.asarray(imagecodecs.imread(frame))


class _Level:
    """One DICOM instance: its frames, their grid positions, and a decoded-frame cache."""

    def __init__(self, path: Path, ds: Any) -> None:
        from pydicom.encaps import generate_frames

        self.path = path
        self.width, self.height = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
        self.fw, self.fh = int(ds.Columns), int(ds.Rows)
        self.cols, self.rows = -(-self.width // self.fw), -(-self.height // self.fh)
        n = int(getattr(ds, "NumberOfFrames", 1))
        self.syntax = str(ds.file_meta.TransferSyntaxUID)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            self.frames: list[Any] = list(generate_frames(ds.PixelData, number_of_frames=n))
        else:
            arr = ds.pixel_array.reshape(n, self.fh, self.fw, -1)
            self.frames = [arr[i] for i in range(n)]
        self.cache: dict[int, np.ndarray] = {}
        self.positions = self._positions(ds, n)

    def _positions(self, ds: Any, n: int) -> dict[tuple[int, int], int]:
        per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
        if getattr(ds, "DimensionOrganizationType", "") != "TILED_FULL" and per_frame:
            pos = {}
            for i, item in enumerate(per_frame):
                p = item.PlanePositionSlideSequence[0]
                c, r = int(p.ColumnPositionInTotalImagePixelMatrix), int(p.RowPositionInTotalImagePixelMatrix)
                pos[((r - 1) // self.fh, (c - 1) // self.fw)] = i
            return pos
        row_major = {(i // self.cols, i % self.cols): i for i in range(n)}
        if getattr(ds, "DimensionOrganizationType", "") == "TILED_FULL" or n != self.rows * self.cols:
            return row_major
        col_major = {(i % self.rows, i // self.rows): i for i in range(n)}
        return row_major if self._seams(row_major) <= self._seams(col_major) else col_major

    def _seams(self, pos: dict[tuple[int, int], int]) -> float:
        """Mean jump across horizontal frame borders: small when the frame order is right."""
        diffs = []
        for (r, c), i in list(pos.items())[:64]:
            j = pos.get((r, c + 1))
            if j is not None and c + 1 < self.cols - 1:
                a, b = self.frame(i)[:, -1].astype(float), self.frame(j)[:, 0].astype(float)
                diffs.append(np.abs(a - b).mean())
        return float(np.mean(diffs)) if diffs else 0.0

    def frame(self, i: int) -> np.ndarray:
        if i not in self.cache:
            img = _decode(self.frames[i], self.syntax) if isinstance(self.frames[i], bytes) else self.frames[i]
            self.cache[i] = np.ascontiguousarray(img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, -1))
        return self.cache[i]


class DicomReader(SlideReader):
    """DICOM WSI via pydicom (optional dependency: ``pip install pydicom``)."""

    backend = "dicom"

    def __init__(self, path: Path | str, *, mpp_override: float | None = None) -> None:
        super().__init__(path)
        try:
            import pydicom
        except ImportError as exc:
            raise DataError(f"{self.path}: reading this DICOM file needs pydicom (`pip install pydicom`)") from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(self.path)
                datasets = [(self.path, ds)] + self._siblings(pydicom, ds)
                levels = [_Level(p, d) for p, d in datasets]
            except Exception as exc:
                raise DataError(f"pydicom cannot read {self.path} as a tiled DICOM WSI: {exc}") from exc
        self._levels = sorted(levels, key=lambda lv: -lv.width)
        self.level_dimensions = tuple((lv.width, lv.height) for lv in self._levels)
        self.level_downsamples = tuple(self._levels[0].width / lv.width for lv in self._levels)
        self._set_mpp(*self._mpp(ds, self.path), mpp_override)
        self.magnification = None

    def _siblings(self, pydicom: Any, ds: Any) -> list[tuple[Path, Any]]:
        out = []
        for p in sorted(self.path.parent.glob("*.dcm")):
            if p.resolve() == self.path.resolve():
                continue
            try:
                d = pydicom.dcmread(p)
            except Exception:
                continue
            kinds = set(getattr(d, "ImageType", []) or [])
            same_series = d.get("SeriesInstanceUID") == ds.get("SeriesInstanceUID")
            if same_series and not kinds & {"LABEL", "OVERVIEW", "THUMBNAIL"}:
                out.append((p, d))
        return out

    @staticmethod
    def _mpp(ds: Any, path: Path) -> tuple[float | None, str]:
        try:
            spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
            return float(spacing[1]) * 1000.0, "the DICOM PixelSpacing"
        except (AttributeError, IndexError, KeyError):
            pass
        w, h = ds.get("ImagedVolumeWidth"), ds.get("ImagedVolumeHeight")
        if w and h:
            mx, my = 1000.0 * float(w) / ds.TotalPixelMatrixColumns, 1000.0 * float(h) / ds.TotalPixelMatrixRows
            if abs(mx - my) <= 0.02 * mx:  # inconsistent volume sizes are unreliable
                return (mx + my) / 2, "the DICOM ImagedVolumeWidth/Height"
        return None, "the DICOM header (no PixelSpacing; ImagedVolume size missing or inconsistent)"

    def _read(self, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
        lv = self._levels[level]
        ds = self.level_downsamples[level]
        lx, ly = int(round(x0 / ds)), int(round(y0 / ds))
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        for r in range(max(ly // lv.fh, 0), min((ly + h - 1) // lv.fh, lv.rows - 1) + 1):
            for c in range(max(lx // lv.fw, 0), min((lx + w - 1) // lv.fw, lv.cols - 1) + 1):
                i = lv.positions.get((r, c))
                if i is None:
                    continue
                fx0, fy0 = c * lv.fw, r * lv.fh
                ax0, ay0 = max(lx, fx0), max(ly, fy0)
                ax1, ay1 = min(lx + w, fx0 + lv.fw, lv.width), min(ly + h, fy0 + lv.fh, lv.height)
                if ax1 > ax0 and ay1 > ay0:
                    src = lv.frame(i)[ay0 - fy0: ay1 - fy0, ax0 - fx0: ax1 - fx0]
                    out[ay0 - ly: ay1 - ly, ax0 - lx: ax1 - lx] = src
        return out
