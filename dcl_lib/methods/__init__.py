"""One module per method family, each ending with a scikit-learn-style estimator
and a :class:`~dcl_lib.methods.base.MethodSpec` for the runner.

The registry below is the one place that names the methods: a new chapter adds its
module and **one line** here.  Modules are imported only when a method is asked for
(no import cycles, and ``python -m dcl_lib list`` stays fast).
"""
from __future__ import annotations

import importlib

from .base import MethodSpec

__all__ = ["REGISTRY", "get_spec", "method_names", "GaussianMixture", "KMeans"]

# name on the command line -> "module:attribute" of its MethodSpec
REGISTRY: dict[str, str] = {
    "kmeans": "kmeans:SPEC",
    "ae-kmeans": "autoencoder:SPEC",
    "gmm": "gmm:SPEC_GMM",
    "gmm-ae": "gmm:SPEC_GMM_AE",
    "depict": "depict:SPEC",
    "clustergan": "clustergan:SPEC",
    "ganmm": "ganmm:SPEC",
    "dcan": "dcan:SPEC",
    "dec": "dec:SPEC",
    "vcami": "vcami:SPEC",
}


def method_names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(REGISTRY)


def get_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of a registered method; ``ValueError`` for an unknown name."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {method_names()}")
    module, attr = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f".{module}", __name__), attr)


def __getattr__(name: str):  # the two estimators most often imported from here, loaded lazily
    if name == "GaussianMixture":
        from .gmm import GaussianMixture
        return GaussianMixture
    if name == "KMeans":
        from .kmeans import KMeans
        return KMeans
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
