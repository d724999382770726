"""Gaussian mixtures fitted by EM, in PyTorch (CPU or GPU), plus the pieces
of the ε-EM argument.

Order of the file: pure maths (log densities, E-step, M-step, the M-step's
reg_covar bound, EM with an inexact E-step) -> the EM loop -> the estimator ->
the runner entries.  The parts that do not depend on Gaussians (the E-step from a
log joint, the perturbed E-step, hard EM) live in :mod:`dcl_lib.em`.

Conventions follow scikit-learn's ``GaussianMixture`` so the two can be
compared number for number: ``lower_bound_`` is the mean per-sample
log-likelihood computed in the E-step of the last iteration, ``tol`` applies to
its change, and ``reg_covar`` is added to every covariance diagonal.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning  # scikit-learn's own class, re-exported

from ..config import MethodConfig
from ..em import perturb_responsibilities, responsibilities
from ..train import progress
from .autoencoder import (AutoencoderConfig, cache_metrics, cached_autoencoder,
                          codes_from_checkpoint, encode, export_encoder)
from .base import (ClusterEstimator, FitResult, MethodSpec, RunContext, as_tensor, check_n_clusters,
                   seed_from)
from .kmeans import KMeans, kmeans_plusplus

__all__ = [
    "GaussianMixture",
    "ConvergenceWarning",
    "log_gaussian_full",
    "log_gaussian_diag",
    "log_gaussian_tied",
    "log_gaussian_spherical",
    "estimate_log_prob",
    "e_step",
    "em_from_partition",
    "fit_mixture",
    "m_step",
    "m_step_decrease_bound",
    "epsilon_em",
    "em",
    "EMResult",
    "pca_project",
    "GMMConfig",
    "GMMAEConfig",
    "SPEC_GMM",
    "SPEC_GMM_AE",
]

_LOG_2PI = math.log(2 * math.pi)
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INIT_PARAMS = ("kmeans", "k-means++", "random_from_data", "random")




# Values of one (K, B, d) temporary per chunk of B rows.  On a CPU, 2^18 float64 values
# (2 MiB) stay in cache: the E- and M-steps ran about twice as fast as with 2^23 on 2 cores
# (N=100k, d=50, K=10, benchmarks/gmm_vs_sklearn.py).  On a GPU every chunk costs a
# handful of kernel launches and the cache argument does not hold: 2^27 values (1 GiB in
# float64) make N = 10^6, d = 50, K = 10 four chunks instead of 1,908.
CHUNK_VALUES = {"cpu": 1 << 18, "cuda": 1 << 27}


def _chunk_size(n_components: int, n_features: int, device: torch.device | str | None = None,
                budget: int | None = None) -> int:
    """Rows per chunk so that a (K, B, d) temporary holds about ``budget`` values
    (default: :data:`CHUNK_VALUES` for the device's type)."""
    if budget is None:
        budget = CHUNK_VALUES.get(torch.device(device).type if device is not None else "cpu",
                                  CHUNK_VALUES["cpu"])
    return max(256, budget // max(1, n_components * n_features))


# ---------------------------------------------------------------------------
# Pure maths: log densities, E-step, M-step
# ---------------------------------------------------------------------------

def log_gaussian_full(X: torch.Tensor, mu: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """log N(x_i | mu_k, Sigma_k) through Cholesky factors Sigma_k = L_k L_k^T.

    log N = -1/2 (d log 2pi + 2 sum_j log L_jj + ||L^{-1}(x - mu)||^2), with the
    whitening done by a triangular solve; Sigma^{-1} is never formed.

    X (N, d), mu (K, d), chol (K, d, d) lower-triangular -> (N, K).
    """
    K, d = mu.shape
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    step = _chunk_size(K, d, X.device)
    out = []
    for s in range(0, X.shape[0], step):
        diff = (X[s:s + step][None] - mu[:, None]).transpose(1, 2)  # (K, d, B)
        y = torch.linalg.solve_triangular(chol, diff, upper=False)  # (K, d, B) = L^{-1}(x - mu)
        maha = (y * y).sum(1)  # (K, B)
        out.append((-0.5 * (d * _LOG_2PI + log_det[:, None] + maha)).T)  # (B, K)
    return torch.cat(out)


def log_gaussian_diag(X: torch.Tensor, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(x_i | mu_k, diag(var_k)): X (N, d), mu (K, d), var (K, d) -> (N, K)."""
    d = mu.shape[1]
    prec = 1.0 / var  # (K, d): the inverse of a diagonal is exact and cheap
    const = d * _LOG_2PI + torch.log(var).sum(1) + (mu * mu * prec).sum(1)  # (K,)
    step = _chunk_size(1, d, X.device)
    out = []
    for s in range(0, X.shape[0], step):
        x = X[s:s + step]
        maha_part = (x * x) @ prec.T - 2.0 * x @ (mu * prec).T  # (B, K)
        out.append(-0.5 * (const[None] + maha_part))
    return torch.cat(out)


def log_gaussian_tied(X: torch.Tensor, mu: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """log N(x_i | mu_k, Sigma) with one covariance Sigma = L L^T shared by all components.

    Whitening is one triangular solve per chunk of rows (not one per component):
    y_ik = L^{-1} x_i - L^{-1} mu_k.  X (N, d), mu (K, d), chol (d, d) -> (N, K).
    """
    K, d = mu.shape
    log_det = 2.0 * torch.log(torch.diagonal(chol)).sum()
    mu_w = torch.linalg.solve_triangular(chol, mu.T, upper=False)  # (d, K)
    step = _chunk_size(K, d, X.device)
    out = []
    for s in range(0, X.shape[0], step):
        x_w = torch.linalg.solve_triangular(chol, X[s:s + step].T, upper=False)  # (d, B)
        y = x_w[None] - mu_w.T[:, :, None]  # (K, d, B)
        out.append((-0.5 * (d * _LOG_2PI + log_det + (y * y).sum(1))).T)  # (B, K)
    return torch.cat(out)


def log_gaussian_spherical(X: torch.Tensor, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(x_i | mu_k, var_k I): X (N, d), mu (K, d), var (K,) -> (N, K)."""
    d = mu.shape[1]
    prec = 1.0 / var  # (K,)
    const = d * (_LOG_2PI + torch.log(var)) + (mu * mu).sum(1) * prec  # (K,)
    step = _chunk_size(1, d, X.device)
    out = []
    for s in range(0, X.shape[0], step):
        x = X[s:s + step]
        maha_part = ((x * x).sum(1, keepdim=True) - 2.0 * x @ mu.T) * prec[None]  # (B, K)
        out.append(-0.5 * (const[None] + maha_part))
    return torch.cat(out)


_LOG_DENSITY = {"full": log_gaussian_full, "tied": log_gaussian_tied, "diag": log_gaussian_diag,
                "spherical": log_gaussian_spherical}


def estimate_log_prob(X, mu, cov, covariance_type: str) -> torch.Tensor:
    """log N(x_i | mu_k, Sigma_k) for any covariance type; ``cov`` is what
    :func:`_params_to_cov` returns: the Cholesky factor(s) (full (K, d, d), tied
    (d, d)) or the variances (diag (K, d), spherical (K,))."""
    return _LOG_DENSITY[covariance_type](X, mu, cov)


def e_step(X: torch.Tensor, log_pi: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor,
           covariance_type: str = "full") -> tuple[torch.Tensor, torch.Tensor]:
    """Responsibilities in log space.

    a_ik = log pi_k + log N(x_i | mu_k, Sigma_k);  log gamma_ik = a_ik - LSE_j a_ij;
    the per-sample log-likelihood is LSE_k a_ik.

    Returns (log_gamma (N, K), log p(x_i) (N,)).
    """
    a = log_pi[None, :] + estimate_log_prob(X, mu, cov, covariance_type)  # (N, K)
    return responsibilities(a)


def m_step(X: torch.Tensor, gamma: torch.Tensor, covariance_type: str = "full",
           reg_covar: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form M-step.

    N_k = sum_i gamma_ik, pi_k = N_k / N, mu_k = sum_i gamma_ik x_i / N_k, and

    - full:      Sigma_k = sum_i gamma_ik (x_i - mu_k)(x_i - mu_k)^T / N_k + r I,  (K, d, d)
    - tied:      Sigma = sum_k N_k Sigma_k / N  (one matrix for all),             (d, d)
    - diag:      the diagonal of Sigma_k,                                          (K, d)
    - spherical: the mean of that diagonal, var_k (Sigma_k = var_k I),             (K,)

    with r = ``reg_covar`` added to every variance.  N_k is floored at 10 machine
    epsilons, as in scikit-learn, so an empty component does not divide by zero.

    Returns (pi (K,), mu (K, d), the covariance parameter of the shape above).
    """
    N, d = X.shape
    eps = 10 * torch.finfo(X.dtype).eps
    Nk = gamma.sum(0) + eps  # (K,)
    mu = (gamma.T @ X) / Nk[:, None]  # (K, d)
    pi = Nk / N
    if covariance_type in ("diag", "spherical"):
        avg_x2 = (gamma.T @ (X * X)) / Nk[:, None]
        var = avg_x2 - 2.0 * mu * ((gamma.T @ X) / Nk[:, None]) + mu * mu + reg_covar
        return pi, mu, (var if covariance_type == "diag" else var.mean(1))
    if covariance_type == "tied":
        S = (X.T @ X - (Nk[:, None] * mu).T @ mu) / Nk.sum()  # (d, d)
        S.diagonal().add_(reg_covar)
        return pi, mu, S
    K = mu.shape[0]
    S = torch.zeros(K, d, d, dtype=X.dtype, device=X.device)
    step = _chunk_size(K, d, X.device)
    for s in range(0, N, step):
        diff = X[s:s + step][None] - mu[:, None]  # (K, B, d)
        w = gamma[s:s + step].T[:, :, None] * diff  # (K, B, d)
        S += w.transpose(1, 2) @ diff  # (K, d, d)
    Sigma = S / Nk[:, None, None]
    Sigma.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
    return pi, mu, Sigma


_ILL_DEFINED = ("Fitting the mixture model failed because some components have ill-defined "
                "empirical covariance (for instance caused by singleton or collapsed samples). "
                "Try to decrease the number of components, increase reg_covar, or scale the "
                "input data.")  # scikit-learn's wording


def _ill_defined(bad, dtype) -> ValueError:
    extra = (" The numerical accuracy can also be improved by passing float64 data instead of "
             "float32.") if dtype == torch.float32 else ""
    return ValueError(f"{_ILL_DEFINED}{extra} (component(s) {bad})")


def cholesky(Sigma: torch.Tensor) -> torch.Tensor:
    """Cholesky factors with a message that says what to do when one fails."""
    L, info = torch.linalg.cholesky_ex(Sigma)
    bad = torch.nonzero((info > 0) | ~torch.isfinite(Sigma).flatten(1).all(1)).flatten()
    if bad.numel():
        raise _ill_defined(bad.tolist(), Sigma.dtype)
    return L


def check_variances(var: torch.Tensor) -> torch.Tensor:
    """Diagonal (K, d) or spherical (K,) variances must be positive and finite (the same
    message as Cholesky's)."""
    ok = (var > 0) & torch.isfinite(var)
    bad = torch.nonzero(~(ok.all(1) if ok.dim() > 1 else ok)).flatten()
    if bad.numel():
        raise _ill_defined(bad.tolist(), var.dtype)
    return var


# ---------------------------------------------------------------------------
# The ε-EM argument: an inexact E-step with a controlled KL error
# ---------------------------------------------------------------------------

def m_step_decrease_bound(X: torch.Tensor, gamma: torch.Tensor, Sigma_reg: torch.Tensor,
                          reg_covar: float) -> float:
    """How much ``reg_covar`` may cost the M-step, in total log-likelihood.

    The exact maximiser is S_k; the M-step returns S_k + r I.  Per component the
    bound L(q, .) loses N_k/2 sum_j [log(1 + r/lam_j) - r/(lam_j + r)] >= 0 (lam_j
    the eigenvalues of S_k), a quantity of order r^2.  EM may therefore lower
    the log-likelihood by at most this much: the justified tolerance of the
    monotonicity test.  Full covariances only.
    """
    Nk = gamma.sum(0)
    S = Sigma_reg.clone()
    S.diagonal(dim1=-2, dim2=-1).sub_(reg_covar)
    lam = torch.linalg.eigvalsh(S).clamp_min(1e-300)  # (K, d)
    per = torch.log1p(reg_covar / lam) - reg_covar / (lam + reg_covar)
    return float((0.5 * Nk * per.sum(1)).sum())


def epsilon_em(X: torch.Tensor, pi: torch.Tensor, mu: torch.Tensor, Sigma: torch.Tensor,
               eps: Callable[[int], float], n_iter: int, covariance_type: str = "full",
               reg_covar: float = 1e-6) -> dict[str, list[float]]:
    """EM whose E-step is replaced by :func:`perturb_responsibilities`.

    At iteration t the assignment table q^(t) has total KL(q^(t) || p(Z|X, theta_t))
    = eps(t) (per-sample log-likelihood units times N); the M-step is exact.
    Returns per-iteration traces: ``loglik`` (mean log-likelihood at theta_t),
    ``eps`` (the achieved per-sample KL), ``reg_slack`` (the reg_covar bound of
    :func:`m_step_decrease_bound`, per sample; full covariances only).
    """
    N = X.shape[0]
    out: dict[str, list[float]] = {"loglik": [], "eps": [], "reg_slack": []}
    for t in range(1, n_iter + 1):
        log_gamma, log_px = e_step(X, torch.log(pi), mu, _params_to_cov(Sigma, covariance_type),
                                   covariance_type)
        log_q, kl = perturb_responsibilities(log_gamma, eps(t) * N)
        q = log_q.exp()
        pi, mu, Sigma = m_step(X, q, covariance_type, reg_covar)
        out["loglik"].append(float(log_px.mean()))
        out["eps"].append(kl / N)
        out["reg_slack"].append(m_step_decrease_bound(X, q, Sigma, reg_covar) / N
                                if covariance_type == "full" else 0.0)
    return out


# ---------------------------------------------------------------------------
# The EM loop
# ---------------------------------------------------------------------------

def _params_to_cov(Sigma, covariance_type):
    """What :func:`estimate_log_prob` takes: Cholesky factors (full, tied) or variances."""
    if covariance_type == "full":
        return cholesky(Sigma)
    if covariance_type == "tied":
        return cholesky(Sigma[None])[0]
    return check_variances(Sigma)


class EMResult(NamedTuple):
    """What :func:`em` returns: the fitted parameters and the run's trace."""

    pi: torch.Tensor            # (K,)
    mu: torch.Tensor            # (K, d)
    Sigma: torch.Tensor         # (K, d, d), (d, d), (K, d) or (K,): full, tied, diag, spherical
    lower_bound: float          # mean log-likelihood at the last E-step
    trace: list[float]          # lower_bound per iteration
    converged: bool
    n_iter: int


def reseed_empty(X: torch.Tensor, pi: torch.Tensor, mu: torch.Tensor, Sigma: torch.Tensor,
                 covariance_type: str) -> tuple[tuple[torch.Tensor, ...], list[int]]:
    """Re-seed the components that explain less than one sample at a starting point.

    Each empty component moves to one of the worst-explained samples, with the largest
    component's covariance and weight 1/N.  Done once, *before* EM: inside EM a re-seed
    could lower the likelihood and break its monotonicity.  Returns the new parameters and
    the indices of the re-seeded components.
    """
    log_gamma, log_px = e_step(X, torch.log(pi), mu, _params_to_cov(Sigma, covariance_type),
                               covariance_type)
    empty = torch.nonzero(log_gamma.exp().sum(0) < 1.0).flatten()
    if empty.numel() == 0:
        return (pi, mu, Sigma), []
    pi, mu, Sigma = pi.clone(), mu.clone(), Sigma.clone()
    worst = torch.argsort(log_px)[: empty.numel()]
    mu[empty] = X[worst]
    if covariance_type != "tied":  # (tied: the one shared covariance already serves them)
        Sigma[empty] = Sigma[torch.argmax(pi)].clone()
    pi[empty] = 1.0 / X.shape[0]
    return (pi / pi.sum(), mu, Sigma), empty.tolist()


def em(X: torch.Tensor, pi: torch.Tensor, mu: torch.Tensor, Sigma: torch.Tensor,
       covariance_type: str, reg_covar: float, tol: float, max_iter: int,
       callback: Callable | None = None, verbose: bool = False,
       lower_bound: float = -math.inf) -> EMResult:
    """Run EM from (pi, mu, Sigma); return the fitted parameters and the trace.

    Each iteration: E-step (giving the per-sample mean log-likelihood, the
    "lower bound" of scikit-learn) -> M-step.  Stops when the bound changes by
    less than ``tol``.  Nothing is changed between the steps, so the bound never
    decreases (up to the reg_covar effect of :func:`m_step_decrease_bound`).
    ``lower_bound`` is the bound before the first iteration (a warm start passes
    the previous fit's, so that its first change is measured against it).
    """
    trace, converged = [], False
    n_iter = 0
    for n_iter in progress(range(1, max_iter + 1), desc="EM", verbose=verbose):
        prev = lower_bound
        log_gamma, log_px = e_step(X, torch.log(pi), mu, _params_to_cov(Sigma, covariance_type),
                                   covariance_type)
        gamma = log_gamma.exp()
        pi, mu, Sigma = m_step(X, gamma, covariance_type, reg_covar)
        lower_bound = float(log_px.mean())
        trace.append(lower_bound)
        if callback is not None:
            callback(n_iter, pi, mu, Sigma, lower_bound)
        if abs(lower_bound - prev) < tol:
            converged = True
            break
    return EMResult(pi, mu, Sigma, lower_bound, trace, converged, n_iter)


def _partition_params(X: torch.Tensor, labels: torch.Tensor, n_components: int,
                      covariance_type: str, reg_covar: float):
    """One M-step on a partition's one-hot responsibilities: (pi, mu, Sigma)."""
    gamma = torch.nn.functional.one_hot(labels.long(), n_components).to(X.dtype)
    return m_step(X, gamma, covariance_type, reg_covar)


def em_from_partition(X: torch.Tensor, labels, n_components: int, covariance_type: str = "full",
                      reg_covar: float = 1e-6, tol: float = 1e-3, max_iter: int = 100
                      ) -> tuple[torch.Tensor, EMResult]:
    """EM started from a partition: one M-step on its one-hot responsibilities, then
    :func:`em`.  Returns (the labels after EM, argmax of the last responsibilities; the
    result).  Where the partition is a fixed point of EM the labels come back unchanged;
    the GANMM chapter uses it to see whether the true partition is one."""
    labels = torch.as_tensor(labels, device=X.device)
    if labels.shape != (X.shape[0],) or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be {X.shape[0]} integers, got shape {tuple(labels.shape)} "
                         f"and dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= n_components:
        raise ValueError(f"labels must lie in [0, {n_components - 1}], got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    pi, mu, Sigma = _partition_params(X, labels, n_components, covariance_type, reg_covar)
    r = em(X, pi, mu, Sigma, covariance_type, reg_covar, tol, max_iter)
    log_gamma, _ = e_step(X, torch.log(r.pi), r.mu, _params_to_cov(r.Sigma, covariance_type),
                          covariance_type)
    return log_gamma.argmax(1), r


# ---------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------

def _cov_shape(covariance_type: str, K: int, d: int) -> tuple[int, ...]:
    """Shape of the covariance parameter of each type (scikit-learn's)."""
    return {"full": (K, d, d), "tied": (d, d), "diag": (K, d), "spherical": (K,)}[covariance_type]


def precisions_cholesky(cov: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """scikit-learn's ``precisions_cholesky_`` from what :func:`_params_to_cov` returns.

    full / tied (``cov`` = L, Sigma = L L^T): the upper-triangular U with Sigma^{-1} = U U^T,
    U = L^{-T} (the unique such U with a positive diagonal, so the one scikit-learn also gets
    from a given precision matrix); diag / spherical (``cov`` = the variances): 1 / sqrt(var).
    """
    if covariance_type in ("diag", "spherical"):
        return 1.0 / torch.sqrt(cov)
    L = cov if covariance_type == "full" else cov[None]
    eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device).expand_as(L)
    U = torch.linalg.solve_triangular(L, eye, upper=False).transpose(1, 2)
    return U if covariance_type == "full" else U[0]


def _as_param(value, name: str, like: torch.Tensor) -> torch.Tensor:
    """A user-given initial parameter as a tensor of X's dtype and device (any shape:
    the shape is checked by the caller, with scikit-learn's message)."""
    t = value.detach() if isinstance(value, torch.Tensor) else torch.from_numpy(
        np.array(value, dtype=np.float64))  # a copy: read-only views (np.diagonal) are fine
    t = t.to(like.device, like.dtype)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


class GaussianMixture(ClusterEstimator):
    """Gaussian mixture fitted by EM, with scikit-learn's API, conventions and messages.

    ``from dcl_lib.methods.gmm import GaussianMixture`` in place of scikit-learn's import
    gives the same estimator (same parameters, attributes and methods, the same lower
    bound from the same start), running on the CPU or a GPU (``device``).

    Parameters
    ----------
    n_components : K.
    covariance_type : ``"full"`` (K, d, d), ``"tied"`` (d, d), ``"diag"`` (K, d) or
        ``"spherical"`` (K,): the shape of ``covariances_``.
    tol : stop when the mean per-sample log-likelihood changes by less.
    reg_covar : added to every variance (keeps each covariance positive definite).
    max_iter : EM iterations per initialisation; 0 returns the initialisation
        (``lower_bound_`` is -inf, as in scikit-learn).
    n_init : initialisations; the highest final lower bound wins.
    init_params : ``"kmeans"`` (responsibilities from k-means labels), ``"k-means++"`` and
        ``"random_from_data"`` (each sample to its nearest of K seeds: k-means++ seeds or K
        random samples), ``"random"`` (uniform random responsibilities, normalised).
        scikit-learn's last three give responsibility only to the K seed samples themselves;
        here every sample gets its nearest seed's, so the first covariances are those of K
        clusters rather than ``reg_covar`` alone.
    weights_init, means_init, precisions_init (or covariances_init) : any of them replaces
        that part of each data-based initialisation (as scikit-learn does); all three
        given: one start, whatever ``n_init``.
    random_state : None, an int or a numpy generator.
    warm_start : a second ``fit`` continues from the fitted parameters (one start, its
        first change of the bound measured against the previous ``lower_bound_``).
    verbose, verbose_interval : 1 prints each initialisation's start and end, 2 also every
        ``verbose_interval`` iterations with the time and the change of the bound.
    device : ``"cpu"``, ``"cuda"``, ... (None: the library's default device).
    dtype : the dtype EM runs in.  None (the default) follows scikit-learn: float32 input
        is fitted in float32 and gives float32 attributes, anything else float64.

    Attributes
    ----------
    weights_ (K,), means_ (K, d), covariances_, precisions_, precisions_cholesky_
    (scikit-learn's shapes and conventions), lower_bound_, lower_bounds_ (trace of the best
    run), n_iter_, converged_, labels_ (N,), n_features_in_, n_reseeded_ (components that
    explained less than one sample at the start and were re-seeded before EM, with a
    warning; scikit-learn has no such step and leaves them empty).
    """

    def __init__(self, n_components: int = 1, *, covariance_type: str = "full",
                 tol: float = 1e-3, reg_covar: float = 1e-6, max_iter: int = 100,
                 n_init: int = 1, init_params: str = "kmeans", weights_init=None,
                 means_init=None, precisions_init=None, random_state=None,
                 warm_start: bool = False, verbose: int = 0, verbose_interval: int = 10,
                 covariances_init=None, device=None, dtype=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.covariances_init = covariances_init
        self.device = device
        self.dtype = dtype

    def _dtype_for(self, X) -> torch.dtype:
        if self.dtype is not None:
            return self.dtype
        float32 = (X.dtype == torch.float32 if isinstance(X, torch.Tensor)
                   else getattr(X, "dtype", None) == np.float32)
        return torch.float32 if float32 else torch.float64

    # -- validation ------------------------------------------------------
    def _check_params(self, n_samples: int) -> None:
        check_n_clusters(self.n_components, n_samples)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, "
                             f"got {self.covariance_type!r}")
        if self.init_params not in INIT_PARAMS:
            raise ValueError(f"init_params must be one of {INIT_PARAMS}, got {self.init_params!r}")
        if not (isinstance(self.reg_covar, (int, float)) and self.reg_covar >= 0):
            raise ValueError(f"reg_covar must be a non-negative number, got {self.reg_covar!r}")
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}")
        for name, low in (("max_iter", 0), ("n_init", 1), ("verbose", 0),
                          ("verbose_interval", 1)):
            v = getattr(self, name)
            if (isinstance(v, bool) and name != "verbose") or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if not isinstance(self.warm_start, bool):
            raise ValueError(f"warm_start must be True or False, got {self.warm_start!r}")
        if self.covariances_init is not None and self.precisions_init is not None:
            raise ValueError("give covariances_init or precisions_init, not both")

    def _init_from_params(self, X, start):
        """``start`` (pi, mu, Sigma) with each user-given part in place of its own;
        scikit-learn's checks and messages."""
        pi, mu, Sigma = start
        # (K from the start where there is one: scikit-learn's _initialize takes it from resp)
        K, d, ct = self.n_components if pi is None else len(pi), X.shape[1], self.covariance_type
        if self.weights_init is not None:
            pi = _as_param(self.weights_init, "weights_init", X)
            if pi.shape != (K,):
                raise ValueError(f"The parameter 'weights' should have the shape of {(K,)}, "
                                 f"but got {tuple(pi.shape)}")
            lo, hi = float(pi.min()), float(pi.max())
            if lo < 0 or hi > 1:
                raise ValueError(f"The parameter 'weights' should be in the range [0, 1], but "
                                 f"got min value {lo:.5f}, max value {hi:.5f}")
            single = getattr(self.weights_init, "dtype", None) in (np.float32, torch.float32)
            # scikit-learn's tolerance (1e-8), or K rounding errors of float32 weights
            atol = max(1e-8, K * float(np.finfo(np.float32 if single else np.float64).eps))
            if abs(1.0 - float(pi.double().sum())) > atol:
                raise ValueError(f"The parameter 'weights' should be normalized, but got "
                                 f"sum(weights) = {float(pi.sum()):.5f}")
        if self.means_init is not None:
            mu = _as_param(self.means_init, "means_init", X)
            if mu.shape != (K, d):
                raise ValueError(f"The parameter 'means' should have the shape of {(K, d)}, "
                                 f"but got {tuple(mu.shape)}")
        for attr, kind in (("covariances_init", "covariance"), ("precisions_init", "precision")):
            if getattr(self, attr) is None:
                continue
            M = _as_param(getattr(self, attr), attr, X)
            name, want = f"'{ct} {kind}'", _cov_shape(ct, K, d)
            if M.shape != want:
                raise ValueError(f"The parameter {name} should have the shape of {want}, but "
                                 f"got {tuple(M.shape)}")
            if ct in ("diag", "spherical"):
                if (M <= 0).any():
                    raise ValueError(f"{name} should be positive ({attr})")
                Sigma = M if kind == "covariance" else 1.0 / M
                continue
            M3 = M if ct == "full" else M[None]
            where = (lambda i: f"component(s) {i.tolist()}") if ct == "full" else (
                lambda i: "the matrix")
            asym = torch.nonzero(~torch.isclose(M3, M3.transpose(1, 2)).flatten(1).all(1))
            if asym.numel():
                raise ValueError(f"{name} should be symmetric, positive-definite ({attr}): "
                                 f"{where(asym.flatten())} not symmetric")
            L, info = torch.linalg.cholesky_ex(M3)
            notpd = torch.nonzero(info > 0).flatten()
            if notpd.numel():
                raise ValueError(f"{name} should be symmetric, positive-definite ({attr}): "
                                 f"{where(notpd)} not positive-definite")
            S3 = M3 if kind == "covariance" else torch.cholesky_inverse(L)
            Sigma = S3 if ct == "full" else S3[0]
        return pi, mu, Sigma

    def _init_from_data(self, X, g: torch.Generator):
        K = self.n_components
        if self.init_params == "random":
            gamma = torch.rand(X.shape[0], K, generator=g, dtype=X.dtype).to(X.device)
            gamma /= gamma.sum(1, keepdim=True)
            return m_step(X, gamma, self.covariance_type, self.reg_covar)
        if self.init_params == "kmeans":
            km = KMeans(K, n_init=1, random_state=int(torch.randint(2**31 - 1, (1,), generator=g)),
                        device=X.device, dtype=X.dtype).fit(X)
            labels = torch.as_tensor(km.labels_, device=X.device)
        else:
            if self.init_params == "k-means++":
                centres = kmeans_plusplus(X, K, g)
            else:
                centres = X[torch.randperm(len(X), generator=g)[:K].to(X.device)]
            labels = torch.cdist(X, centres).argmin(1)
        gamma = torch.nn.functional.one_hot(labels, K).to(X.dtype)
        return m_step(X, gamma, self.covariance_type, self.reg_covar)

    # -- verbose output (scikit-learn's messages) --------------------------
    def _say(self, level: int, msg: str) -> None:
        if int(self.verbose) >= level:
            print(msg)

    def _iteration_printer(self, t_start: float):
        state = {"t": t_start, "prev": None}

        def report(n_iter, pi, mu, Sigma, lower_bound):
            change = lower_bound - state["prev"] if state["prev"] is not None else math.inf
            state["prev"] = lower_bound
            if n_iter % self.verbose_interval:
                return
            now = time.perf_counter()
            if int(self.verbose) >= 2:
                print(f"  Iteration {n_iter}\t time lapse {now - state['t']:.5f}s\t "
                      f"ll change {change:.5f}")
            elif self.verbose:
                print(f"  Iteration {n_iter}")
            state["t"] = now
        return report

    # -- fitting ----------------------------------------------------------
    def fit(self, X, y=None):
        """Fit by EM (``n_init`` starts, best lower bound kept); returns self."""
        device = self._device()
        X = as_tensor(X, dtype=self._dtype_for(X), device=device)
        self._check_params(X.shape[0])
        # warm start: one run from the fitted parameters, its first change measured
        # against the previous lower bound (scikit-learn's rule)
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        if not do_init:
            self._check_n_features(X)
        g = torch.Generator().manual_seed(seed_from(self.random_state))
        given = [v is not None for v in (self.weights_init, self.means_init,
                                         self.covariances_init if self.precisions_init is None
                                         else self.precisions_init)]
        best, best_reseeded = None, []
        for init in range(self.n_init if do_init and not all(given) else 1):
            self._say(1, f"Initialization {init}")
            t0 = time.perf_counter()
            reseeded, bound0 = [], -math.inf
            if not do_init:
                start = tuple(p.to(device, X.dtype) for p in self._params)
                bound0 = self.lower_bound_
            else:
                start = (None, None, None) if all(given) else self._init_from_data(X, g)
                start = self._init_from_params(X, start) if any(given) else start
                if self.max_iter > 0:  # (max_iter=0 returns the initialisation as given)
                    start, reseeded = reseed_empty(X, *start, self.covariance_type)
            out = em(X, *start, self.covariance_type, self.reg_covar, self.tol, self.max_iter,
                     callback=self._iteration_printer(t0) if self.verbose else None,
                     lower_bound=bound0)
            if self.max_iter > 0:
                verdict = "converged" if out.converged else "did not converge"
                self._say(1, f"Initialization {verdict}." if int(self.verbose) < 2 else
                          f"Initialization {verdict}. time lapse {time.perf_counter() - t0:.5f}s"
                          f"\t lower bound {out.lower_bound:.5f}.")
            # (max_iter=0: every start has bound -inf and the last one is kept, as in scikit-learn)
            if best is None or out.lower_bound > best.lower_bound or best.lower_bound == -math.inf:
                best, best_reseeded = out, reseeded
        pi, mu, Sigma, lower_bound, trace, converged, n_iter = best
        if best_reseeded:
            warnings.warn(
                f"component(s) {best_reseeded} explained less than one sample at the "
                f"initialisation and were re-seeded at the worst-explained samples before EM "
                f"(the data may hold fewer distinct clusters than n_components="
                f"{self.n_components})", UserWarning, stacklevel=2)
        if not converged and self.max_iter > 0:
            why = (f"the last change of the lower bound, {trace[-1] - trace[-2]:.2e}, is not "
                   f"below tol={self.tol}" if len(trace) > 1 else
                   "one iteration gives no change of the lower bound to compare with tol")
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data. "
                f"(EM stopped at max_iter={self.max_iter}: {why}.)",
                ConvergenceWarning, stacklevel=2)
        self._set_fitted(pi, mu, Sigma)
        self.lower_bound_, self.lower_bounds_ = lower_bound, trace
        self.converged_, self.n_iter_, self.n_reseeded_ = converged, n_iter, len(best_reseeded)
        # a final E-step so that labels_ agree with predict(X), as scikit-learn does
        self.labels_ = self._log_resp(X).argmax(1).cpu().numpy()
        return self

    def _set_fitted(self, pi, mu, Sigma) -> None:
        """The fitted parameters as tensors (for inference, with the Cholesky factors or
        variances the E-step takes, computed once) and as scikit-learn's numpy attributes,
        precisions included."""
        self._cov = _params_to_cov(Sigma, self.covariance_type)  # raises if ill-defined
        U = precisions_cholesky(self._cov, self.covariance_type)
        self._params = (pi / pi.sum(), mu, Sigma)
        self.weights_ = self._params[0].cpu().numpy()
        self.means_, self.covariances_ = mu.cpu().numpy(), Sigma.cpu().numpy()
        self.precisions_cholesky_ = U.cpu().numpy()
        self.precisions_ = (U * U if self.covariance_type in ("diag", "spherical")
                            else U @ U.transpose(-1, -2)).cpu().numpy()
        self.n_features_in_ = mu.shape[1]

    # scikit-learn's private hooks, which its own tests call: (weights, means, covariances,
    # precisions_cholesky) out and in, and the initialisation from given responsibilities
    def _get_parameters(self):
        return self.weights_, self.means_, self.covariances_, self.precisions_cholesky_

    def _set_parameters(self, params) -> None:
        weights, means, covariances = (torch.as_tensor(np.asarray(a)).to(self._device())
                                       for a in params[:3])
        self._set_fitted(weights, means, covariances)

    def _initialize(self, X, resp) -> None:
        X = as_tensor(X, dtype=self._dtype_for(X), device=self._device())
        resp = torch.as_tensor(np.asarray(resp)).to(X.device, X.dtype)
        self._set_fitted(*self._init_from_params(
            X, m_step(X, resp, self.covariance_type, self.reg_covar)))

    # -- inference --------------------------------------------------------
    def _prepare(self, X):
        self._check_fitted("weights_")
        X = as_tensor(X, dtype=self._params[1].dtype, device=self._device())
        self._check_n_features(X)
        return X

    def _log_resp_and_px(self, X):
        pi, mu, cov = (p.to(X.device, X.dtype) for p in (*self._params[:2], self._cov))
        return e_step(X, torch.log(pi), mu, cov, self.covariance_type)

    def _log_resp(self, X):
        return self._log_resp_and_px(X)[0]

    def predict_proba(self, X) -> np.ndarray:
        """Responsibilities gamma_ik, (N, K); rows sum to 1."""
        return self._log_resp(self._prepare(X)).exp().cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Most responsible component for each row."""
        return self._log_resp(self._prepare(X)).argmax(1).cpu().numpy()

    def score_samples(self, X) -> np.ndarray:
        """log p(x_i) under the fitted mixture, (N,)."""
        return self._log_resp_and_px(self._prepare(X))[1].cpu().numpy()

    def score(self, X, y=None) -> float:
        """Mean per-sample log-likelihood."""
        return self.score_samples(X).mean()

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(X (n, d), component labels (n,)) drawn from the fitted mixture, with
        scikit-learn's algorithm and random stream (``random_state``): the same fitted
        parameters and seed give scikit-learn's samples."""
        from sklearn.utils import check_random_state

        self._check_fitted("weights_")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling "
                             f"requires at least one sample.")
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, np.asarray(self.weights_, dtype=np.float64))
        ct, d = self.covariance_type, self.means_.shape[1]
        if ct in ("full", "tied"):
            covs = self.covariances_ if ct == "full" else [self.covariances_] * len(counts)
            X = np.vstack([rng.multivariate_normal(m, c, int(n))
                           for m, c, n in zip(self.means_, covs, counts)])
        else:
            X = np.vstack([m + rng.standard_normal(size=(n, d)) * np.sqrt(c)
                           for m, c, n in zip(self.means_, self.covariances_, counts)])
        y = np.concatenate([np.full(n, k, dtype=int) for k, n in enumerate(counts)])
        return X, y

    def _n_parameters(self) -> int:
        """Free parameters: K - 1 weights, K d means, and the covariances' entries."""
        K, d = self.means_.shape
        cov = {"full": K * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": K * d,
               "spherical": K}[self.covariance_type]
        return int(K - 1 + K * d + cov)

    def bic(self, X) -> float:
        """Bayesian information criterion, -2 l(theta) + p log N (lower is better)."""
        n = as_tensor(X).shape[0]
        return -2 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X) -> float:
        """Akaike information criterion, -2 l(theta) + 2 p (lower is better)."""
        return -2 * self.score(X) * as_tensor(X).shape[0] + 2 * self._n_parameters()


# ---------------------------------------------------------------------------
# Runner entries: ``gmm`` (pixels or PCA) and ``gmm-ae`` (autoencoder codes)
# ---------------------------------------------------------------------------

def pca_project(X: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project the rows of X on their top principal directions.

    Returns (scores (N, n_components), mean (D,), components (n_components, D)).
    """
    if not 1 <= n_components <= min(X.shape):
        raise ValueError(f"n_components must be in [1, {min(X.shape)}], got {n_components}")
    mean = X.mean(0)
    Xc = X - mean
    # eigenvectors of the (D, D) scatter: cheaper than an SVD of (N, D) when N >> D
    evals, evecs = torch.linalg.eigh(Xc.T @ Xc)
    comps = evecs[:, torch.argsort(evals, descending=True)[:n_components]].T  # (k, D)
    comps = comps * torch.sign(comps[:, :1] + 1e-300)  # a fixed sign per direction
    return Xc @ comps.T, mean, comps


@dataclass(frozen=True)
class GMMConfig(MethodConfig):
    n_components: int = 10
    features: str = "pca"          # "pca" (full covariances) or "pixels" (diagonal)
    pca_dim: int = 50
    covariance_type: str = "full"
    reg_covar: float = 1e-6        # scikit-learn default
    tol: float = 1e-3              # scikit-learn default
    max_iter: int = 300
    n_init: int = 5

    profiles = {"quick": {"n_init": 2}, "full": {}}


def _gmm_state(gm: GaussianMixture) -> dict:
    return {"weights": torch.as_tensor(gm.weights_), "means": torch.as_tensor(gm.means_),
            "covariances": torch.as_tensor(gm.covariances_)}


def _mixture_labels(ck, Z: torch.Tensor, covariance_type: str) -> np.ndarray:
    """argmax_k of the saved mixture's responsibilities for the rows of Z (float64)."""
    Z = Z.double()
    pi, mu, cov = (ck[k].to(Z.device, torch.float64) for k in ("weights", "means", "covariances"))
    return e_step(Z, torch.log(pi), mu, _params_to_cov(cov, covariance_type),
                  covariance_type)[0].argmax(1).cpu().numpy()


def fit_mixture(X, n_components: int, *, n_init: int = 1, kmeans_start: int = 0,
                random_state: int = 0, **kwargs) -> GaussianMixture:
    """EM from ``n_init`` starts (each one k-means run, as :class:`GaussianMixture`) and,
    where ``kmeans_start`` > 0, from one more: the partition of k-means with that many
    restarts (one M-step on its one-hot responsibilities).  The highest final lower bound
    wins, as among restarts.

    The extra start is the answer of the k-means baseline, so the mixture's likelihood is
    at least that of EM run from k-means' own partition.  Returns the winning mixture with
    ``start_`` ("k-means" or "restarts") and ``start_bounds_`` (each start's lower bound).
    ``kwargs`` go to :class:`GaussianMixture` (covariance_type, tol, reg_covar, max_iter,
    device, verbose, ...)."""
    if isinstance(kmeans_start, bool) or not isinstance(kmeans_start, int) or kmeans_start < 0:
        raise ValueError(f"kmeans_start must be an integer >= 0, got {kmeans_start!r}")
    gm = GaussianMixture(n_components, n_init=n_init, random_state=random_state,
                         **kwargs).fit(X)
    gm.start_, gm.start_bounds_ = "restarts", {"restarts": gm.lower_bound_}
    if kmeans_start == 0:
        return gm
    Xt = as_tensor(X, dtype=gm._dtype_for(X), device=gm._device())
    km = KMeans(n_components, n_init=kmeans_start, random_state=random_state,
                device=Xt.device, dtype=Xt.dtype).fit(Xt)
    pi, mu, Sigma = _partition_params(Xt, torch.as_tensor(km.labels_, device=Xt.device),
                                      n_components, gm.covariance_type, gm.reg_covar)
    gk = GaussianMixture(n_components, random_state=random_state,
                         **{**kwargs, "weights_init": (pi / pi.sum()).cpu().numpy(),
                            "means_init": mu.cpu().numpy(),
                            "covariances_init": Sigma.cpu().numpy()}).fit(Xt)
    bounds = {"restarts": gm.lower_bound_, "k-means": gk.lower_bound_}
    best = gk if gk.lower_bound_ >= gm.lower_bound_ else gm
    best.start_ = "k-means" if best is gk else "restarts"
    best.start_bounds_ = bounds
    return best


def _fit_mixture(Z: torch.Tensor, cfg, ctx: RunContext, kmeans_start: int = 0
                 ) -> GaussianMixture:
    return fit_mixture(Z, cfg.n_components, n_init=cfg.n_init, kmeans_start=kmeans_start,
                       random_state=ctx.seed,
                       covariance_type=cfg.covariance_type, tol=cfg.tol,
                       reg_covar=cfg.reg_covar, max_iter=cfg.max_iter, device=ctx.device,
                       verbose=ctx.verbose)


def _fit_gmm(data, cfg: GMMConfig, ctx: RunContext) -> FitResult:
    gm = _fit_mixture(_features(data, cfg, ctx.device), cfg, ctx)
    return FitResult(gm.labels_, _gmm_state(gm), {"lower_bound": gm.lower_bounds_},
                     {"lower_bound": gm.lower_bound_, "n_iter": gm.n_iter_})


def _features(data, cfg: GMMConfig, device) -> torch.Tensor:
    X = data.flat().to(device, torch.float64)
    if cfg.features == "pca":
        return pca_project(X, cfg.pca_dim)[0]
    if cfg.features != "pixels":
        raise ValueError(f"features must be 'pca' or 'pixels', got {cfg.features!r}")
    return X


def _reload_gmm(ck, data, cfg: GMMConfig, device) -> np.ndarray:
    return _mixture_labels(ck, _features(data, cfg, device), cfg.covariance_type)


@dataclass(frozen=True)
class GMMAEConfig(AutoencoderConfig):
    """Every field of the autoencoder (:class:`AutoencoderConfig`), then the mixture's."""

    n_components: int = 10
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    tol: float = 1e-3
    max_iter: int = 300
    n_init: int = 5
    kmeans_start: int = 0          # > 0: one more EM start, k-means' partition with this
                                   # many restarts (both profiles: 10)

    profiles = {"quick": {**AutoencoderConfig.profiles["quick"], "n_init": 2, "kmeans_start": 10},
                "full": {**AutoencoderConfig.profiles["full"], "kmeans_start": 10}}


def _fit_gmm_ae(data, cfg: GMMAEConfig, ctx: RunContext) -> FitResult:
    # the shared autoencoder of this seed, trained once per machine (as GANMM's, DEC's and
    # DCAN's; a cache hit is the network a live training gives): a hit's wall time leaves
    # its training out, so its training seconds are recorded
    model, hist = cached_autoencoder(data.flat(), cfg.autoencoder(), ctx.seed, ctx.device,
                                     ctx.verbose, state=ctx.state)
    gm = _fit_mixture(encode(model, data.flat()).double(), cfg, ctx, cfg.kmeans_start)
    # only what assigns clusters: the encoder (half precision) and the mixture
    state = {"encoder": export_encoder(model), **_gmm_state(gm)}
    names = {"restarts": "lower_bound_restarts", "k-means": "lower_bound_kmeans_start"}
    starts = {names[k]: v for k, v in gm.start_bounds_.items()}
    return FitResult(gm.labels_, state, {**hist.to_dict(), "lower_bound": gm.lower_bounds_},
                     {"lower_bound": gm.lower_bound_, **starts,
                      "final_recon": hist.last("loss/recon"), **cache_metrics(hist)})


def _reload_gmm_ae(ck, data, cfg: GMMAEConfig, device) -> np.ndarray:
    """Codes from the saved (half-precision) encoder, then the saved mixture."""
    Z = codes_from_checkpoint(ck["encoder"], data.flat(), cfg, device)
    return _mixture_labels(ck, Z, cfg.covariance_type)


SPEC_GMM = MethodSpec(GMMConfig, _fit_gmm, "Gaussian mixture by EM on pixels (diag) or PCA (full)",
                      reload=_reload_gmm)
SPEC_GMM_AE = MethodSpec(GMMAEConfig, _fit_gmm_ae, "Gaussian mixture by EM on autoencoder codes",
                         reload=_reload_gmm_ae)
