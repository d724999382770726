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


# ---------------------------------------------------------------------------
# The fast path: float32 distances certified against float64, Hamerly's bounds
# ---------------------------------------------------------------------------

from dcl_lib.methods.kmeans import NearestCentre, assign  # noqa: E402


def _near_ties(n=3000, d=40, seed=0):
    """Rows of which many sit almost exactly between two centres (the float32 margin
    cannot separate them), and the centres."""
    g = torch.Generator().manual_seed(seed)
    C = torch.rand(6, d, generator=g, dtype=torch.float64)
    t = 0.5 + 1e-9 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    X = (1 - t) * C[0] + t * C[1]
    X = torch.cat([X, torch.rand(n, d, generator=g, dtype=torch.float64)])
    return X, C


def test_nearest_centre_gives_float64_labels_and_valid_bounds():
    X, C = _near_ties()
    near = NearestCentre(X)
    a, d1, d2, err = near.bounds(C)
    exact = ((X[:, None, :] - C[None]) ** 2).sum(-1)  # (N, K), by the definition
    ref = assign(X, C)[0]
    assert torch.equal(a, ref)
    assert near.recomputed >= 3000  # the near-ties went to float64
    srt = exact.sort(1).values
    assert (srt[:, 0] >= d1 - err).all() and (srt[:, 0] <= d1 + err).all()
    assert (srt[:, 1] >= d2 - err).all() and (srt[:, 1] <= d2 + err).all()
    # a subset of rows gives the same answers as those rows of the whole
    rows = torch.arange(0, len(X), 7)
    b = near.bounds(C, rows)
    assert torch.equal(b[0], a[rows])
    assert torch.equal(near(C)[0], ref) and torch.equal(near(C, exact=True)[0], ref)


def test_the_certificate_is_needed_float32_alone_mislabels_near_ties():
    X, C = _near_ties()
    d32 = torch.cdist(X.float(), C.float()) ** 2
    assert not torch.equal(d32.argmin(1), assign(X, C)[0])  # why rows are recomputed


def test_exact_sums_only_for_float32_values_of_a_narrow_range():
    from sklearn.datasets import load_digits

    pixels = torch.tensor(load_digits().data / 16.0, dtype=torch.float32).double()
    assert NearestCentre(pixels).exact_sums
    assert not NearestCentre(torch.rand(100, 40, dtype=torch.float64)).exact_sums  # not float32
    wide = torch.rand(100, 40).double()
    wide[0, 0] = 1e-30  # float32, but sums of it with O(1) entries round
    assert not NearestCentre(wide).exact_sums


