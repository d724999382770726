"""The scikit-learn contract shared by every clustering estimator.

``__init__`` only stores arguments; ``fit(X)`` validates, trains and returns
``self``; fitted attributes end in ``_``; ``random_state`` is stored as given
and turned into generators inside ``fit``.
"""
from __future__ import annotations

import functools
import inspect
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin

from ..train import History, TrainState, get_device

__all__ = ["ClusterEstimator", "FitResult", "MethodSpec", "RunContext", "as_tensor",
           "check_n_clusters", "check_unit_range", "seed_from"]


@dataclass
class RunContext:
    """What the runner hands a method's ``fit`` besides the data and the config."""

    seed: int
    device: torch.device
    state: TrainState = field(default_factory=TrainState)  # saving disabled unless a path is set
    verbose: bool = True


@dataclass
class FitResult:
    """What a method's runner ``fit`` function returns.

    ``state``: the compact weight export (tensors) or None; ``history``: a
    :class:`~dcl_lib.train.History` or a plain dict of traces (EM); ``extra_metrics``:
    scalars recorded beside ACC/NMI/ARI.
    """

    labels: np.ndarray
    state: dict[str, Any] | None = None
    history: History | dict[str, Any] = field(default_factory=dict)
    extra_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """How the runner calls a method (one registry line names it).

    ``config``: a frozen dataclass deriving from :class:`~dcl_lib.config.MethodConfig`
    (paper defaults, per-profile changes as data); ``fit(data, cfg, ctx)`` returns a
    :class:`FitResult`; ``target_acc``: the paper's accuracy, for the time-to-accuracy
    the runner records (None: not tracked); ``reload``: labels from a saved weight
    export (None: the method saves none).
    """

    config: type
    fit: Callable[..., FitResult]
    description: str
    target_acc: float | None = None
    # reload(checkpoint dict, data, cfg, device) -> labels: re-evaluates a committed weight
    # export on the data it clustered (the results chapter's checkpoint verification)
    reload: Callable[..., np.ndarray] | None = None
    # the config fields ``reload`` reads (None: not declared).  Two runs that agree on them
    # reload through the same network and code, so the suite re-evaluates one of them and
    # leaves the others (training-only variants) to DCL_VERIFY_ALL=1; tests/test_results.py
    # checks that ``reload`` reads no other field.
    reload_fields: tuple[str, ...] | None = None


@functools.cache
def _finite_kwarg() -> str:
    """check_array's NaN/inf switch: ``force_all_finite`` was renamed in scikit-learn 1.6."""
    from sklearn.utils import check_array

    params = inspect.signature(check_array).parameters
    return "ensure_all_finite" if "ensure_all_finite" in params else "force_all_finite"


def as_tensor(X, *, dtype: torch.dtype | None = None, device=None, ndim: tuple[int, ...] = (2,),
              name: str = "X") -> torch.Tensor:
    """Validate ``X`` (array-like or tensor) and return it as a tensor.

    Array-likes go through scikit-learn's ``check_array`` (so sparse, complex,
    object and empty inputs are refused with its messages); tensors are checked
    here.  Raises ``ValueError`` for a wrong number of dimensions, an empty
    array, non-numeric values, or NaN/inf.
    """
    if isinstance(X, torch.Tensor):
        t = X.detach()
        if t.is_complex():
            raise ValueError(f"{name} is complex; complex data not supported")
    else:
        from sklearn.utils import check_array

        try:
            arr = check_array(X, dtype="numeric", ensure_2d=ndim == (2,), allow_nd=max(ndim) > 2,
                              input_name=name, **{_finite_kwarg(): False})
        except TypeError as exc:
            raise TypeError(f"{name}: {exc}") from exc
        arr = np.ascontiguousarray(arr)
        t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # torch needs writable memory
    if t.dim() not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        hint = " (reshape a single sample with X.reshape(1, -1))" if t.dim() == 1 else ""
        raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}{hint}")
    if t.shape[0] == 0 or t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}): need at least one sample")
    if not t.is_floating_point():
        t = t.to(torch.float32 if dtype is None else dtype)
    if dtype is not None:
        t = t.to(dtype)
    # a NaN or inf in t makes its sum NaN or inf; a finite sum needs no further look
    if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf; clean or impute the data first")
    return t.to(device) if device is not None else t


def check_unit_range(X: torch.Tensor, who: str) -> None:
    """Images for networks that end in a sigmoid (or were built for pixels) must lie in
    [0, 1]: a clear ``ValueError`` naming ``who`` and the range found otherwise."""
    lo, hi = float(X.min()), float(X.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"{who} expects images scaled to [0, 1]; got values in "
                         f"[{lo:.3g}, {hi:.3g}]")


def check_n_clusters(n_clusters, n_samples: int | None = None) -> int:
    """``n_clusters`` must be a positive integer no larger than the sample count."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Integral) or n_clusters < 1:
        raise ValueError(f"n_clusters must be a positive integer, got {n_clusters!r}")
    if n_samples is not None and n_clusters > n_samples:
        raise ValueError(
            f"n_clusters={n_clusters} is larger than the number of samples ({n_samples}); "
            f"use fewer clusters or more data"
        )
    return int(n_clusters)


def seed_from(random_state) -> int:
    """An integer seed from ``random_state`` (None -> fresh entropy)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    if isinstance(random_state, numbers.Integral) and random_state >= 0:
        return int(random_state)
    raise ValueError(f"random_state must be None, a non-negative int or a numpy generator, "
                     f"got {random_state!r}")


class ClusterEstimator(ClusterMixin, BaseEstimator):
    """Base class: device handling and ``fit_predict`` for clustering estimators."""

    def _device(self) -> torch.device:
        return get_device(getattr(self, "device", None))

    def _check_fitted(self, attr: str = "labels_") -> None:
        if not hasattr(self, attr):
            from sklearn.exceptions import NotFittedError  # a ValueError and an AttributeError

            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call "
                                 f"'fit' with appropriate arguments before using this "
                                 f"estimator.")  # scikit-learn's wording

    def _images_for(self, X, module_attr: str, ndim: tuple[int, ...] = (4,)) -> torch.Tensor:
        """Check the estimator is fitted; return X (images (N, C, H, W) by default) on the
        device of the fitted network named ``module_attr``."""
        self._check_fitted(module_attr)
        X = as_tensor(X, dtype=torch.float32, ndim=ndim)
        return X.to(next(getattr(self, module_attr).parameters()).device)

    def _check_n_features(self, X: torch.Tensor) -> None:
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input")

    def fit_predict(self, X, y=None, **kw):
        """Fit on ``X`` and return ``labels_`` (``y`` is ignored)."""
        return self.fit(X, y, **kw).labels_


class ConfiguredEstimator(ClusterEstimator):
    """Base class of the estimators driven by a method config (``config_class``): the
    scikit-learn parameters every one of them takes, and the config a fit uses (the
    given one, or the current profile's, with ``n_clusters`` put in)."""

    config_class: type = None  # set by each subclass

    def __init__(self, n_clusters: int = 10, config=None, random_state: int = 0, device=None,
                 verbose: bool = False):
        self.n_clusters = n_clusters
        self.config = config
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _cfg(self):
        import dataclasses

        cfg = self.config or self.config_class.for_profile()
        return dataclasses.replace(cfg, n_clusters=self.n_clusters)
