"""ExtractionSettings validation, table splitting, and no key clashes with any registered encoder."""

from pathlib import Path

import pydantic
import pytest

from milkit.errors import CheckpointError, RecipeError
from milkit.extract.build import build_extraction
from milkit.extract.settings import SETTINGS_KEYS, ExtractionSettings, split_extractor_table


def test_defaults_and_one_target() -> None:
    s = ExtractionSettings()
    assert (s.target_mpp, s.tile_size_px, s.stride, s.min_tissue_fraction) == (0.5, 224, 224, 0.25)
    m = ExtractionSettings(target_magnification=20)
    assert m.target_mpp is None
    assert ExtractionSettings.model_validate(m.model_dump()) == m                # resolved recipe round-trips
    with pytest.raises(pydantic.ValidationError, match="either target_mpp or target_magnification"):
        ExtractionSettings(target_mpp=0.5, target_magnification=20)
    with pytest.raises(pydantic.ValidationError):
        ExtractionSettings(min_tissue_fraction=1.5)


def test_encoder_keys_never_clash_with_settings(registries) -> None:
    assert "color-texture" in registries.extractors
    for name in registries.extractors.names():
        cls = registries.extractors.get(name)
        clash = set(cls.Config.model_fields) & SETTINGS_KEYS
        assert not clash, f"extractor '{name}' config keys {clash} collide with [extractor] settings keys"


def test_split_and_build(registries, tmp_path: Path) -> None:
    table = {"name": "vit", "target_mpp": 1.0, "depth": 1, "embed_dim": 16, "num_heads": 2, "patch_size": 8,
             "img_size": 32}
    settings_kw, enc_kw = split_extractor_table(table)
    assert settings_kw == {"target_mpp": 1.0} and "name" not in enc_kw and enc_kw["depth"] == 1
    enc, settings = build_extraction(table, registries)
    assert settings.target_mpp == 1.0 and enc.feature_dim == 16 and enc.tile_size_px == 32
    with pytest.raises(CheckpointError) as err:
        build_extraction({**table, "weights": "w.pt"}, registries, base_dir=tmp_path)
    assert f"weights file not found: {tmp_path / 'w.pt'}" in str(err.value)      # relative to the recipe


def test_build_reports_every_problem(registries) -> None:
    with pytest.raises(RecipeError) as err:
        build_extraction({"name": "color-texture", "tile_size": 3, "input_px": 1, "reader": "vips"}, registries)
    text = str(err.value)
    assert "did you mean 'tile_size_px'" in text and "input_px" in text and "reader" in text
    assert "3 problem(s)" in text
    with pytest.raises(RecipeError, match="did you mean 'color-texture'"):
        build_extraction({"name": "colour-texture"}, registries)
