"""scikit-learn's own estimator checks on the estimators that take feature
matrices (KMeans, GaussianMixture).  DEPICT and ClusterGAN take image tensors
(N, C, H, W), and DEC, DCAN, GANMM and VCAMI images in [0, 1], which the generic checks
do not generate, so they are tested in their own files instead."""
from sklearn.utils.estimator_checks import parametrize_with_checks

from dcl_lib.methods import GaussianMixture, KMeans


@parametrize_with_checks([KMeans(3, n_init=2, random_state=0), GaussianMixture(2, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
