"""Bad input gives a clear ValueError that says what is wrong."""
import numpy as np
import torch
import pytest

from dcl_lib.data import load_dataset
from dcl_lib.methods import KMeans
from dcl_lib.metrics import cluster_acc, evaluate, nmi
from dcl_lib.plots import image_grid
from dcl_lib.runner import run
from dcl_lib.config import resolve_profile
from dcl_lib.train import get_device, seed_everything

X = np.random.default_rng(0).normal(size=(20, 3))

CASES = [
    (lambda: cluster_acc([0, 1, 2], [0, 1]), "differ in length: 3 vs 2"),
    (lambda: cluster_acc([], []), "y_true is empty"),
    (lambda: cluster_acc([[0, 1]], [[0, 1]]), "must be a 1-D array"),
    (lambda: cluster_acc([0, 1], [0.5, 1.0]), "non-integer values"),
    (lambda: evaluate([0, 1], [0, np.nan]), "contains NaN or inf"),
    (lambda: cluster_acc(["a", "b"], [0, 1]), "must hold integer labels"),
    (lambda: nmi([0, 1], [0, 1], average_method="mean"), "average_method must be one of"),
    (lambda: KMeans(3).fit(X[:, 0]), "Expected 2D array, got 1D array"),
    (lambda: KMeans(3).fit(np.where(X > 1, np.nan, X)), "contains NaN or inf"),
    (lambda: KMeans(30).fit(X), "n_clusters=30 is larger than the number of samples (20)"),
    (lambda: KMeans(0).fit(X), "n_clusters must be a positive integer"),
    (lambda: KMeans(2.5).fit(X), "n_clusters must be a positive integer"),
    (lambda: KMeans(3, n_init=0).fit(X), "n_init must be a positive integer"),
    (lambda: KMeans(3).fit(np.empty((0, 3))), "Found array with 0 sample(s)"),
    (lambda: KMeans(3).fit(torch.empty(0, 3)), "X is empty"),
    (lambda: KMeans(3).fit(torch.zeros(5)), "must be 2-D, got shape (5,)"),
    (lambda: KMeans(3).predict(X), "not fitted yet"),
    (lambda: KMeans(3, random_state=-1).fit(X), "random_state must be None"),
    (lambda: KMeans(3).fit(X).predict(X[:, :2]), "X has 2 features, but KMeans is expecting 3"),
    (lambda: KMeans(3).fit(X, init=X[:2]), "init must have shape (3, 3)"),
    (lambda: load_dataset("imagenet"), "unknown dataset 'imagenet'"),
    (lambda: load_dataset("mnist", "validation"), "has splits ['train', 'test', 'all']"),
    (lambda: load_dataset("digits", subset=0), "subset must be a positive integer"),
    (lambda: resolve_profile("medium"), "profile must be one of"),
    (lambda: seed_everything(-3), "seed must be a non-negative integer"),
    (lambda: run("kmeans", "digits", seed=-1), "seeds must be non-negative integers"),
    (lambda: image_grid(np.zeros((3, 28, 28))), "images must be (N, C, H, W)"),
]


@pytest.mark.parametrize("fn, message", CASES, ids=[m for _, m in CASES])
def test_bad_input_raises_clear_value_error(fn, message):
    with pytest.raises(ValueError) as e:
        fn()
    assert message in str(e.value)


def test_cuda_requested_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_device("cuda")
