"""k-means in PyTorch: k-means++ seeding, Lloyd iterations, restarts.

The baseline of every chapter, and the initialiser of the GMM, DEPICT and
the latent-space evaluations.  Runs on CPU or GPU; distances are computed
in chunks over the samples so memory stays O(chunk * K).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import TransformerMixin

from ..config import MethodConfig
from ..train import progress
from .base import (ClusterEstimator, FitResult, MethodSpec, RunContext, as_tensor, check_n_clusters,
                   seed_from)

__all__ = ["KMeans", "KMeansConfig", "SPEC", "squared_distances", "assign", "kmeans_plusplus", "lloyd"]

_CHUNK = 65536


# ---------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------

def squared_distances(X: torch.Tensor, C: torch.Tensor, x_sq: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """||x_i - c_k||^2 for every pair, (N, D) x (K, D) -> (N, K), clamped at 0.

    ``x_sq`` (N,) are the precomputed squared row norms of ``X``.
    """
    if x_sq is None:
        x_sq = torch.linalg.vector_norm(X, dim=1) ** 2
    d = torch.addmm(x_sq[:, None] + (C * C).sum(1)[None, :], X, C.T, alpha=-2.0)
    return d.clamp_min_(0.0)


def assign(X: torch.Tensor, C: torch.Tensor, chunk: int = _CHUNK, x_sq: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of every row: (labels (N,), squared distance (N,))."""
    if x_sq is None:
        x_sq = torch.linalg.vector_norm(X, dim=1) ** 2
    labels, dists = [], []
    for s in range(0, X.shape[0], chunk):
        d = squared_distances(X[s:s + chunk], C, x_sq[s:s + chunk])  # (B, K)
        m, a = d.min(1)
        labels.append(a)
        dists.append(m)
    return torch.cat(labels), torch.cat(dists)


