"""Cox partial likelihood: R coxph on rossi, scikit-survival on gbsg2, direct formulas on ties."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from milkit.components.heads.cox_loss import cox_partial_log_likelihood

ROSSI_R = {"fin": -0.3794222, "age": -0.0574377, "race": 0.3138998, "wexp": -0.1497957,
           "mar": -0.4337039, "paro": -0.0848711, "prio": 0.0914971}


def fit_linear_cox(x: np.ndarray, time: np.ndarray, event: np.ndarray, ties: str) -> tuple[np.ndarray, float]:
    """Maximise the partial likelihood of risk = x @ beta (float64 LBFGS); returns (beta, log-likelihood)."""
    xt, tt, et = torch.tensor(x, dtype=torch.float64), torch.tensor(time, dtype=torch.float64), torch.tensor(event)
    beta = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([beta], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")
    n_events = float(event.sum())

    def closure() -> torch.Tensor:
        opt.zero_grad()
        nll = cox_partial_log_likelihood(xt @ beta, tt, et, ties) * n_events  # summed NLL
        nll.backward()
        return nll

    opt.step(closure)
    with torch.no_grad():
        loglik = -float(cox_partial_log_likelihood(xt @ beta, tt, et, ties)) * n_events
    return beta.detach().numpy(), loglik


def direct_log_lik(risk: list[float], time: list[float], event: list[int], ties: str) -> float:
    """Textbook partial log-likelihood, one loop per distinct event time."""
    total = 0.0
    for t in sorted({t for t, e in zip(time, event) if e}):
        dead = [i for i in range(len(time)) if time[i] == t and event[i]]
        at_risk = sum(math.exp(risk[i]) for i in range(len(time)) if time[i] >= t)
        tied = sum(math.exp(risk[i]) for i in dead)
        total += sum(risk[i] for i in dead)
        for ell in range(len(dead)):
            frac = ell / len(dead) if ties == "efron" else 0.0
            total -= math.log(at_risk - frac * tied)
    return total


def test_rossi_matches_r_coxph_efron(shared_data) -> None:
    df = pd.read_csv(shared_data / "survival/lifelines/rossi.csv")
    beta, loglik = fit_linear_cox(df[list(ROSSI_R)].to_numpy(float), df.week.to_numpy(float),
                                  df.arrest.to_numpy(bool), "efron")
    np.testing.assert_allclose(beta, list(ROSSI_R.values()), atol=1e-4)
    assert loglik == pytest.approx(-658.748, abs=1e-3)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_gbsg2_matches_scikit_survival(shared_data, ties: str) -> None:
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    df = pd.read_csv(shared_data / "survival/lifelines/gbsg2.csv")
    x = np.column_stack([df.horTh.eq("yes"), df.age / 10, df.menostat.eq("Post"), df.tsize / 10,
                         df.tgrade.map({"I": 0, "II": 1, "III": 2}), df.pnodes / 10, df.progrec / 100,
                         df.estrec / 100]).astype(float)
    time, event = df.time.to_numpy(float), df.cens.to_numpy(bool)
    assert len(np.unique(time[event])) < event.sum()  # the data has tied event times
    ref = CoxPHSurvivalAnalysis(ties=ties, tol=1e-12, n_iter=1000).fit(x, Surv.from_arrays(event, time))
    beta, _ = fit_linear_cox(x, time, event, ties)
    np.testing.assert_allclose(beta, ref.coef_, atol=1e-6)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_tied_times_match_direct_formula(ties: str) -> None:
    time = [1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 5.0, 0.5]
    event = [1, 1, 0, 1, 1, 1, 0, 0, 0]
    risk = [0.3, -1.2, 0.8, 2.0, 0.1, -0.4, 1.5, -0.7, 0.2]
    got = cox_partial_log_likelihood(torch.tensor(risk, dtype=torch.float64), torch.tensor(time),
                                     torch.tensor(event), ties)
    assert float(got) == pytest.approx(-direct_log_lik(risk, time, event, ties) / sum(event), rel=1e-12)


def test_efron_and_breslow_agree_without_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    risk, time = torch.randn(30, generator=gen), torch.rand(30, generator=gen)
    event = torch.rand(30, generator=gen) < 0.6
    a = cox_partial_log_likelihood(risk, time, event, "efron")
    b = cox_partial_log_likelihood(risk, time, event, "breslow")
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_order_invariant_and_higher_risk_for_earlier_events_is_better() -> None:
    time = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    event = torch.ones(5)
    good = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])  # earlier event, higher risk
    perm = torch.tensor([3, 0, 4, 2, 1])
    assert float(cox_partial_log_likelihood(good[perm], time[perm], event[perm])) == pytest.approx(
        float(cox_partial_log_likelihood(good, time, event)), rel=1e-6)
    assert cox_partial_log_likelihood(good, time, event) < cox_partial_log_likelihood(-good, time, event)


def test_no_event_gives_zero_with_gradient() -> None:
    risk = torch.randn(4, requires_grad=True)
    loss = cox_partial_log_likelihood(risk, torch.rand(4), torch.zeros(4))
    loss.backward()
    assert loss.item() == 0.0 and risk.grad is not None and torch.all(risk.grad == 0)


def test_large_risks_and_bf16_stay_finite() -> None:
    risk = torch.tensor([900.0, -900.0, 50.0, 0.0], requires_grad=True)
    loss = cox_partial_log_likelihood(risk, torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1, 1, 1, 0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(risk.grad).all()
    half = cox_partial_log_likelihood(risk.detach().bfloat16()[:, None], torch.tensor([1.0, 2, 2, 3]),
                                      torch.tensor([1, 1, 1, 0]))
    assert half.dtype == torch.float32 and torch.isfinite(half)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="ties"):
        cox_partial_log_likelihood(torch.zeros(2), torch.ones(2), torch.ones(2), ties="exact")
    with pytest.raises(ValueError, match="one value per sample"):
        cox_partial_log_likelihood(torch.zeros(3), torch.ones(2), torch.ones(2))
