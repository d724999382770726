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
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning  # scikit-learn's own class, re-exported

from ..config import MethodConfig
from ..em import kl_rows, perturb_responsibilities, responsibilities
from ..train import compact_state, progress
from .autoencoder import AutoencoderConfig, codes_from_checkpoint, encode, train_autoencoder
from .base import (ClusterEstimator, FitResult, MethodSpec, RunContext, as_tensor, check_n_clusters,
                   seed_from)
from .kmeans import KMeans, kmeans_plusplus

__all__ = [
    "GaussianMixture",
    "ConvergenceWarning",
    "log_gaussian_full",
    "log_gaussian_diag",
    "estimate_log_prob",
    "e_step",
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
COVARIANCE_TYPES = ("full", "diag")




def _chunk_size(n_components: int, n_features: int, budget: int = 1 << 18) -> int:
    """Rows per chunk so that a (K, B, d) temporary holds about ``budget`` values.

    2^18 float64 values (2 MiB) stay in cache; on 2 CPU cores this made the
    E- and M-steps about twice as fast as 2^23 (measured at N=100k, d=50, K=10 with
    benchmarks/gmm_vs_sklearn.py).
    """
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
    step = _chunk_size(K, d)
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
    step = _chunk_size(1, d)
    out = []
    for s in range(0, X.shape[0], step):
        x = X[s:s + step]
        maha_part = (x * x) @ prec.T - 2.0 * x @ (mu * prec).T  # (B, K)
        out.append(-0.5 * (const[None] + maha_part))
    return torch.cat(out)


def estimate_log_prob(X, mu, cov, covariance_type: str) -> torch.Tensor:
    """log N(x_i | mu_k, Sigma_k) for either covariance type; ``cov`` is the
    Cholesky factor (full) or the variances (diag)."""
    if covariance_type == "full":
        return log_gaussian_full(X, mu, cov)
    return log_gaussian_diag(X, mu, cov)


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

    N_k = sum_i gamma_ik, pi_k = N_k / N, mu_k = sum_i gamma_ik x_i / N_k,
    Sigma_k = sum_i gamma_ik (x_i - mu_k)(x_i - mu_k)^T / N_k + reg_covar I
    (diag: only the diagonal).  N_k is floored at 10 machine epsilons, as in
    scikit-learn, so an empty component does not divide by zero.

    Returns (pi (K,), mu (K, d), Sigma (K, d, d) or var (K, d)).
    """
    N, d = X.shape
    eps = 10 * torch.finfo(X.dtype).eps
    Nk = gamma.sum(0) + eps  # (K,)
    mu = (gamma.T @ X) / Nk[:, None]  # (K, d)
    pi = Nk / N
    if covariance_type == "diag":
        avg_x2 = (gamma.T @ (X * X)) / Nk[:, None]
        var = avg_x2 - 2.0 * mu * ((gamma.T @ X) / Nk[:, None]) + mu * mu + reg_covar
        return pi, mu, var
    K = mu.shape[0]
    S = torch.zeros(K, d, d, dtype=X.dtype, device=X.device)
    step = _chunk_size(K, d)
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
    """Diagonal covariances must be positive and finite (the same message as Cholesky's)."""
    bad = torch.nonzero(~((var > 0) & torch.isfinite(var)).all(1)).flatten()
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
    return cholesky(Sigma) if covariance_type == "full" else check_variances(Sigma)


class EMResult(NamedTuple):
    """What :func:`em` returns: the fitted parameters and the run's trace."""

    pi: torch.Tensor            # (K,)
    mu: torch.Tensor            # (K, d)
    Sigma: torch.Tensor         # (K, d, d) or (K, d)
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
    Sigma[empty] = Sigma[torch.argmax(pi)].clone()
    pi[empty] = 1.0 / X.shape[0]
    return (pi / pi.sum(), mu, Sigma), empty.tolist()


def em(X: torch.Tensor, pi: torch.Tensor, mu: torch.Tensor, Sigma: torch.Tensor,
       covariance_type: str, reg_covar: float, tol: float, max_iter: int,
       callback: Callable | None = None, verbose: bool = False) -> EMResult:
    """Run EM from (pi, mu, Sigma); return the fitted parameters and the trace.

    Each iteration: E-step (giving the per-sample mean log-likelihood, the
    "lower bound" of scikit-learn) -> M-step.  Stops when the bound changes by
    less than ``tol``.  Nothing is changed between the steps, so the bound never
    decreases (up to the reg_covar effect of :func:`m_step_decrease_bound`).
    """
    trace, lower_bound, converged = [], -math.inf, False
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


# ---------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------

class GaussianMixture(ClusterEstimator):
    """Gaussian mixture fitted by EM, scikit-learn's contract and conventions.

    Parameters
    ----------
    n_components : K.
    covariance_type : ``"full"`` or ``"diag"``.
    tol : stop when the mean per-sample log-likelihood changes by less.
    reg_covar : added to every covariance diagonal (keeps Sigma positive definite).
    max_iter : EM iterations per initialisation.
    n_init : initialisations; the highest final lower bound wins.
    init_params : ``"kmeans"`` (responsibilities from k-means labels),
        ``"k-means++"`` (from k-means++ seeds), ``"random_from_data"``.
    weights_init, means_init, covariances_init (or precisions_init, scikit-learn's) :
        any of them replaces that part of each data-based initialisation (as
        scikit-learn does); all three given: one start, whatever ``n_init``.
    max_iter : 0 returns the initialisation (``lower_bound_`` is -inf, as scikit-learn).
    random_state, device, dtype (None = float64, on CPU and GPU alike), verbose.

    Attributes
    ----------
    weights_ (K,), means_ (K, d), covariances_ (K, d, d) or (K, d),
    precisions_ and precisions_cholesky_ (scikit-learn's conventions),
    lower_bound_, lower_bounds_ (trace of the best run), n_iter_, converged_,
    labels_ (N,), n_reseeded_.  ``sample(n)`` draws from the fitted mixture.
    """

    def __init__(self, n_components: int = 1, covariance_type: str = "full", tol: float = 1e-3,
                 reg_covar: float = 1e-6, max_iter: int = 100, n_init: int = 1,
                 init_params: str = "kmeans", weights_init=None, means_init=None,
                 covariances_init=None, precisions_init=None, random_state=None, device=None,
                 dtype=None, verbose: bool = False):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.covariances_init = covariances_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose

    def _dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype is None else self.dtype

    # -- validation ------------------------------------------------------
    def _check_params(self, n_samples: int) -> None:
        check_n_clusters(self.n_components, n_samples)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, "
                             f"got {self.covariance_type!r}")
        if self.init_params not in ("kmeans", "k-means++", "random_from_data"):
            raise ValueError(f"init_params must be 'kmeans', 'k-means++' or 'random_from_data', "
                             f"got {self.init_params!r}")
        if not (isinstance(self.reg_covar, (int, float)) and self.reg_covar >= 0):
            raise ValueError(f"reg_covar must be a non-negative number, got {self.reg_covar!r}")
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}")
        for name, low in (("max_iter", 0), ("n_init", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.covariances_init is not None and self.precisions_init is not None:
            raise ValueError("give covariances_init or precisions_init, not both")

    def _init_from_params(self, X, start):
        """``start`` (pi, mu, Sigma) with each user-given part in place of its own."""
        K, d = self.n_components, X.shape[1]
        kw = dict(dtype=X.dtype, device=X.device)
        pi, mu, Sigma = start
        if self.weights_init is not None:
            pi = as_tensor(self.weights_init, ndim=(1,), name="weights_init", **kw)
            if pi.shape != (K,):
                raise ValueError(f"weights_init must have shape {(K,)}, got {tuple(pi.shape)}")
            if (pi < 0).any() or abs(float(pi.sum()) - 1) > 1e-6:
                raise ValueError("weights_init must be non-negative and sum to 1")
        if self.means_init is not None:
            mu = as_tensor(self.means_init, name="means_init", **kw)
            if mu.shape != (K, d):
                raise ValueError(f"means_init must have shape {(K, d)}, got {tuple(mu.shape)}")
        for name in ("covariances_init", "precisions_init"):
            value = getattr(self, name)
            if value is None:
                continue
            M = as_tensor(value, ndim=(2, 3), name=name, **kw)
            want = (K, d, d) if self.covariance_type == "full" else (K, d)
            if M.shape != want:
                raise ValueError(f"{name} must have shape {want}, got {tuple(M.shape)}")
            if self.covariance_type == "full":
                asym = torch.nonzero(~torch.isclose(M, M.transpose(1, 2)).flatten(1).all(1))
                if asym.numel():
                    raise ValueError(f"{name} must be symmetric: component(s) "
                                     f"{asym.flatten().tolist()} are not")
                notpd = torch.nonzero(torch.linalg.cholesky_ex(M)[1] > 0).flatten()
                if notpd.numel():
                    raise ValueError(f"{name} must be positive-definite: component(s) "
                                     f"{notpd.tolist()} are not")
                Sigma = M if name == "covariances_init" else torch.linalg.inv(M)
            else:
                if (M <= 0).any():
                    raise ValueError(f"{name} must be positive (diagonal covariances)")
                Sigma = M if name == "covariances_init" else 1.0 / M
        return pi, mu, Sigma

    def _init_from_data(self, X, g: torch.Generator):
        K = self.n_components
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

    # -- fitting ----------------------------------------------------------
    def fit(self, X, y=None):
        """Fit by EM (``n_init`` starts, best lower bound kept); returns self."""
        device = self._device()
        X = as_tensor(X, dtype=self._dtype(), device=device)
        self._check_params(X.shape[0])
        g = torch.Generator().manual_seed(seed_from(self.random_state))
        given = [v is not None for v in (self.weights_init, self.means_init,
                                         self.covariances_init if self.precisions_init is None
                                         else self.precisions_init)]
        best, best_reseeded = None, []
        for _ in range(1 if all(given) else self.n_init):
            start = (None, None, None) if all(given) else self._init_from_data(X, g)
            start = self._init_from_params(X, start) if any(given) else start
            start, reseeded = reseed_empty(X, *start, self.covariance_type)
            out = em(X, *start, self.covariance_type, self.reg_covar, self.tol, self.max_iter,
                     verbose=self.verbose)
            # (max_iter=0: every start has bound -inf and the last one is kept, as in scikit-learn)
            if best is None or out.lower_bound > best.lower_bound or best.lower_bound == -math.inf:
                best, best_reseeded = out, reseeded
        pi, mu, Sigma, lower_bound, trace, converged, n_iter = best
        n_reseeded = len(best_reseeded)
        if best_reseeded:
            warnings.warn(
                f"component(s) {best_reseeded} explained less than one sample at the "
                f"initialisation and were re-seeded at the worst-explained samples before EM "
                f"(the data may hold fewer distinct clusters than n_components="
                f"{self.n_components})", UserWarning, stacklevel=2)
        if not converged and self.max_iter > 0:
            warnings.warn(
                f"EM did not converge in max_iter={self.max_iter} iterations (last change of the "
                f"lower bound {trace[-1] - trace[-2] if len(trace) > 1 else float('nan'):.2e} >= "
                f"tol={self.tol}). Increase max_iter or tol, or check the initialisation.",
                ConvergenceWarning, stacklevel=2)
        self.weights_, self.means_, self._Sigma = pi, mu, Sigma
        self.covariances_ = Sigma.cpu().numpy()
        self.lower_bound_, self.lower_bounds_ = lower_bound, trace
        self.converged_, self.n_iter_, self.n_reseeded_ = converged, n_iter, n_reseeded
        self.n_features_in_ = X.shape[1]
        # a final E-step so that labels_ agree with predict(X), as scikit-learn does
        self.labels_ = self._log_resp(X).argmax(1).cpu().numpy()
        self.weights_ = pi.cpu().numpy()
        self.means_ = mu.cpu().numpy()
        return self

    # -- inference --------------------------------------------------------
    def _prepare(self, X):
        self._check_fitted()
        X = as_tensor(X, dtype=self._dtype(), device=self._device())
        self._check_n_features(X)
        return X

    def _log_resp_and_px(self, X):
        dev = X.device
        pi = torch.as_tensor(self.weights_, dtype=X.dtype, device=dev)
        mu = torch.as_tensor(self.means_, dtype=X.dtype, device=dev)
        Sigma = self._Sigma.to(dev, X.dtype)
        return e_step(X, torch.log(pi), mu, _params_to_cov(Sigma, self.covariance_type),
                      self.covariance_type)

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
        return float(self.score_samples(X).mean())

    @property
    def precisions_cholesky_(self) -> np.ndarray:
        """scikit-learn's ``precisions_cholesky_``: full, for each component the upper
        triangular U with precision = U U^T (U = L^{-T}, Sigma = L L^T); diag, 1/sqrt(var)."""
        self._check_fitted()
        S = torch.as_tensor(self.covariances_, dtype=torch.float64)
        if self.covariance_type == "diag":
            return (1.0 / torch.sqrt(S)).numpy()
        eye = torch.eye(S.shape[-1], dtype=S.dtype).expand_as(S)
        L = torch.linalg.cholesky(S)
        return torch.linalg.solve_triangular(L, eye, upper=False).transpose(1, 2).numpy()

    @property
    def precisions_(self) -> np.ndarray:
        """The inverse covariances: (K, d, d) for full, (K, d) for diag."""
        U = torch.as_tensor(self.precisions_cholesky_)
        return (U**2).numpy() if self.covariance_type == "diag" else (U @ U.transpose(1, 2)).numpy()

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(X (n, d), component labels (n,)) drawn from the fitted mixture, with
        scikit-learn's algorithm and random stream (``random_state``): the same fitted
        parameters and seed give scikit-learn's samples."""
        from sklearn.utils import check_random_state

        self._check_fitted()
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, np.asarray(self.weights_, dtype=np.float64))
        if self.covariance_type == "full":
            X = np.vstack([rng.multivariate_normal(m, c, int(n))
                           for m, c, n in zip(self.means_, self.covariances_, counts)])
        else:
            X = np.vstack([m + rng.standard_normal(size=(n, len(m))) * np.sqrt(c)
                           for m, c, n in zip(self.means_, self.covariances_, counts)])
        y = np.concatenate([np.full(n, k, dtype=int) for k, n in enumerate(counts)])
        return X, y

    def _n_parameters(self) -> int:
        """Free parameters: K - 1 weights, K d means, and the covariances' entries."""
        K, d = self.means_.shape
        cov = K * d * (d + 1) // 2 if self.covariance_type == "full" else K * d
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


def _fit_mixture(Z: torch.Tensor, cfg, ctx: RunContext) -> GaussianMixture:
    return GaussianMixture(cfg.n_components, covariance_type=cfg.covariance_type, tol=cfg.tol,
                           reg_covar=cfg.reg_covar, max_iter=cfg.max_iter, n_init=cfg.n_init,
                           random_state=ctx.seed, device=ctx.device, verbose=ctx.verbose).fit(Z)


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

    profiles = {"quick": {**AutoencoderConfig.profiles["quick"], "n_init": 2},
                "full": dict(AutoencoderConfig.profiles["full"])}


def _fit_gmm_ae(data, cfg: GMMAEConfig, ctx: RunContext) -> FitResult:
    model, hist = train_autoencoder(data.flat(), cfg.autoencoder(), ctx.seed, ctx.device, ctx.state,
                                    ctx.verbose)
    gm = _fit_mixture(encode(model, data.flat()).double(), cfg, ctx)
    # only what assigns clusters: the encoder (half precision) and the mixture
    state = {"encoder": compact_state(model.encoder), **_gmm_state(gm)}
    return FitResult(gm.labels_, state, {**hist.to_dict(), "lower_bound": gm.lower_bounds_},
                     {"lower_bound": gm.lower_bound_, "final_recon": hist.last("loss/recon")})


def _reload_gmm_ae(ck, data, cfg: GMMAEConfig, device) -> np.ndarray:
    """Codes from the saved (half-precision) encoder, then the saved mixture."""
    Z = codes_from_checkpoint(ck["encoder"], data.flat(), cfg, device)
    return _mixture_labels(ck, Z, cfg.covariance_type)


SPEC_GMM = MethodSpec(GMMConfig, _fit_gmm, "Gaussian mixture by EM on pixels (diag) or PCA (full)",
                      reload=_reload_gmm)
SPEC_GMM_AE = MethodSpec(GMMAEConfig, _fit_gmm_ae, "Gaussian mixture by EM on autoencoder codes",
                         reload=_reload_gmm_ae)
