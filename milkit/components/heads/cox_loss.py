"""Cox proportional-hazards partial likelihood (Efron or Breslow ties), vectorised in torch."""

import torch
from torch import Tensor

TIES = ("efron", "breslow")


def cox_partial_log_likelihood(risk: Tensor, time: Tensor, event: Tensor, ties: str = "efron") -> Tensor:
    """Mean negative Cox log partial likelihood of a batch.

    Higher ``risk`` means an earlier event (the log hazard ratio). The sum of the
    negative log partial likelihood is divided by the number of events; a batch
    without any event returns 0 (still attached to the graph, so ``backward`` works).
    Ties in event times are handled exactly by Efron's (default, as R's ``coxph``) or
    Breslow's approximation. Computed in at least float32 (float64 inputs stay float64).

    Args:
        risk: predicted log hazard ratio, [B] (or [B, 1]).
        time: follow-up time, [B]; any unit, >= 0.
        event: 1/True = event observed, 0/False = censored, [B].
        ties: "efron" or "breslow".

    Returns:
        Scalar loss.
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    dtype = torch.promote_types(risk.dtype, torch.float32)
    eta = risk.reshape(-1).to(dtype)                                   # b
    time = time.reshape(-1).to(eta.device)
    event = event.reshape(-1).to(device=eta.device, dtype=torch.bool)  # b
    if eta.shape != time.shape or eta.shape != event.shape:
        raise ValueError(f"risk, time and event must have one value per sample, got {eta.shape}, "
                         f"{time.shape}, {event.shape}")
    n_events = int(event.sum())
    if n_events == 0:
        return eta.sum() * 0.0

    uniq, group = torch.unique(time, sorted=True, return_inverse=True)  # g, b
    n_groups = uniq.shape[0]
    # log of the risk-set sums, sum over {j: t_j >= t_g} of exp(eta_j), in log space (no overflow)
    order = torch.argsort(time, descending=True, stable=True)
    cum = torch.logcumsumexp(eta[order], 0)                            # b: over the samples so far
    at_or_after = torch.bincount(group, minlength=n_groups).flip(0).cumsum(0).flip(0)  # g: #{t_j >= t_g}
    log_risk_set = cum[at_or_after - 1]                                # g

    ev_group = group[event]                                            # e: time group of each event
    log_denominators = log_risk_set[ev_group]                          # e (Breslow)
    if ties == "efron":
        ev_eta = eta[event]                                            # e
        top = eta.new_full((n_groups,), -torch.inf).scatter_reduce(0, ev_group, ev_eta.detach(), "amax")
        tied = eta.new_zeros(n_groups).index_add(0, ev_group, (ev_eta - top[ev_group]).exp())
        n_tied = torch.bincount(ev_group, minlength=n_groups)          # g: d_g
        # rank of each event among the events tied at its time: 0 .. d_g - 1
        rank_order = torch.argsort(ev_group, stable=True)
        first = torch.cumsum(n_tied, 0) - n_tied                       # g: start offset of each group
        rank = torch.empty_like(rank_order)
        rank[rank_order] = torch.arange(rank_order.numel(), device=eta.device) - first[ev_group[rank_order]]
        frac = rank.to(dtype) / n_tied[ev_group].to(dtype)             # e: l / d_g
        # log(R - frac * D) = log R + log1p(-frac * D / R), D = sum of exp(eta) over the tied events
        log_tied = (top + tied.log())[ev_group]                        # e: tied >= 1 (the max term)
        log_denominators = log_denominators + torch.log1p(-frac * (log_tied - log_denominators).exp())
    log_lik = eta[event].sum() - log_denominators.sum()
    return -log_lik / n_events
