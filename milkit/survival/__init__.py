"""Survival analysis: Cox partial likelihood, scikit-survival metrics, Kaplan-Meier plots."""

from milkit.survival.cox import cox_partial_log_likelihood

__all__ = ["cox_partial_log_likelihood"]
