"""Metrics against scikit-learn / scipy and hand-computed cases."""
import itertools

import numpy as np
import pytest
from sklearn import metrics as skm

from dcl_lib.metrics import (aligned_confusion, ari, cluster_acc, evaluate, match_clusters, nmi,
                             purity, rand_index)


def _brute_acc(y, c):
    """ACC by enumerating every injective cluster -> class map (small cases only)."""
    ks, js = np.unique(c), np.unique(y)
    best = 0
    for perm in itertools.permutations(js, min(len(ks), len(js))) if len(ks) <= len(js) else []:
        m = dict(zip(ks, perm))
        best = max(best, sum(m.get(ci) == yi for ci, yi in zip(c, y)))
    if len(ks) > len(js):
        for chosen in itertools.permutations(ks, len(js)):
            m = dict(zip(chosen, js))
            best = max(best, sum(m.get(ci) == yi for ci, yi in zip(c, y)))
    return best / len(y)


@pytest.mark.parametrize("seed", range(6))
def test_against_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 60)
    c = np.where(rng.random(60) < 0.6, y, rng.integers(0, 3 + seed % 3, 60))
    assert cluster_acc(y, c) == pytest.approx(_brute_acc(y, c))
    for avg in ("arithmetic", "geometric", "max", "min"):
        assert nmi(y, c, avg) == pytest.approx(
            skm.normalized_mutual_info_score(y, c, average_method=avg), abs=1e-12)
    assert ari(y, c) == pytest.approx(skm.adjusted_rand_score(y, c), abs=1e-12)
    assert rand_index(y, c) == pytest.approx(skm.rand_score(y, c), abs=1e-12)
    table = skm.cluster.contingency_matrix(y, c)
    assert purity(y, c) == pytest.approx(table.max(axis=0).sum() / len(y))


def test_permuted_labels_give_perfect_scores():
    y = np.repeat(np.arange(5), 20)
    c = (y * 3 + 1) % 5 + 10  # a relabelling with other ids
    r = evaluate(y, c)
    assert r == {"acc": 1.0, "nmi": 1.0, "ari": 1.0, "purity": 1.0}


def test_why_acc_needs_the_matching():
    y = np.array([0, 0, 1, 1, 2, 2])
    c = np.array([2, 2, 0, 0, 1, 1])
    assert np.mean(y == c) == 0.0  # naive agreement
    assert cluster_acc(y, c) == 1.0
    assert match_clusters(y, c) == {2: 0, 0: 1, 1: 2}


def test_more_clusters_than_classes():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    c = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    # only two clusters can be matched: best is cluster 0 or 1 -> class 0 (2 hits), 2 -> class 1 (3)
    assert cluster_acc(y, c) == pytest.approx(5 / 8)
    assert purity(y, c) == 1.0  # every cluster is pure
    M, order = aligned_confusion(y, c)
    assert M.shape == (2, 4) and M.sum() == 8
    assert M[0, 0] == 2 and M[1, 1] == 3  # matched clusters on the diagonal
    assert sorted(order) == [0, 1, 2, 3]


def test_fewer_clusters_than_classes():
    y = np.array([0, 1, 2, 0, 1, 2])
    c = np.zeros(6, dtype=int)
    assert cluster_acc(y, c) == pytest.approx(2 / 6)
    assert ari(y, c) == pytest.approx(skm.adjusted_rand_score(y, c))
    assert nmi(y, c) == pytest.approx(skm.normalized_mutual_info_score(y, c))


def test_aligned_confusion_is_diagonal_for_a_permutation():
    y = np.repeat(np.arange(4), 5)
    c = np.array([3, 1, 0, 2])[y]
    M, order = aligned_confusion(y, c)
    assert np.array_equal(M, np.diag([5] * 4))
    assert order == [3, 1, 0, 2]


def test_rand_index_is_not_chance_corrected():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 2000)
    c = rng.integers(0, 10, 2000)
    assert rand_index(y, c) > 0.8  # high for random labels
    assert abs(ari(y, c)) < 0.01  # ARI ~ 0 for random labels


