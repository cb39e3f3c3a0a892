"""THE contract every registered component satisfies (timm's test_models): the conformance kit, run on all.

New components are picked up automatically from the registries (built-ins, no entry-point
autoload). Heavy ones get a small config here, keyed by registered name; a name may be
skipped only with a reason in ``SKIP``.
"""

import importlib.util
from typing import Any

import pytest

from milkit.components.extractors.presets import PRESETS
from milkit.plugins import get_plugin_manager
from milkit.registry import Registries, build_registries
from milkit.testing import check_aggregator, check_extractor, check_head

SMALL_CONFIGS: dict[tuple[str, str], dict[str, Any]] = {
    ("extractor", "color-texture"): {"input_px": 32},
    ("extractor", "resnet50-trunc"): {"input_px": 32, "base_width": 4, "blocks": (1, 1, 1)},
    ("extractor", "dinov2-vitl14"): {"img_size": 28, "embed_dim": 16, "depth": 2, "num_heads": 2},
    ("extractor", "vit"): {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2},
    ("extractor", "ctranspath"): {"img_size": 64, "embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4),
                                  "window_size": 4},
    ("extractor", "conch-v1"): {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2,
                                "pool_dim": 8, "pool_heads": 2},
    ("extractor", "conch-v1.5"): {"img_size": 64, "patch_size": 8, "pos_grid": 4, "embed_dim": 16, "depth": 2,
                                 "num_heads": 2, "pool_dim": 12, "pool_heads": 2},
    ("extractor", "plip"): {"img_size": 32, "patch_size": 8, "width": 16, "layers": 2, "heads": 2,
                            "projection_dim": 8},
    ("aggregator", "abmil"): {"embed_dim": 16, "attn_dim": 8},
    ("aggregator", "transmil"): {"embed_dim": 32, "heads": 4},
    # with their instance losses: the kit's gradient check includes auxiliary_losses (label 0 for every bag)
    ("aggregator", "clam_sb"): {"k_sample": 2, "n_classes": 3},
    ("aggregator", "clam_mb"): {"k_sample": 2, "n_classes": 3},
    # not permutation invariant (eval pseudo-bags follow patch order), so the kit skips that check
    ("aggregator", "dtfd"): {"embed_dim": 16, "attn_dim": 8, "n_classes": 3},
    ("aggregator", "perceiver"): {"dim": 32, "depth": 1, "num_latents": 8, "heads": 2, "dim_head": 16, "ff_mult": 2},
    ("aggregator", "wikg"): {"dim_hidden": 32},
    ("aggregator", "mamba_mil"): {"embed_dim": 16, "d_state": 4, "attn_dim": 8},
    ("aggregator", "titan"): {"embed_dim": 32, "depth": 2, "num_heads": 4, "pooler_heads": 2, "pooler_queries": 5},
    ("aggregator", "gigapath-slide"): {"embed_dim": 32, "depth": 3, "num_heads": 4, "ffn_dim": 64, "slide_ngrids": 16,
                                       "feat_layer": 2, "segment_lengths": [4, 8, 16], "dilations": [1, 2, 4]},
    # slide foundation encoders at reduced width (PRISM's published Perceiver is 99M parameters)
    ("aggregator", "madeleine"): {"embed_dim": 32, "attn_dim": 16},
    ("aggregator", "prism"): {"latent_seq": 6, "latent_dim": 32, "mhsa_heads": 4, "perceiver_depth": 3,
                              "transformer_depth": 1},
    ("aggregator", "histgen"): {
        "d_vf": 32, "d_model": 16, "num_heads": 2, "d_ff": 16, "region_size": 4, "prototype_num": 8,
        "cmm_size": 16, "cmm_dim": 16, "topk": 4, "slide_pool_dim": 8,
    },
    ("head", "cox"): {"n_boot": 10},
    ("head", "regression"): {"n_boot": 10},
    # two targets: the synthetic rows' label (3 classes) and event (0/1)
    ("head", "multitarget"): {"label_columns": ["label", "event"], "n_boot": 10},
    ("head", "report"): {
        "d_model": 16, "num_heads": 2, "d_ff": 16, "num_layers": 1, "cmm_size": 16, "topk": 4,
        "max_seq_length": 12, "threshold": 2, "beam_size": 2,
        "reg2025_keyword_model": "none", "reg2025_embedding_model": "none",  # never load the REG2025 models
    },
    ("head", "retrieval"): {"reg2025_keyword_model": "none", "reg2025_embedding_model": "none"},
    ("head", "lm"): {"max_new_tokens": 8, "reg2025_keyword_model": "none", "reg2025_embedding_model": "none"},
}
# the named ViT presets (milkit/components/extractors/presets.py): each one reduced, keeping its structure
SMALL_CONFIGS.update({("extractor", p.name): p.small_config() for p in PRESETS})
SKIP: dict[tuple[str, str], str] = {}
if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("peft") is None:
    SKIP[("head", "lm")] = "needs the lm extra: pip install 'milkit[lm]'"
SLOW = {("head", "report"), ("head", "retrieval"), ("head", "lm")}  # their metrics start METEOR's JVM (~20 s)

REGISTRIES: Registries = build_registries(get_plugin_manager(autoload=False))


def _params(kind: str) -> list[Any]:
    names = REGISTRIES.of(kind).names()
    params = []
    for name in names:
        marks = [pytest.mark.slow] if (kind, name) in SLOW else []
        if (kind, name) in SKIP:
            marks.append(pytest.mark.skip(reason=SKIP[(kind, name)]))
        params.append(pytest.param(name, marks=marks))
    return params


def _config(kind: str, name: str) -> dict[str, Any] | None:
    return SMALL_CONFIGS.get((kind, name))


def test_builtins_register_without_problems() -> None:
    assert REGISTRIES.problems == []


@pytest.mark.histgen  # two of the names are HistGen's
def test_small_configs_name_registered_components() -> None:
    stale = [key for key in {*SMALL_CONFIGS, *SKIP, *SLOW} if key[1] not in REGISTRIES.of(key[0])]
    assert not stale, f"SMALL_CONFIGS/SKIP name components that are no longer registered: {stale}"


@pytest.mark.parametrize("name", _params("aggregator"))
def test_aggregator_contract(name: str) -> None:
    check_aggregator(REGISTRIES.aggregators.get(name), _config("aggregator", name))


@pytest.mark.parametrize("name", _params("head"))
def test_head_contract(name: str) -> None:
    check_head(REGISTRIES.heads.get(name), _config("head", name))


@pytest.mark.parametrize("name", _params("extractor"))
def test_extractor_contract(name: str) -> None:
    check_extractor(REGISTRIES.extractors.get(name), _config("extractor", name))


TOKEN_PAIRS = [
    (agg, head)
    for agg in REGISTRIES.aggregators.names()
    if REGISTRIES.aggregators.get(agg).provides_tokens
    for head in REGISTRIES.heads.names()
    if REGISTRIES.heads.get(head).requires_tokens and ("head", head) not in SKIP
]


@pytest.mark.parametrize(("aggregator", "head"), TOKEN_PAIRS)
def test_token_heads_work_bound_to_every_token_aggregator(aggregator: str, head: str) -> None:
    """The head is ``bind``-ed to the real aggregator and trained through its tokens (metrics: see above)."""
    agg_cls = REGISTRIES.aggregators.get(aggregator)
    agg_cfg = agg_cls.Config.model_validate(_config("aggregator", aggregator) or {})
    model = agg_cls(agg_cfg, in_dim=16)
    check_head(REGISTRIES.heads.get(head), _config("head", head), aggregator=model, skip={"metrics"})
