"""One module per method family; each ends with a scikit-learn-style estimator."""
from .kmeans import KMeans

__all__ = ["KMeans"]
