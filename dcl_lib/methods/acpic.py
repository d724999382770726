"""AC-PIC: agglomerative clustering by maximum incremental path integral (Zhang, Zhao and
Wang, Pattern Recognition 2013), the partition the official DEPICT code starts its
10,000-image datasets (MNIST-test, USPS) from.

A directed K-nearest-neighbour graph on the points has weights

    w_ij = exp(-||x_i - x_j||^2 / sigma^2)  for the K nearest j of i,  w_ii = 1,

with sigma^2 = a times the mean squared distance to the K nearest neighbours (doubled
until no point's nearest neighbour weighs below 1e-5); P = D^-1 W is its random walk.
The *path integral* of a cluster C sums the walks that stay inside C, each of length l
weighted by z^l:

    S_C = (1 / |C|^2) 1^T (I - z P_C)^-1 1                         (P_C: P restricted to C)

and the affinity of two clusters is how much each one's path integral grows when the walks
may also pass through the other,

    A(C_a, C_b) = [S_{C_a | C_a u C_b} - S_{C_a}] + [S_{C_b | C_a u C_b} - S_{C_b}],
    S_{C_a | C_a u C_b} = (1 / |C_a|^2) 1_a^T (I - z P_{C_a u C_b})^-1 1_a .

Start: every point with its nearest neighbour (the connected components of the 1-NN
graph); then merge the two clusters of largest affinity until ``n_clusters`` remain.  Two
clusters with no edge between them have affinity 0 (the walks cannot cross), so only
neighbouring clusters are compared.  Since z is small (0.01), (I - zP)^-1 1 is computed by
its Neumann series, sum_l z^l P^l 1, on the sparse graph, to float64 precision.

Defaults as the official code: K = 20, a = 1, z = 0.01.
"""
from __future__ import annotations

import heapq

import numpy as np
import scipy.sparse as sp
import torch

from .base import ClusterEstimator, as_tensor, check_n_clusters

__all__ = ["knn_graph", "path_integral", "conditional_path_integral", "initial_clusters",
           "acpic", "ACPIC"]


def knn_graph(X: np.ndarray, k: int = 20, a: float = 1.0) -> tuple[sp.csr_matrix, np.ndarray]:
    """The random walk P = D^-1 W on the directed K-NN graph (sparse, rows summing to 1)
    and each point's nearest neighbour (N,)."""
    from sklearn.neighbors import NearestNeighbors

    n = X.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} points, got {k}")
    d2, idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    d2, idx = d2[:, 1:] ** 2, idx[:, 1:]  # the point itself comes first: dropped
    sigma2 = float(d2.mean()) * a
    if sigma2 <= 0:
        raise ValueError("every point coincides with its neighbours: no scale for the graph")
    while np.any(np.exp(-d2[:, 0] / sigma2) < 1e-5):
        sigma2 *= 2
    rows = np.repeat(np.arange(n), k)
    W = sp.csr_matrix((np.exp(-d2.ravel() / sigma2), (rows, idx.ravel())), shape=(n, n))
    W = W + sp.identity(n, format="csr")
    P = sp.diags(1.0 / np.asarray(W.sum(1)).ravel()) @ W
    return P.tocsr(), idx[:, 0]


def _walk_sums(P_sub: sp.csr_matrix, y: np.ndarray, z: float, tol: float = 1e-16) -> np.ndarray:
    """(I - z P_sub)^-1 y by the Neumann series sum_l (z P_sub)^l y."""
    total, term = y.astype(np.float64).copy(), y.astype(np.float64)
    while True:
        term = z * (P_sub @ term)
        total += term
        if np.abs(term).max() <= tol * np.abs(total).max():
            return total


def path_integral(P: sp.csr_matrix, members: np.ndarray, z: float = 0.01) -> float:
    """S_C = (1 / |C|^2) 1^T (I - z P_C)^-1 1."""
    sub = P[members][:, members]
    return float(_walk_sums(sub, np.ones(len(members)), z).sum()) / len(members) ** 2


