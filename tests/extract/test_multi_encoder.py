"""Several encoders in one pass over the tiles (``--extractor a,b``), and every registered encoder
in ``milkit extract`` on a real slide at reduced size."""

import csv
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from milkit.components.extractors.color_texture import ColorTexture, ColorTextureConfig
from milkit.components.extractors.resnet import ResNet50Trunc, ResNetTruncConfig
from milkit.errors import DataError, RecipeError
from milkit.extract.pipeline import extract_slides, extract_slides_multi
from milkit.extract.settings import ExtractionSettings
from milkit.commands.extract import extractor_tables

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "components"))
from test_contracts import REGISTRIES, SMALL_CONFIGS  # noqa: E402  (one table of reduced configs)
from test_extract_command import cli  # noqa: E402

FAST = {"target_mpp": 2.0, "tile_size_px": 32, "num_workers": 0, "seg_min_area": 1.0}  # the synthetic slide
REAL = {"target_mpp": 8.0, "tile_size_px": 32, "seg_min_area": 1.0, "num_workers": 0, "batch_size": 16}
SLIDE = "cmu-1-small-region"  # the smallest real H&E slide with an mpp


def toml_value(v) -> str:
    return json.dumps(list(v) if isinstance(v, tuple) else v)


def read(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with h5py.File(path, "r") as f:
        return f["features"][()], f["coords"][()], dict(f.attrs)


def test_every_encoder_runs_in_milkit_extract_on_a_real_slide(shared_data: Path, tmp_path: Path) -> None:
    """One pass, all registered encoders at reduced depth: each writes its folder, its width, the same tiles."""
    names = REGISTRIES.extractors.names()
    sets = [f"{name}.{key}={toml_value(value)}" for name in names
            for key, value in SMALL_CONFIGS.get(("extractor", name), {}).items()]
    args = ["extract", str(shared_data / "wsi" / f"{SLIDE}.svs"), "--out", str(tmp_path / "o"),
            "--extractor", ",".join(names),
            *[a for s in sets for a in ("--set", s)], *[a for k, v in REAL.items() for a in ("--set", f"{k}={v}")],
            "--no-progress"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    coords = None
    for name in names:
        feats, c, attrs = read(tmp_path / "o" / name / f"{SLIDE}.h5")
        enc = REGISTRIES.extractors.get(name)
        want = enc(enc.Config(**SMALL_CONFIGS.get(("extractor", name), {}))).feature_dim
        assert attrs["extractor"] == name and feats.shape == (len(c), want) and attrs["feature_dim"] == want
        assert np.isfinite(feats).all() and len(c) > 0 and feats.std(0).max() > 0      # tiles differ
        coords = c if coords is None else coords
        np.testing.assert_array_equal(c, coords)                                      # one tiling for all
        rows = list(csv.DictReader(open(tmp_path / "o" / name / "extraction_report.csv")))
        assert [(r["slide_id"], r["status"]) for r in rows] == [(SLIDE, "done")]
    assert (tmp_path / "o" / "segmentation" / f"{SLIDE}.geojson").is_file()
    assert len(names) >= 26


def encoders() -> list:
    torch.manual_seed(0)                                              # the same random weights every call
    return [ColorTexture(ColorTextureConfig(input_px=32)),
            ResNet50Trunc(ResNetTruncConfig(input_px=48, base_width=4, blocks=(1, 1, 1)))]


def test_one_pass_equals_one_run_per_encoder_and_resumes_per_encoder(synthetic_slide: Path, tmp_path: Path) -> None:
    settings = ExtractionSettings(**FAST, batch_size=5)
    multi = extract_slides_multi([synthetic_slide], tmp_path / "m", extractors=encoders(), settings=settings,
                                 progress=False)
    assert set(multi) == {"color-texture", "resnet50-trunc"}
    sid = synthetic_slide.stem
    for enc in encoders():
        alone = extract_slides([synthetic_slide], tmp_path / enc.name, extractor=enc, settings=settings,
                               progress=False)
        assert alone.done == multi[enc.name].done == [sid]
        a, b = read(tmp_path / enc.name / f"{sid}.h5"), read(tmp_path / "m" / enc.name / f"{sid}.h5")
        np.testing.assert_array_equal(a[0], b[0])                     # same features, bit for bit
        np.testing.assert_array_equal(a[1], b[1])
    (tmp_path / "m" / "resnet50-trunc" / f"{sid}.h5").unlink()
    again = extract_slides_multi([synthetic_slide], tmp_path / "m", extractors=encoders(), settings=settings,
                                 progress=False)
    assert again["color-texture"].skipped == [sid] and again["resnet50-trunc"].done == [sid]
    np.testing.assert_array_equal(read(tmp_path / "m" / "resnet50-trunc" / f"{sid}.h5")[0],
                                  read(tmp_path / "resnet50-trunc" / f"{sid}.h5")[0])


def test_a_failing_encoder_fails_the_slide_for_every_encoder(synthetic_slide: Path, tmp_path: Path) -> None:
    class Broken(ColorTexture):
        name = "broken"

        def forward(self, x):
            raise RuntimeError("boom")

    out = extract_slides_multi([synthetic_slide], tmp_path / "m", settings=ExtractionSettings(**FAST),
                               extractors=[encoders()[0], Broken(ColorTextureConfig(input_px=32))], progress=False)
    for summary in out.values():
        assert summary.failed and "the encoder 'broken' failed: RuntimeError: boom" in summary.failed[0][1]
    assert not (tmp_path / "m" / "color-texture" / f"{synthetic_slide.stem}.h5").exists()
    with pytest.raises(DataError, match="each encoder once"):
        extract_slides_multi([synthetic_slide], tmp_path / "x", extractors=[encoders()[0]] * 2,
                             settings=ExtractionSettings(**FAST), progress=False)


def test_set_goes_to_every_encoder_or_to_the_named_one() -> None:
    tables, _ = extractor_tables(None, "uni,conch-v1.5", ["target_mpp=1.0", "conch-v1.5.depth=2",
                                                          "uni.weights=/w/uni.bin", "extractor.batch_size=8"])
    assert tables == [{"name": "uni", "target_mpp": 1.0, "weights": "/w/uni.bin", "batch_size": 8},
                      {"name": "conch-v1.5", "target_mpp": 1.0, "depth": 2, "batch_size": 8}]
    with pytest.raises(RecipeError, match="each encoder once"):
        extractor_tables(None, "uni,uni", [])
    with pytest.raises(RecipeError, match="NAME.KEY=VALUE"):
        extractor_tables(None, "uni,phikon", ["aggregator.dropout=0.1"])


def test_compile_setting_compiles_every_encoder_in_place(monkeypatch: pytest.MonkeyPatch, synthetic_slide: Path,
                                                         tmp_path: Path) -> None:
    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: compiled.append(self.name))
    out = extract_slides_multi([synthetic_slide], tmp_path / "m", extractors=encoders(), progress=False,
                               settings=ExtractionSettings(**FAST, compile=True))
    assert compiled == ["color-texture", "resnet50-trunc"] and all(s.done for s in out.values())
