"""Clustering metrics: ACC (Hungarian), NMI, ARI, purity, aligned confusion.

Everything is computed from the contingency table
``n[k, j] = |{i : c_i = k, y_i = j}|`` (clusters in rows, classes in columns),
so the number of clusters may differ from the number of classes.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "contingency",
    "cluster_acc",
    "match_clusters",
    "aligned_confusion",
    "largest_confusions",
    "nmi",
    "ari",
    "rand_index",
    "purity",
    "evaluate",
]

_AVERAGES = ("arithmetic", "geometric", "max", "min")


def _as_labels(a, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: need at least one label")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or inf; labels must be integers")
        if not np.all(a == np.round(a)):
            raise ValueError(f"{name} has non-integer values; pass integer cluster/class labels")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
    return a.astype(np.int64)


def _check_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y = _as_labels(y_true, "y_true")
    c = _as_labels(y_pred, "y_pred")
    if y.shape != c.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y.size} vs {c.size}")
    return y, c


def contingency(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency table ``n[k, j]`` with the cluster ids and class ids it uses."""
    y, c = _check_pair(y_true, y_pred)
    classes, yi = np.unique(y, return_inverse=True)
    clusters, ci = np.unique(c, return_inverse=True)
    n = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(n, (ci, yi), 1)
    return n, clusters, classes


def match_clusters(y_true, y_pred) -> dict[int, int]:
    """The one-to-one cluster -> class map that maximises agreement.

    Solved with the Hungarian algorithm on ``-n`` (scipy's
    ``linear_sum_assignment`` accepts rectangular matrices: with more
    clusters than classes some clusters stay unmatched and are absent here).
    """
    n, clusters, classes = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(-n)
    return {int(clusters[r]): int(classes[k]) for r, k in zip(rows, cols)}


def cluster_acc(y_true, y_pred) -> float:
    """ACC = max over bijections m of (1/n) sum_i 1{y_i = m(c_i)}."""
    n, _, _ = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(-n)
    return float(n[rows, cols].sum() / n.sum())


def aligned_confusion(y_true, y_pred) -> tuple[np.ndarray, list[int]]:
    """Confusion matrix with clusters reordered to match the classes.

    Returns ``(M, order)``: ``M[j, r]`` counts items of class j (row, sorted
    class ids) in the r-th cluster of ``order``.  Clusters matched to a class
    come first, in class order, so a perfect clustering is diagonal; unmatched
    clusters (when there are more clusters than classes) follow.
    """
    n, clusters, classes = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(-n)
    matched = sorted(zip(cols, rows))  # by class
    order = [int(r) for _, r in matched]
    order += [r for r in range(len(clusters)) if r not in set(order)]
    return n[order].T.copy(), [int(clusters[r]) for r in order]


def largest_confusions(M, n: int) -> list[tuple[int, int, int]]:
    """The ``n`` largest cells off the diagonal of an aligned confusion matrix ``M``
    (:func:`aligned_confusion`), as ``(count, j, r)``: ``count`` items of class j in the
    cluster matched to class r; largest first (ties: the larger j, then r, first)."""
    M = np.asarray(M)
    if M.ndim != 2 or n < 0:
        raise ValueError(f"need a 2-D confusion matrix and n >= 0, got shape {M.shape}, n={n}")
    cells = ((int(M[j, r]), j, r) for j in range(M.shape[0]) for r in range(M.shape[1]) if r != j)
    return sorted(cells, reverse=True)[:n]


def purity(y_true, y_pred) -> float:
    """(1/n) sum_k max_j n_kj; it is >= ACC when #clusters = #classes."""
    n, _, _ = contingency(y_true, y_pred)
    return float(n.max(axis=1).sum() / n.sum())


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(y_true, y_pred, average_method: str = "arithmetic") -> float:
    """Normalised mutual information I(y; c) / M(H(y), H(c)).

    ``average_method`` is ``arithmetic`` (scikit-learn's default since 0.22,
    equal to the V-measure), ``geometric`` (what 2017-2018 papers computed
    with scikit-learn's defaults of the time), ``max`` or ``min``.
    """
    if average_method not in _AVERAGES:
        raise ValueError(f"average_method must be one of {_AVERAGES}, got {average_method!r}")
    n, _, _ = contingency(y_true, y_pred)
    total = n.sum()
    a, b = n.sum(axis=1), n.sum(axis=0)
    nz = n > 0
    mi = float((n[nz] / total * np.log(n[nz] * total / np.outer(a, b)[nz])).sum())
    hc, hy = _entropy(a), _entropy(b)
    if hc == 0.0 and hy == 0.0:
        return 1.0  # both trivial labelings: identical partitions
    norm = {
        "arithmetic": 0.5 * (hc + hy),
        "geometric": np.sqrt(hc * hy),
        "max": max(hc, hy),
        "min": min(hc, hy),
    }[average_method]
    if norm <= 0:
        return 0.0
    return float(min(max(mi, 0.0) / norm, 1.0))


def _comb2(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    return v * (v - 1) / 2


def ari(y_true, y_pred) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985): 0 in expectation under chance."""
    n, _, _ = contingency(y_true, y_pred)
    sum_nij = _comb2(n).sum()
    sum_a = _comb2(n.sum(axis=1)).sum()
    sum_b = _comb2(n.sum(axis=0)).sum()
    total = _comb2(np.array([n.sum()]))[0]
    expected = sum_a * sum_b / total if total > 0 else 0.0
    max_index = 0.5 * (sum_a + sum_b)
    if max_index == expected:  # both partitions trivial (all-one or all-singletons)
        return 1.0
    return float((sum_nij - expected) / (max_index - expected))


def rand_index(y_true, y_pred) -> float:
    """The (unadjusted) Rand index: fraction of pairs on which both agree."""
    n, _, _ = contingency(y_true, y_pred)
    total = _comb2(np.array([n.sum()]))[0]
    if total == 0:
        return 1.0
    same_both = _comb2(n).sum()
    same_c = _comb2(n.sum(axis=1)).sum()
    same_y = _comb2(n.sum(axis=0)).sum()
    agree = total + 2 * same_both - same_c - same_y
    return float(agree / total)


def evaluate(y_true, y_pred, average_method: str = "arithmetic") -> dict[str, float]:
    """ACC, NMI (with ``average_method``), ARI and purity in one dict."""
    return {
        "acc": cluster_acc(y_true, y_pred),
        "nmi": nmi(y_true, y_pred, average_method),
        "ari": ari(y_true, y_pred),
        "purity": purity(y_true, y_pred),
    }