@pytest.mark.parametrize("kind", ["pixels", "float64"])
def test_bounded_iterations_equal_plain_lloyd(kind):
    """The same partitions, centres and stopping step as Lloyd computing every
    distance, on data where the sums are exact (bitwise equal) and where they are not."""
    from sklearn.datasets import load_digits

    if kind == "pixels":
        X = torch.tensor(load_digits().data / 16.0, dtype=torch.float32).double()
    else:
        X = torch.randn(1500, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        C0 = kmeans_plusplus(X, 10, g)
        fast = NearestCentre(X)
        assert fast.mixed and fast.exact_sums == (kind == "pixels")
        plain = NearestCentre(X)
        plain.mixed = False  # assign() for every distance, fresh sums
        la, Ca, ia, na = lloyd(X, C0, 300, 1e-4, fast)
        lb, Cb, ib, nb = lloyd(X, C0, 300, 1e-4, plain)
        assert torch.equal(la, lb) and na == nb
        if kind == "pixels":
            assert torch.equal(Ca, Cb) and ia == ib
        else:
            assert torch.allclose(Ca, Cb, rtol=0, atol=1e-12) and ia == pytest.approx(ib, rel=1e-12)


@pytest.mark.parametrize("d", [2, 40])  # the plain and the bounded iterations
def test_an_empty_cluster_moves_to_the_point_farthest_from_its_own_centre(d):
    """scikit-learn's rule: the worst-fitted point (largest distance to the centre it is
    assigned to) becomes the empty cluster's centre, not the best-fitted one."""
    g = torch.Generator().manual_seed(0)
    X = torch.cat([torch.zeros(10, d), torch.ones(10, d), torch.full((5, d), 5.0)]).double()
    X = X + 0.01 * torch.rand(X.shape, generator=g, dtype=torch.float64)
    init = torch.stack([torch.zeros(d), torch.ones(d), torch.full((d,), 100.0)]).double()
    own = ((X[:, None] - init[None]) ** 2).sum(-1).min(1).values  # to the assigned centre
    assert own.argmax() >= 20  # a point of the 5-blob, assigned to the centre at 1
    _, C, _, n_iter = lloyd(X, init, max_iter=1)
    assert n_iter == 1 and torch.equal(C[2], X[int(own.argmax())])
    assert not torch.equal(C[2], X[int(own.argmin())])


def test_transform_returns_euclidean_distances_and_predict_the_nearest():
    from scipy.spatial.distance import cdist

    X, _ = make_blobs(300, centers=4, n_features=3, random_state=0)
    km = KMeans(4, n_init=2, random_state=0).fit(X)
    D = km.transform(X)
    assert np.allclose(D, cdist(X, km.cluster_centers_), atol=1e-10)  # not squared
    assert np.array_equal(km.predict(X), D.argmin(1))


def test_kmeans_plusplus_takes_the_best_of_its_greedy_trials():
    """Each next centre is, of the 2 + log K candidates drawn with probability D(x)^2 /
    sum D^2 (the same draws, replayed here), the one with the lowest potential."""
    X = torch.tensor(make_blobs(400, centers=6, n_features=3, random_state=4)[0])
    K, T = 6, 2 + int(np.log(6))
    got = kmeans_plusplus(X, K, torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    C = [X[int(torch.randint(len(X), (1,), generator=g))]]
    closest = ((X - C[0]) ** 2).sum(1)
    for _ in range(1, K):
        idx = torch.multinomial((closest / closest.sum()).double(), T, replacement=True, generator=g)
        d = torch.minimum(closest[:, None], ((X[:, None] - X[idx][None]) ** 2).sum(-1))  # (N, T)
        best = int(d.sum(0).argmin())
        C.append(X[idx[best]])
        closest = d[:, best]
    assert torch.allclose(got, torch.stack(C), atol=0)
    # one trial only would pick the first candidate: with these draws it differs
    one = kmeans_plusplus(X, K, torch.Generator().manual_seed(9), n_local_trials=1)
    assert not torch.equal(one, got)


def test_restarts_keep_the_lowest_inertia():
    X, _ = make_blobs(500, centers=8, n_features=4, cluster_std=3.0, random_state=5)
    Xt = torch.tensor(X)
    g = torch.Generator().manual_seed(11)
    each = [lloyd(Xt, kmeans_plusplus(Xt, 8, g), 300, 1e-4)[2] for _ in range(6)]
    assert max(each) > min(each) * (1 + 1e-6)  # the restarts differ on this data
    km = KMeans(8, n_init=6, random_state=11).fit(X)
    assert km.inertia_ == pytest.approx(min(each), rel=1e-12)


def test_lloyd_improves_on_its_k_means_plus_plus_start():
    """The method against its own start: Lloyd's iterations lower the inertia of the
    seeding and raise its ACC on overlapping blobs (measured: inertia 9096 -> 4280, ACC
    0.774 -> 0.958)."""
    from dcl_lib.metrics import cluster_acc

    X, y = make_blobs(1000, centers=5, n_features=2, cluster_std=1.5, random_state=3)
    Xt = torch.tensor(X)
    C0 = kmeans_plusplus(Xt, 5, torch.Generator().manual_seed(0))
    start, d0 = assign(Xt, C0)
    labels, _, inertia, _ = lloyd(Xt, C0)
    assert inertia < 0.7 * float(d0.sum())
    assert cluster_acc(y, labels.numpy()) >= cluster_acc(y, start.numpy()) + 0.1
