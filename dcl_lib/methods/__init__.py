"""One module per method family; each ends with a scikit-learn-style estimator."""
from .gmm import GaussianMixture
from .kmeans import KMeans

__all__ = ["GaussianMixture", "KMeans"]
