"""The pieces of EM that do not depend on the component model: the E step from a
table of log joint probabilities, hard assignment, the inexact (ε) E step of the
ε-EM argument, and hard EM with arbitrary component models.

The Gaussian mixture (``methods.gmm``) computes its log joint from Gaussian
densities; the mixture of GANs (``methods.ganmm``) from a classifier's posterior.
Both import from here.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = [
    "responsibilities",
    "hard_assign",
    "kl_rows",
    "perturb_responsibilities",
    "hard_em",
    "epsilon_members",
]


def responsibilities(log_joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The E step in log space from a_ik = log pi_k + log p(x_i | k), (N, K).

    log gamma_ik = a_ik - LSE_j a_ij, and log p(x_i) = LSE_k a_ik.
    Returns (log_gamma (N, K), log p(x_i) (N,)).
    """
    log_px = torch.logsumexp(log_joint, dim=1)  # (N,)
    return log_joint - log_px[:, None], log_px


def hard_assign(log_joint: torch.Tensor) -> torch.Tensor:
    """The hard ("classification") E step: each point to its most probable component."""
    return log_joint.argmax(1)


def kl_rows(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(q_i || p_i) for each row of two (N, K) log-probability tables (0 log 0 = 0)."""
    q = log_q.exp()
    return torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q)).sum(1)


def perturb_responsibilities(log_gamma: torch.Tensor, eps_total: float, iters: int = 60
                             ) -> tuple[torch.Tensor, float]:
    """An inexact E step: q with sum_i KL(q_i || gamma_i) = ``eps_total``.

    q = (1 - lam) gamma + lam r, where r puts every point's mass on its *least*
    likely component (an adversarial error).  KL(q || gamma) is convex in lam
    and 0 at lam = 0, hence non-decreasing on [0, 1]; bisection finds lam.
    If even lam = 1 gives less than ``eps_total``, that maximum is used.

    Returns (log q (N, K), the achieved total KL).
    """
    if eps_total < 0:
        raise ValueError(f"eps_total must be non-negative, got {eps_total}")
    gamma = log_gamma.exp()
    r = torch.zeros_like(gamma)
    r[torch.arange(len(r)), log_gamma.argmin(1)] = 1.0

    def total_kl(lam: float) -> tuple[torch.Tensor, float]:
        log_q = torch.log(((1 - lam) * gamma + lam * r).clamp_min(1e-300))
        return log_q, float(kl_rows(log_q, log_gamma).sum())

    if eps_total == 0:
        return log_gamma.clone(), 0.0
    lo, hi = 0.0, 1.0
    log_q, kl = total_kl(hi)
    if kl <= eps_total:
        return log_q, kl
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if total_kl(mid)[1] < eps_total:
            lo = mid
        else:
            hi = mid
    return total_kl(hi)


def epsilon_members(posterior: torch.Tensor, sigma: int, mode: str = "top",
                    generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The ε-E step of GANMM: each cluster's training set.

    S_k = {i : argmax_j C_ij = k}  plus  ``sigma`` points assigned elsewhere, chosen by
    their posterior C_ik: the ``sigma`` highest (``mode="top"``, the paper's wording) or
    drawn without replacement with probability proportional to C_ik (``"sample"``, the
    official code).  ``sigma=0`` is hard EM.  Returns K index tensors.
    """
    if mode not in ("top", "sample"):
        raise ValueError(f"mode must be 'top' or 'sample', got {mode!r}")
    if sigma < 0:
        raise ValueError(f"sigma must be a non-negative number of points, got {sigma}")
    labels = posterior.argmax(1)
    out = []
    for k in range(posterior.shape[1]):
        own = torch.nonzero(labels == k).flatten()
        others = torch.nonzero(labels != k).flatten()
        m = min(int(sigma), len(others))
        if m == 0:
            out.append(own)
            continue
        w = posterior[others, k]
        if mode == "top":
            extra = others[torch.topk(w, m).indices]
        else:
            w = w.double().clamp_min(0)
            w = w + (w.sum() == 0)  # all zero: draw uniformly
            pick = torch.multinomial(w.cpu(), m, replacement=False, generator=generator)
            extra = others[pick.to(others.device)]
        out.append(torch.cat([own, extra]))
    return out


def hard_em(X: torch.Tensor, labels: torch.Tensor,
            fit_component: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]],
            n_iter: int = 20,
            augment: Callable[[int, torch.Tensor, torch.Tensor], list[torch.Tensor]] | None = None
            ) -> tuple[torch.Tensor, list[int]]:
    """Hard ("classification") EM with arbitrary component models.

    M step: ``fit_component(X_k)`` returns a log-density function for each cluster's
    training set; E step: each point goes to the argmax (:func:`hard_assign`).
    ``augment(t, X, labels) -> index sets`` may add points from other clusters to each
    cluster's training set (the ε-E step, e.g. with :func:`epsilon_members`).

    Returns (final labels, number of points that changed cluster per iteration).
    """
    K = int(labels.max()) + 1
    changes = []
    for t in range(1, n_iter + 1):
        members = [torch.nonzero(labels == k).flatten() for k in range(K)]
        if augment is not None:
            members = augment(t, X, labels)
        logp = torch.stack([fit_component(X[m])(X) if len(m) else
                            torch.full((len(X),), -math.inf, dtype=X.dtype)
                            for m in members], 1)  # (N, K)
        new = hard_assign(logp)
        changes.append(int((new != labels).sum()))
        labels = new
    return labels, changes