def kmeans_plusplus(X: torch.Tensor, n_clusters: int, generator: torch.Generator,
                    n_local_trials: int | None = None) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007).

    The first centre is a uniform draw; each next one is the best, by the
    resulting potential, of ``n_local_trials`` draws with probability
    proportional to D(x)^2 (2 + log K trials, as scikit-learn does).
    """
    n = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    centers = torch.empty(n_clusters, X.shape[1], dtype=X.dtype, device=X.device)
    first = int(torch.randint(n, (1,), generator=generator))
    centers[0] = X[first]
    x_sq = torch.linalg.vector_norm(X, dim=1) ** 2
    closest = assign(X, centers[:1], x_sq=x_sq)[1]  # (N,) D(x)^2
    for k in range(1, n_clusters):
        total = float(closest.sum())
        if total <= 0:  # every point already coincides with a centre
            idx = torch.randint(n, (n_local_trials,), generator=generator)
        else:
            probs = (closest / total).double().cpu()
            idx = torch.multinomial(probs, n_local_trials, replacement=True, generator=generator)
        cand = X[idx.to(X.device)]  # (T, D)
        d_cand = torch.minimum(closest[:, None], _chunked_sqdist(X, cand, x_sq=x_sq))  # (N, T)
        best = int(d_cand.sum(0).argmin())
        centers[k] = cand[best]
        closest = d_cand[:, best].contiguous()
    return centers


def _chunked_sqdist(X: torch.Tensor, C: torch.Tensor, chunk: int = _CHUNK,
                    x_sq: torch.Tensor | None = None) -> torch.Tensor:
    if x_sq is None:
        x_sq = torch.linalg.vector_norm(X, dim=1) ** 2
    return torch.cat([squared_distances(X[s:s + chunk], C, x_sq[s:s + chunk])
                      for s in range(0, X.shape[0], chunk)])


def lloyd(X: torch.Tensor, centers: torch.Tensor, max_iter: int = 300, tol: float = 1e-4
          ) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Lloyd's algorithm from ``centers``.

    Stops when the squared centre shift falls below ``tol`` times the mean
    per-feature variance of ``X`` (scikit-learn's convention).  An empty
    cluster is re-seeded at the point farthest from its current centre.

    Returns (labels, centers, inertia, n_iter).
    """
    tol_abs = tol * float(X.var(0).mean()) if X.shape[0] > 1 else 0.0
    C = centers.clone()
    K = C.shape[0]
    x_sq = torch.linalg.vector_norm(X, dim=1) ** 2
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        labels, dist = assign(X, C, x_sq=x_sq)
        counts = torch.bincount(labels, minlength=K)
        sums = torch.zeros_like(C).index_add_(0, labels, X)
        new = sums / counts.clamp_min(1)[:, None].to(X.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel() > 0:
            far = torch.argsort(dist, descending=True)[: empty.numel()]
            new[empty] = X[far]
        shift = float(((new - C) ** 2).sum())
        C = new
        if shift <= tol_abs:
            break
    labels, dist = assign(X, C, x_sq=x_sq)
    return labels, C, float(dist.sum()), n_iter


# ---------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------

class KMeans(TransformerMixin, ClusterEstimator):
    """k-means with k-means++ seeding and ``n_init`` restarts (best inertia kept).

    Parameters
    ----------
    n_clusters : number of clusters K.
    n_init : number of seeded restarts; the lowest inertia wins.
    max_iter, tol : Lloyd stopping rule (see :func:`lloyd`).
    random_state : seed (int), numpy generator, or None.
    device : ``"cpu"``, ``"cuda"`` or None (CUDA when available).
    dtype : computation dtype, default float64 on CPU and float32 on CUDA.

    Attributes
    ----------
    cluster_centers_ (K, D), labels_ (N,), inertia_, n_iter_
    """

    def __init__(self, n_clusters: int = 10, n_init: int = 10, max_iter: int = 300,
                 tol: float = 1e-4, random_state=None, device=None, dtype=None, verbose=False):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose

    def _dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype is not None:
            return self.dtype
        return torch.float64 if device.type == "cpu" else torch.float32

    def fit(self, X, y=None, init: torch.Tensor | np.ndarray | None = None):
        """Cluster ``X`` (N, D).  ``init`` (K, D) replaces k-means++ seeding (n_init=1)."""
        device = self._device()
        X = as_tensor(X, dtype=self._dtype(device), device=device)
        K = check_n_clusters(self.n_clusters, X.shape[0])
        if not isinstance(self.n_init, int) or self.n_init < 1:
            raise ValueError(f"n_init must be a positive integer, got {self.n_init!r}")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        g = torch.Generator().manual_seed(seed_from(self.random_state))
        best = None
        if init is not None:
            starts = [as_tensor(init, dtype=X.dtype, device=device, name="init")]
            if starts[0].shape != (K, X.shape[1]):
                raise ValueError(f"init must have shape {(K, X.shape[1])}, got {tuple(starts[0].shape)}")
        else:
            starts = None
        n_runs = 1 if starts is not None else self.n_init
        for r in progress(range(n_runs), desc="k-means restarts", verbose=self.verbose):
            C0 = starts[0] if starts is not None else kmeans_plusplus(X, K, g)
            labels, C, inertia, n_iter = lloyd(X, C0, self.max_iter, self.tol)
            if best is None or inertia < best[2]:
                best = (labels, C, inertia, n_iter)
        labels, C, inertia, n_iter = best
        self.labels_ = labels.cpu().numpy()
        self.cluster_centers_ = C.cpu().numpy()
        self.inertia_ = inertia
        self.n_iter_ = n_iter
        self.n_features_in_ = X.shape[1]
        return self

    def _with_centres(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked X and the fitted centres, on the device and in the dtype of the fit."""
        self._check_fitted()
        device = self._device()
        X = as_tensor(X, dtype=self._dtype(device), device=device)
        self._check_n_features(X)
        return X, torch.as_tensor(self.cluster_centers_, dtype=X.dtype, device=device)

    def predict(self, X):
        """Index of the nearest fitted centre for each row of ``X``."""
        return assign(*self._with_centres(X))[0].cpu().numpy()

    def transform(self, X):
        """Euclidean distances of each row to every centre, (N, K)."""
        return _chunked_sqdist(*self._with_centres(X)).sqrt().cpu().numpy()


# ---------------------------------------------------------------------------
# Runner entry: k-means on raw pixels, the baseline of every chapter
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class KMeansConfig(MethodConfig):
    n_clusters: int = 10   # the number of classes of the benchmark
    n_init: int = 10       # scikit-learn's classic default; best inertia kept
    max_iter: int = 300    # scikit-learn default
    tol: float = 1e-4      # scikit-learn default (relative to mean feature variance)

    profiles = {"quick": {"n_init": 3}, "full": {}}  # k-means is cheap: only the restarts differ


def _fit(data, cfg: KMeansConfig, ctx: RunContext) -> FitResult:
    km = KMeans(cfg.n_clusters, n_init=cfg.n_init, max_iter=cfg.max_iter, tol=cfg.tol,
                random_state=ctx.seed, device=ctx.device, verbose=ctx.verbose).fit(data.flat())
    state = {"cluster_centers": torch.as_tensor(km.cluster_centers_, dtype=torch.float32)}
    return FitResult(labels=km.labels_, state=state,
                     extra_metrics={"inertia": km.inertia_, "n_iter": km.n_iter_})


def _reload(ck, data, cfg: KMeansConfig, device) -> np.ndarray:
    """Nearest saved centre (stored in float32) of every image, in float64."""
    X = data.flat().to(device, torch.float64)
    return assign(X, ck["cluster_centers"].to(device, torch.float64))[0].cpu().numpy()


SPEC = MethodSpec(KMeansConfig, _fit, "k-means (k-means++ seeding, restarts) on raw pixels",
                  reload=_reload)
