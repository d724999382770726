"""k-means: agreement with scikit-learn from the same start, seeding, determinism."""
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

from dcl_lib.methods.kmeans import KMeans, kmeans_plusplus, lloyd, squared_distances


def test_squared_distances_against_cdist():
    rng = np.random.default_rng(0)
    X, C = rng.normal(size=(50, 7)), rng.normal(size=(4, 7))
    ref = ((X[:, None] - C[None]) ** 2).sum(-1)
    got = squared_distances(torch.tensor(X), torch.tensor(C)).numpy()
    assert np.allclose(got, ref, atol=1e-10)


def test_lloyd_matches_sklearn_from_same_init():
    X, _ = make_blobs(800, centers=5, n_features=6, cluster_std=2.5, random_state=1)
    init = X[:5].copy()
    sk = SKKMeans(5, init=init, n_init=1, max_iter=300, tol=1e-4, algorithm="lloyd").fit(X)
    labels, C, inertia, _ = lloyd(torch.tensor(X), torch.tensor(init), 300, 1e-4)
    assert np.array_equal(labels.numpy(), sk.labels_)
    assert inertia == pytest.approx(sk.inertia_, rel=1e-9)
    assert np.allclose(C.numpy(), sk.cluster_centers_, atol=1e-8)


def test_kmeanspp_spreads_centres():
    X, y = make_blobs(1000, centers=[[0, 0], [20, 0], [0, 20], [20, 20]], cluster_std=0.5,
                      random_state=0)
    C = kmeans_plusplus(torch.tensor(X), 4, torch.Generator().manual_seed(0))
    # one seed per well-separated blob
    nearest_blob = np.argmin(((C.numpy()[:, None] - np.array([[0, 0], [20, 0], [0, 20], [20, 20]])) ** 2).sum(-1), 1)
    assert sorted(nearest_blob) == [0, 1, 2, 3]


def test_estimator_recovers_blobs_and_is_deterministic():
    X, y = make_blobs(600, centers=6, n_features=5, random_state=2)
    a = KMeans(6, n_init=4, random_state=3).fit(X)
    b = KMeans(6, n_init=4, random_state=3).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    from dcl_lib.metrics import cluster_acc

    assert cluster_acc(y, a.labels_) == 1.0
    assert np.array_equal(a.predict(X), a.labels_)
    assert a.transform(X).shape == (600, 6)
    sk = SKKMeans(6, n_init=4, random_state=0).fit(X)
    assert a.inertia_ == pytest.approx(sk.inertia_, rel=1e-6)


def test_empty_cluster_is_reseeded():
    X = np.concatenate([np.zeros((10, 2)), np.ones((10, 2)), np.full((5, 2), 5.0)])
    init = np.array([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]])  # third centre attracts nothing
    labels, C, _, _ = lloyd(torch.tensor(X), torch.tensor(init), 50, 1e-4)
    assert len(np.unique(labels.numpy())) == 3
