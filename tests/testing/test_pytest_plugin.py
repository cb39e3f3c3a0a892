"""The pytest plugin hands plugin authors the kit as fixtures (run inside a throw-away pytest session)."""

import pytest

import milkit.testing  # noqa: F401 - import torch before pytester snapshots sys.modules (re-importing torch crashes)

pytest_plugins = ["pytester"]


def test_fixtures_run_the_kit_and_report_failed_checks(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # same result whether or not the pytest11 entry point exists
    pytester.makepyfile(
        """
        import torch
        from milkit.components.aggregators.abmil import ABMIL
        from milkit.components.heads.classification import Classification

        class Leaky(ABMIL):
            def forward(self, feats, mask, coords):
                out = super().forward(feats, torch.ones_like(mask), coords)
                return out

        def test_good(milkit_check_aggregator, milkit_check_head):
            milkit_check_aggregator(ABMIL, {"embed_dim": 8, "attn_dim": 4})
            milkit_check_head(Classification)

        def test_leaky(milkit_check_aggregator):
            milkit_check_aggregator(Leaky, {"embed_dim": 8, "attn_dim": 4})

        def test_registries(milkit_registries):
            assert "abmil" in milkit_registries.aggregators
        """
    )
    result = pytester.runpytest_inprocess("-p", "milkit.testing.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*CheckFailure: aggregator 'abmil' (Leaky) failed 1 of 10 checks:*",
        "*padding invariance: embedding changed by max |Δ| = * (atol 1e-05) when 3 padded patches were appended*",
    ])

