"""Post-hoc adjustments of predicted probabilities, each fitted on validation only.

- Temperature scaling (Guo et al. 2017): one scalar T > 0, softmax(logits / T), chosen to minimise the validation
  negative log-likelihood. It changes how confident the model is, never which class it picks.
- Prior (logit) adjustment (Menon et al. 2021): a bias -tau * log(prior) per class, tau chosen on validation for
  the objective (e.g. balanced accuracy). A model trained on 67% nevi over-calls nevi; tau > 0 moves decisions
  towards rare classes, tau < 0 back when class weights already over-corrected.

NumPy/SciPy only; dermsweep.keras_layers.CalibratedSoftmax applies the same formula inside the shipped model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize_scalar

EPS = 1e-12
TAU_GRID = np.round(np.arange(-1.0, 2.5001, 0.05), 2)


def adjust(logits: np.ndarray, temperature: float = 1.0, bias: np.ndarray | None = None) -> np.ndarray:
    """softmax(logits / temperature + bias), row-wise (the formula of keras_layers.CalibratedSoftmax)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if bias is not None:
        z = z + bias
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(y_true: np.ndarray, probs: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], EPS, 1.0))))


def fit_temperature(y_true: np.ndarray, logits: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising the negative log-likelihood of softmax(logits / T) (on log T)."""
    result = minimize_scalar(
        lambda log_t: nll(y_true, adjust(logits, float(np.exp(log_t)))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(result.x))


def prior_bias(priors: np.ndarray, tau: float) -> np.ndarray:
    """-tau * log(prior) per class (classes never seen in training get the smallest prior's bias)."""
    p = np.asarray(priors, dtype=np.float64)
    p = np.where(p > 0, p, p[p > 0].min() if (p > 0).any() else 1.0)
    return -float(tau) * np.log(p / p.sum())


def fit_prior_tau(
    y_true: np.ndarray,
    logits: np.ndarray,
    priors: np.ndarray,
    temperature: float,
    objective: Callable[[np.ndarray, np.ndarray], float],
    grid: np.ndarray = TAU_GRID,
    tolerance: float = 0.0,
) -> float:
    """The tau on `grid` nearest 0 whose `objective(y_true, adjusted probabilities)` on these (validation) labels is
    within `tolerance` of the best: no more adjustment than measurably helps. Each step of tau away from 0 trades
    accuracy and macro F1 for rare-class recall; whether the result beats no adjustment beyond validation's noise is
    for the caller to weigh (training.gains: a paired bootstrap)."""
    scored = [(objective(y_true, adjust(logits, temperature, prior_bias(priors, tau))), tau) for tau in grid]
    best = max(value for value, _ in scored)
    return float(min((abs(tau), tau) for value, tau in scored if value >= best - tolerance - 1e-12)[1])