def conditional_path_integral(P: sp.csr_matrix, a: np.ndarray, b: np.ndarray, z: float = 0.01
                              ) -> tuple[float, float]:
    """(S_{C_a | C_a u C_b}, S_{C_b | C_a u C_b}): each cluster's walks on the union."""
    union = np.concatenate([a, b])
    sub = P[union][:, union]
    y = np.zeros((len(union), 2))
    y[:len(a), 0], y[len(a):, 1] = 1.0, 1.0
    s = _walk_sums(sub, y, z)
    return float(s[:len(a), 0].sum()) / len(a) ** 2, float(s[len(a):, 1].sum()) / len(b) ** 2


def initial_clusters(nearest: np.ndarray) -> np.ndarray:
    """Labels of the connected components of the graph linking each point to its nearest
    neighbour (every point with its nearest neighbour, merged transitively)."""
    from scipy.sparse.csgraph import connected_components

    n = len(nearest)
    g = sp.csr_matrix((np.ones(n), (np.arange(n), nearest)), shape=(n, n))
    return connected_components(g, directed=True, connection="weak")[1]


def acpic(X, n_clusters: int, k: int = 20, a: float = 1.0, z: float = 0.01) -> np.ndarray:
    """AC-PIC's partition of the rows of X (N, d) into ``n_clusters`` (labels 0..K-1, in
    the order of each cluster's smallest index)."""
    X = np.asarray(X, dtype=np.float64)
    P, nearest = knn_graph(X, k, a)
    labels = initial_clusters(nearest)
    members = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    if len(members) < n_clusters:  # fewer nearest-neighbour groups than clusters asked for
        raise ValueError(f"the nearest-neighbour groups are already {len(members)}, fewer than "
                         f"n_clusters={n_clusters}")
    S = {c: path_integral(P, m, z) for c, m in members.items()}
    adj = (P + P.T).tocsr()  # clusters are neighbours if an edge joins them, either way

    def neighbours(c):
        pts = adj[members[c]].indices
        return set(np.unique(labels[pts])) - {c}

    def affinity(ca, cb):
        sa, sb = conditional_path_integral(P, members[ca], members[cb], z)
        return (sa - S[ca]) + (sb - S[cb])

    heap, alive = [], set(members)
    for ca in members:
        for cb in neighbours(ca):
            if ca < cb:
                heapq.heappush(heap, (-affinity(ca, cb), ca, cb))
    next_id = max(members) + 1
    while len(alive) > n_clusters:
        if not heap:  # no edges left between clusters: merge the smallest two (affinity 0)
            ca, cb = sorted(alive, key=lambda c: (len(members[c]), c))[:2]
        else:
            _, ca, cb = heapq.heappop(heap)
            if ca not in alive or cb not in alive:
                continue  # stale: one of the two merged into another cluster since
        new = next_id
        next_id += 1
        members[new] = np.concatenate([members.pop(ca), members.pop(cb)])
        labels[members[new]] = new
        alive -= {ca, cb}
        alive.add(new)
        S[new] = path_integral(P, members[new], z)
        for c in neighbours(new):
            heapq.heappush(heap, (-affinity(c, new), c, new))
    order = sorted(alive, key=lambda c: members[c].min())
    out = np.empty(len(X), dtype=np.int64)
    for i, c in enumerate(order):
        out[members[c]] = i
    return out


class ACPIC(ClusterEstimator):
    """:func:`acpic` with scikit-learn's contract: ``fit(X)`` sets ``labels_``."""

    def __init__(self, n_clusters: int = 10, n_neighbors: int = 20, a: float = 1.0, z: float = 0.01):
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.a = a
        self.z = z

    def fit(self, X, y=None):
        X = as_tensor(X, dtype=torch.float64)
        check_n_clusters(self.n_clusters, X.shape[0])
        if not 0 < self.z < 1:
            raise ValueError(f"z must be in (0, 1), got {self.z!r}")
        self.labels_ = acpic(X.cpu().numpy(), self.n_clusters, self.n_neighbors, self.a, self.z)
        self.n_features_in_ = X.shape[1]
        return self
