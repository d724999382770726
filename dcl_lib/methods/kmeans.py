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

__all__ = ["KMeans", "KMeansConfig", "SPEC", "squared_distances", "assign", "kmeans_plusplus", "lloyd",
           "NearestCentre"]

_CHUNK = 65536
# below this many features the distances are cheap and the bounded iterations' extra
# operations cost more than they save (measured: 10-d codes, 0.51 s against 0.35 s)
_MIXED_MIN_D = 32


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
                    n_local_trials: int | None = None, x_sq: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007).

    The first centre is a uniform draw; each next one is the best, by the
    resulting potential, of ``n_local_trials`` draws with probability
    proportional to D(x)^2 (2 + log K trials, as scikit-learn does).
    ``x_sq`` (N,): the squared row norms of ``X``, when the caller has them.  (The
    candidates' distances stay in float64: in float32, 20-90 % of the rows could not be
    certified on MNIST, since any of the trials may win a row.)
    """
    n = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    centers = torch.empty(n_clusters, X.shape[1], dtype=X.dtype, device=X.device)
    first = int(torch.randint(n, (1,), generator=generator))
    centers[0] = X[first]
    if x_sq is None:
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


class NearestCentre:
    """The nearest centre of rows of ``X`` (N, D), as :func:`assign` finds it in
    float64, computed mostly in float32, with bounds for Lloyd's next iteration.

    Speed: a float32 distance reads half the bytes of a float64 one and runs at twice
    the rate of the vector unit.  Exactness: the error of a float32 squared distance
    ||x||^2 + ||c||^2 - 2 x.c is at most ``e = (D + 4) u (||x|| + ||c||)^2`` with
    u = 2^-24 (a dot product of D terms in any summation order, plus the roundings of
    the inputs, the norms and the sum), so a row whose two nearest float32 distances
    differ by more than ``2 e`` has the same nearest centre in exact arithmetic, hence
    in float64.  The other rows (a fraction of a percent on MNIST) are computed again
    in float64.  Used for float64 data only (``mixed``); other dtypes use
    :func:`assign`.

    ``exact_sums``: every entry of ``X`` is a float32 value and the entries' exponent
    range is narrow enough that every float64 sum of +-entries of a column is exact
    (N max|x| < 2^53 ulp_min): the cluster sums can then be updated point by point and
    stay equal to a fresh :func:`torch.Tensor.index_add_` (true of pixels in [0, 1],
    not of most codes; those get fresh sums every iteration).
    """

    U32, U64 = 2.0 ** -24, 2.0 ** -53

    def __init__(self, X: torch.Tensor, chunk: int = _CHUNK):
        self.X, self.chunk = X, chunk
        self.x_sq = torch.linalg.vector_norm(X, dim=1) ** 2
        self.mixed = X.dtype == torch.float64
        self.exact_sums = False
        if self.mixed:
            self.X32 = X.float()
            self.x_sq32 = self.x_sq.float()
            self.x_norm = self.x_sq.sqrt()
            self.exact_sums = self._sums_are_exact()
        self.recomputed = 0  # rows computed again in float64 (the last call)

    def _sums_are_exact(self, rows: int = 4096) -> bool:
        """Whether X holds float32 values of a narrow enough exponent range (in chunks
        of rows: no copy of X is made)."""
        lo, hi = math.inf, 0.0
        for s in range(0, self.X.shape[0], rows):
            x, x32 = self.X[s:s + rows], self.X32[s:s + rows]
            if not torch.equal(x32.double(), x):
                return False
            a = x32.abs()
            hi = max(hi, float(a.max()))
            a = a[a > 0]
            if a.numel():
                lo = min(lo, float(a.min()))
        if hi == 0.0:
            return True
        ulp = 2.0 ** (math.floor(math.log2(lo)) - 23)  # the finest spacing of any entry
        return self.X.shape[0] * hi / ulp < 2.0 ** 53

    def __call__(self, C: torch.Tensor, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, squared distances) of every row: :func:`assign`'s labels; the
        distances float32-accurate unless ``exact`` (then :func:`assign` itself)."""
        if not self.mixed or exact or C.shape[0] < 2:
            return assign(self.X, C, self.chunk, x_sq=self.x_sq)
        a, d1, _, _ = self.bounds(C)
        return a, d1

    def bounds(self, C: torch.Tensor, rows: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For ``rows`` (all when None): (nearest centre, its squared distance, the
        second-nearest squared distance, an error bound e of both) in float64, such that
        the exact squared distances lie within +-e (K >= 2)."""
        c_sq = torch.linalg.vector_norm(C, dim=1) ** 2
        C32, c_sq32 = C.float(), c_sq.float()
        c_max = float(c_sq.max().sqrt())
        D = self.X.shape[1]
        n = self.X.shape[0] if rows is None else rows.numel()
        out = [torch.empty(n, dtype=torch.long), *(torch.empty(n, dtype=torch.float64)
                                                   for _ in range(3))]
        self.recomputed = 0
        for s in range(0, n, self.chunk):
            part = slice(s, s + self.chunk)
            idx = torch.arange(s, min(s + self.chunk, n)) if rows is None else rows[part]
            X32 = self.X32[part] if rows is None else self.X32[idx]
            d = torch.addmm(self.x_sq32[idx, None] + c_sq32[None, :], X32, C32.T,
                            alpha=-2.0)  # (B, K) float32
            first, a = d.min(1)
            d.scatter_(1, a[:, None], float("inf"))
            second = d.min(1).values.double()
            first = first.double()
            scale = (self.x_norm[idx] + c_max) ** 2
            err = (D + 4) * self.U32 * scale  # float32's error bound, per row
            unsure = torch.nonzero(second - first <= 2 * err).flatten()
            if unsure.numel():  # too close to call in float32: float64, as assign does
                d64 = squared_distances(self.X[idx[unsure]], C, self.x_sq[idx[unsure]])
                m, a64 = d64.min(1)
                a[unsure], first[unsure] = a64, m
                d64.scatter_(1, a64[:, None], float("inf"))
                second[unsure] = d64.min(1).values
                err[unsure] = 0.0
                self.recomputed += unsure.numel()
            # float64's own error, so that bounds that separate two centres separate
            # their float64 distances too
            err += (D + 4) * self.U64 * scale
            for o, v in zip(out, (a, first, second, err)):
                o[part] = v
        return tuple(out)


def _lloyd_bounded(X: torch.Tensor, C: torch.Tensor, max_iter: int, tol_abs: float,
                   nearest: NearestCentre) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`lloyd`'s iterations with the same partitions, centres and stopping step,
    computing only what can have changed (Hamerly 2010's bounds).

    Each row keeps an upper bound u on its distance to its centre and a lower bound l
    on its distance to every other centre.  When centre k moves by delta_k, u grows by
    its centre's delta and l shrinks by the largest delta of another centre (the
    triangle inequality); a row with u < l keeps its centre and is not computed.  The
    cluster sums are updated by the rows that moved when that is exact
    (``nearest.exact_sums``), else summed afresh.  Returns (labels, centres, n_iter).
    """
    N, K = X.shape[0], C.shape[0]
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    a = torch.zeros(N, dtype=torch.long)
    u = torch.full((N,), float("inf"), dtype=torch.float64)
    l = torch.zeros(N, dtype=torch.float64)
    counts = sums = None
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        todo = None if counts is None else torch.nonzero(u >= l).flatten()
        if todo is not None and todo.numel() > N // 4:
            todo = torch.arange(N)  # most rows: computing them all beats gathering them
            new_a, d1, d2, err = nearest.bounds(C)
        else:
            new_a, d1, d2, err = nearest.bounds(C, todo)
        up = torch.nextafter((d1 + err).sqrt(), inf)
        low = torch.nextafter((d2 - err).clamp_min(0).sqrt(), -inf)
        if counts is None:  # the first iteration: every row, fresh sums
            a, u, l = new_a, up, low
            counts = torch.bincount(a, minlength=K)
            sums = torch.zeros_like(C).index_add_(0, a, X)
            moved = True
        else:
            old = a[todo]
            ch = torch.nonzero(new_a != old).flatten()
            if todo.numel() == N:
                a, u, l = new_a, up, low
            else:
                a[todo], u[todo], l[todo] = new_a, up, low
            moved = ch.numel() > 0
            if moved:
                rows, src, dst = todo[ch], old[ch], new_a[ch]
                counts = torch.bincount(a, minlength=K)
                if nearest.exact_sums:
                    sums.index_add_(0, dst, X[rows]).index_add_(0, src, X[rows], alpha=-1)
                else:
                    sums = torch.zeros_like(C).index_add_(0, a, X)
        if not moved and bool((counts > 0).all()):
            break  # the same partition again: the centres are already its means
        new = sums / counts.clamp_min(1)[:, None].to(X.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel() > 0:  # as lloyd: the farthest points, by exact distances
            dist = assign(X, C, x_sq=nearest.x_sq)[1]
            far = torch.argsort(dist, descending=True)[: empty.numel()]
            new[empty] = X[far]
        delta = torch.nextafter(torch.linalg.vector_norm(new - C, dim=1) * (1 + 1e-12), inf)
        top = delta.topk(min(2, K)).values
        other = torch.where(torch.arange(K) == delta.argmax(), top[-1], top[0])  # max over j != k
        u = torch.nextafter(u + delta[a], inf)
        l = torch.nextafter(l - other[a], -inf)
        shift = float(((new - C) ** 2).sum())
        C = new
        if shift <= tol_abs:
            break
    return a, C, n_iter


def lloyd(X: torch.Tensor, centers: torch.Tensor, max_iter: int = 300, tol: float = 1e-4,
          nearest: NearestCentre | None = None, tol_abs: float | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Lloyd's algorithm from ``centers``.

    Stops when the squared centre shift falls below ``tol`` times the mean
    per-feature variance of ``X`` (scikit-learn's convention; ``tol_abs`` gives that
    product directly), or when no label changed (the centres can no longer move).  An
    empty cluster is re-seeded at the point farthest from the centre it is assigned to
    (scikit-learn's rule: the worst-fitted point).
    ``nearest``: a :class:`NearestCentre` of ``X`` to reuse across restarts; on a CPU,
    in float64, with two or more centres and 32 or more features, the iterations run
    in :func:`_lloyd_bounded` (the same iterates, fewer distances).

    Returns (labels, centers, inertia, n_iter); the inertia is summed from distances
    computed in ``X``'s dtype.
    """
    if tol_abs is None:
        tol_abs = tol * float(X.var(0).mean()) if X.shape[0] > 1 else 0.0
    nearest = nearest or NearestCentre(X)
    C = centers.clone()
    K = C.shape[0]
    if nearest.mixed and K >= 2 and X.device.type == "cpu" and X.shape[1] >= _MIXED_MIN_D:
        _, C, n_iter = _lloyd_bounded(X, C, max_iter, tol_abs, nearest)
        labels, dist = assign(X, C, x_sq=nearest.x_sq)
        return labels, C, float(dist.sum()), n_iter
    n_iter, previous = 0, None
    for n_iter in range(1, max_iter + 1):
        labels, dist = assign(X, C, x_sq=nearest.x_sq)
        counts = torch.bincount(labels, minlength=K)
        if previous is not None and bool((counts > 0).all()) and torch.equal(labels, previous):
            break  # the same partition again: the centres are already its means
        sums = torch.zeros_like(C).index_add_(0, labels, X)
        new = sums / counts.clamp_min(1)[:, None].to(X.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel() > 0:
            far = torch.argsort(dist, descending=True)[: empty.numel()]
            new[empty] = X[far]
        shift = float(((new - C) ** 2).sum())
        C, previous = new, labels
        if shift <= tol_abs:
            break
    labels, dist = assign(X, C, x_sq=nearest.x_sq)
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
        nearest = NearestCentre(X)
        tol_abs = self.tol * float(X.var(0).mean()) if X.shape[0] > 1 else 0.0
        for r in progress(range(n_runs), desc="k-means restarts", verbose=self.verbose):
            C0 = starts[0] if starts is not None else kmeans_plusplus(X, K, g, x_sq=nearest.x_sq)
            labels, C, inertia, n_iter = lloyd(X, C0, self.max_iter, self.tol, nearest, tol_abs)
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
