"""Extraction settings: the keys of a recipe's ``[extractor]`` table that are not the encoder's own."""

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from milkit.config import ComponentConfig
from milkit.extract.annotations import AnnotationMode, AnnotationRule, MissingAnnotations
from milkit.extract.segmentation import SegmentationParams
from milkit.extract.stain import StainMethod
from milkit.slides.open import ReaderName


class ExtractionSettings(ComponentConfig):
    """How tiles are cut from slides. These keys sit flat in ``[extractor]`` beside ``name`` and the
    encoder's config keys (which must therefore use other names)."""

    target_mpp: float | None = Field(
        0.5, gt=0, description="Tile resolution in micrometres per pixel (0.5 ~ 20x).")
    target_magnification: float | None = Field(
        None, gt=0, description="Tile resolution as a magnification (e.g. 20); replaces target_mpp.")
    tile_size_px: int = Field(224, ge=8, description="Tile side in pixels at the target resolution.")
    stride_px: int | None = Field(
        None, ge=1, description="Grid step at the target resolution (default: tile_size_px).")
    min_tissue_fraction: float = Field(
        0.25, ge=0, le=1, description="Keep tiles at least this much covered by tissue.")
    mpp_override: float | None = Field(
        None, gt=0, description="Level-0 mpp used for every slide instead of the file's (for slides without one).")
    reader: ReaderName = Field(
        "auto", description="Slide reader backend; auto = OpenSlide's metadata with tiles decoded by tifffile "
                            "(SVS, tiled TIFF) or OpenSlide's own reads, else tifffile/Pillow/pydicom.")
    batch_size: int = Field(64, ge=1, description="Tiles per encoder batch.")
    num_workers: int | None = Field(
        None, ge=0, description="Reader processes (None = auto: GPU one per core but one, up to 8; CPU one per "
                                "4 cores, up to 4).")
    block_tiles: int = Field(4, ge=1, le=32, description="Read regions of block_tiles x block_tiles tiles at once.")
    save_fp16: bool = Field(False, description="Store features as float16 (half the disk).")
    compile: bool = Field(False, description="torch.compile each encoder first (worth it on a GPU for large cohorts; "
                                             "the first batches wait for the compilation).")
    stain: StainMethod = Field(
        "none", description="Stain normalisation of every tile, batched on the encoder's device before its own "
                            "normalisation: none, macenko, reinhard or vahadane.")
    stain_target: Path | None = Field(
        None, description="Image (PNG/JPEG/TIFF tile) whose stain the tiles are normalised to (relative to the "
                          "recipe's folder); default: the built-in reference.")
    seg_downsample: float = Field(64.0, ge=1, description="Segmentation resolution: level-0 px per mask px (at most).")
    seg_sthresh: int = Field(8, ge=0, le=255, description="Saturation threshold for tissue (CLAM sthresh).")
    seg_use_otsu: bool = Field(False, description="Otsu threshold on saturation instead of seg_sthresh.")
    seg_median_blur: int = Field(7, ge=1, description="Median blur kernel (odd) before thresholding (CLAM mthresh).")
    seg_close_px: int = Field(4, ge=0, description="Morphological closing kernel size; 0 = off (CLAM close).")
    seg_min_area: float = Field(4.0, ge=0, description="Drop tissue pieces under this many tile areas (CLAM a_t).")
    seg_min_hole_area: float = Field(2.0, ge=0, description="Ignore holes under this many tile areas (CLAM a_h).")
    seg_max_holes: int = Field(8, ge=0, description="Holes kept per tissue piece, largest first (CLAM max_n_holes).")
    annotations: Path | None = Field(
        None, description="Folder of QuPath GeoJSON exports, one per slide (<slide_id>.geojson or <slide file "
                          "name>.geojson): tiles come only from the annotated regions (see annotations_mode).")
    annotations_mode: AnnotationMode = Field(
        "inside", description="inside = tiles inside the selected regions; outside = tiles outside them.")
    annotations_include: list[str] = Field(
        [], description="QuPath classes (properties.classification.name) whose regions are selected; "
                        "empty = every annotation.")
    annotations_exclude: list[str] = Field(
        [], description="QuPath classes whose regions are always carved out (e.g. Necrosis, Pen).")
    annotations_min_fraction: float = Field(
        0.5, ge=0, le=1, description="Keep tiles at least this much inside the allowed region (0 = any overlap, "
                                     "1 = wholly inside).")
    annotations_missing: MissingAnnotations = Field(
        "skip", description="A slide without an annotation file: skip (reported) or tissue (tile its tissue).")

    @model_validator(mode="after")
    def _one_target(self) -> "ExtractionSettings":
        if self.target_magnification is not None:
            if "target_mpp" in self.model_fields_set and self.target_mpp is not None:
                raise ValueError("set either target_mpp or target_magnification, not both")
            object.__setattr__(self, "target_mpp", None)
        elif self.target_mpp is None:
            raise ValueError("set target_mpp (e.g. 0.5) or target_magnification (e.g. 20)")
        rule_keys = sorted(k for k, f in type(self).model_fields.items()
                           if k.startswith("annotations_") and getattr(self, k) != f.default)
        if self.annotations is None and rule_keys:
            raise ValueError(f"{', '.join(rule_keys)} need annotations = \"folder/\" (QuPath GeoJSON exports, one "
                             "per slide)")
        if self.stain_target is not None and self.stain == "none":
            raise ValueError("stain_target needs stain = \"macenko\", \"reinhard\" or \"vahadane\"")
        both = sorted(set(self.annotations_include) & set(self.annotations_exclude))
        if both:
            raise ValueError(f"classes both in annotations_include and annotations_exclude: {', '.join(both)}")
        return self

    @property
    def stride(self) -> int:
        return self.stride_px or self.tile_size_px

    def annotation_rule(self) -> AnnotationRule | None:
        """How annotations restrict tiling, or None without ``annotations``."""
        if self.annotations is None:
            return None
        return AnnotationRule(self.annotations_mode, tuple(self.annotations_include),
                              tuple(self.annotations_exclude), self.annotations_min_fraction)

    def segmentation_params(self) -> SegmentationParams:
        return SegmentationParams(
            downsample=self.seg_downsample, sthresh=self.seg_sthresh, use_otsu=self.seg_use_otsu,
            median_blur=self.seg_median_blur, close_px=self.seg_close_px, min_area=self.seg_min_area,
            min_hole_area=self.seg_min_hole_area, max_holes=self.seg_max_holes,
        )


SETTINGS_KEYS = frozenset(ExtractionSettings.model_fields)


def split_extractor_table(table: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an ``[extractor]`` table (minus ``name``) into (extraction settings, encoder config) keys."""
    rest = {k: v for k, v in table.items() if k != "name"}
    return ({k: v for k, v in rest.items() if k in SETTINGS_KEYS},
            {k: v for k, v in rest.items() if k not in SETTINGS_KEYS})