def test_hand_computed_ari():
    # y = [0,0,1,1], c = [0,0,0,1]: n_ij = [[2,0],[1,1]]; sum C(n_ij,2) = 1
    # a = [3,1] -> 3, b = [2,2] -> 2, C(4,2) = 6, expected = 1, max = 2.5
    assert ari([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx((1 - 1) / (2.5 - 1))


def test_accepts_tensors():
    torch = pytest.importorskip("torch")
    y = torch.tensor([0, 1, 1])
    assert cluster_acc(y, torch.tensor([1, 0, 0])) == 1.0


def test_nmi_default_is_the_arithmetic_mean():
    """Pinned: the default normalisation is the arithmetic mean of the two entropies
    (scikit-learn's default), on a case where arithmetic, geometric, max and min differ."""
    y = np.array([0] * 6 + [1] * 2 + [2] * 2)
    c = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    values = {a: nmi(y, c, a) for a in ("arithmetic", "geometric", "max", "min")}
    assert len({round(v, 6) for v in values.values()}) == 4
    assert nmi(y, c) == values["arithmetic"]
    assert nmi(y, c) == pytest.approx(skm.normalized_mutual_info_score(y, c, average_method="arithmetic"))
    assert evaluate(y, c)["nmi"] == values["arithmetic"]


def test_largest_confusions_against_a_masked_argsort():
    from dcl_lib.metrics import largest_confusions
    rng = np.random.default_rng(0)
    M = rng.permutation(30).reshape(5, 6)  # distinct counts, one cluster more than classes
    masked = M.astype(float)
    masked[np.arange(5), np.arange(5)] = -np.inf  # the diagonal is not a confusion
    flat = np.argsort(-masked, axis=None)[:4]
    expect = [(int(M.flat[i]), *map(int, np.unravel_index(i, M.shape))) for i in flat]
    assert largest_confusions(M, 4) == expect
    assert all(j != r for _, j, r in largest_confusions(M, 25))
    with pytest.raises(ValueError):
        largest_confusions(M[0], 2)


# -- edge cases and contracts the mutation run found untested --------------------------------

def test_float_and_tensor_labels_are_read_as_integers():
    import torch

    y, c = np.array([0, 0, 1, 1, 2, 2]), np.array([1, 1, 0, 0, 2, 0])
    ref = evaluate(y, c)
    assert evaluate(y.astype(float), c.astype(float)) == ref
    t = torch.tensor(c, dtype=torch.float32, requires_grad=True)  # needs .detach()
    assert evaluate(torch.tensor(y), t) == ref
    with pytest.raises(ValueError, match="non-integer"):
        evaluate(y, c + 0.5)
    with pytest.raises(ValueError, match="^y_pred must hold integer labels"):
        evaluate(y, np.array(["a"] * 6))


@pytest.mark.parametrize("average", ["arithmetic", "geometric", "min", "max"])
def test_nmi_edge_cases_against_sklearn(average):
    """Trivial labelings, singleton clusters, small entropies (norm below 1 nat)."""
    cases = [
        ([0, 0, 0, 0], [1, 1, 1, 1]),          # both trivial: identical partitions
        ([0, 0, 1, 1], [0, 0, 0, 0]),          # one trivial
        ([0, 0, 0, 1], [0, 1, 2, 3]),          # singletons
        ([0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1, 0]),  # entropies below 1 nat
    ]
    for y, c in cases:
        got = nmi(y, c, average)
        ref = skm.normalized_mutual_info_score(y, c, average_method=average)
        assert got == pytest.approx(ref, abs=1e-12), (y, c)
    a = np.random.default_rng(0).integers(0, 5, 200)
    assert nmi(a, a, average) == 1.0  # exactly, not a rounding above it


def test_ari_and_rand_index_on_one_sample_and_trivial_partitions():
    assert ari([0], [3]) == skm.adjusted_rand_score([0], [3]) == 1.0
    assert rand_index([0], [3]) == 1.0
    assert ari([0, 0, 0], [1, 1, 1]) == skm.adjusted_rand_score([0, 0, 0], [1, 1, 1])
    for y, c in (([0, 1], [0, 0]), ([0, 1], [0, 1]), ([0, 0], [0, 1]), ([0, 1, 1], [0, 0, 1])):
        assert ari(y, c) == pytest.approx(skm.adjusted_rand_score(y, c), abs=1e-12), (y, c)
        assert rand_index(y, c) == pytest.approx(skm.rand_score(y, c), abs=1e-12), (y, c)
    assert ari([0, 1, 2], [0, 1, 2]) == pytest.approx(skm.adjusted_rand_score([0, 1, 2], [0, 1, 2]))


def test_evaluate_passes_the_nmi_average_on():
    y, c = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    assert evaluate(y, c, "geometric")["nmi"] == nmi(y, c, "geometric") != nmi(y, c)


def test_contingency_counts_are_integers_and_largest_confusions_of_none():
    from dcl_lib.metrics import contingency, largest_confusions

    n, clusters, classes = contingency([0, 1, 1], [5, 5, 7])
    assert n.dtype == np.int64 and n.tolist() == [[1, 1], [0, 1]]
    assert largest_confusions(np.eye(3), 0) == []
    with pytest.raises(ValueError, match="n >= 0"):
        largest_confusions(np.eye(3), -1)
