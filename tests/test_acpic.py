"""AC-PIC: the graph, the path integrals against their matrix formulas, the initial
clusters, and a case with a known answer where Ward's linkage and AC-PIC disagree."""
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_moons

from dcl_lib.methods.acpic import (ACPIC, acpic, conditional_path_integral, initial_clusters,
                                   knn_graph, path_integral)
from dcl_lib.metrics import cluster_acc


def test_the_graph_is_the_random_walk_on_k_nearest_neighbours():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    P, nearest = knn_graph(X, k=4, a=1.0)
    assert np.allclose(np.asarray(P.sum(1)).ravel(), 1.0)
    assert (np.diff(P.indptr) == 5).all()  # each row: itself and its 4 neighbours
    d2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    order = np.argsort(d2, 1)[:, :4]
    assert np.array_equal(nearest, order[:, 0])
    sigma2 = np.take_along_axis(d2, order, 1).mean()  # a = 1: the mean squared 4-NN distance
    W = np.eye(30)
    for i in range(30):
        W[i, order[i]] = np.exp(-d2[i, order[i]] / sigma2)
    assert np.allclose(P.toarray(), W / W.sum(1, keepdims=True), atol=1e-12)


def test_path_integrals_against_the_matrix_inverse():
    rng = np.random.default_rng(1)
    P, _ = knn_graph(rng.normal(size=(40, 3)), k=6)
    Pd, z = P.toarray(), 0.3  # a large z: the series must still converge to the inverse
    a, b = np.arange(0, 12), np.arange(12, 25)
    inv = lambda m: np.linalg.inv(np.eye(len(m)) - z * Pd[np.ix_(m, m)])  # noqa: E731
    assert path_integral(P, a, z) == pytest.approx(inv(a).sum() / 12 ** 2, rel=1e-12)
    u = np.concatenate([a, b])
    full = inv(u)
    sa, sb = conditional_path_integral(P, a, b, z)
    assert sa == pytest.approx(full[:12, :12].sum() / 12 ** 2, rel=1e-12)
    assert sb == pytest.approx(full[12:, 12:].sum() / 13 ** 2, rel=1e-12)
    # walks through the other cluster can only add paths: the increment is positive
    assert sa > path_integral(P, a, z) and sb > path_integral(P, b, z)


def test_initial_clusters_join_each_point_to_its_nearest_neighbour():
    nearest = np.array([1, 0, 3, 2, 3, 6, 5])  # {0,1}, {2,3,4}, {5,6}
    lab = initial_clusters(nearest)
    groups = {frozenset(np.flatnonzero(lab == c)) for c in np.unique(lab)}
    assert groups == {frozenset({0, 1}), frozenset({2, 3, 4}), frozenset({5, 6})}


@pytest.mark.parametrize("noise", [0.05, 0.08])
def test_acpic_follows_the_moons_where_ward_cuts_across(noise):
    """The known answer: two interleaved half-moons.  Ward's linkage, even restricted to the
    same 10-NN graph (the stand-in DEPICT used before), cuts across them (measured ACC
    0.75 and 0.85); the path integral follows each moon (1.0)."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.neighbors import kneighbors_graph

    X, y = make_moons(400, noise=noise, random_state=0)
    ward = AgglomerativeClustering(2, linkage="ward",
                                   connectivity=kneighbors_graph(X, 10, include_self=False))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ward completes a disconnected graph; it says so
        assert cluster_acc(y, ward.fit_predict(X)) < 0.9
    assert cluster_acc(y, acpic(X, 2, k=10)) == 1.0


def test_estimator_contract_and_bad_input():
    X, y = make_moons(200, noise=0.05, random_state=1)
    est = ACPIC(2, n_neighbors=10).fit(X)
    assert sorted(np.unique(est.labels_)) == [0, 1] and len(est.labels_) == 200
    assert np.array_equal(est.fit_predict(X), est.labels_)  # deterministic
    with pytest.raises(ValueError, match="z must be in"):
        ACPIC(2, z=1.5).fit(X)
    with pytest.raises(ValueError, match="larger than the number of samples"):
        ACPIC(500).fit(X)
    with pytest.raises(ValueError, match="k must be in"):
        acpic(X[:5], 2, k=10)
