"""The model-free EM pieces (dcl_lib.em): the E step from a log joint, hard
assignment, and the ε-E step of GANMM."""
import pytest
import torch

from dcl_lib.em import epsilon_members, hard_assign, responsibilities


def test_responsibilities_are_a_softmax_and_log_px_a_logsumexp():
    a = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 30
    log_gamma, log_px = responsibilities(a)
    assert torch.allclose(log_gamma.exp().sum(1), torch.ones(50, dtype=torch.float64))
    assert torch.allclose(log_gamma, torch.log_softmax(a, 1))
    assert torch.allclose(log_px, torch.log(torch.exp(a - a.max()).sum(1)) + a.max())
    assert torch.equal(hard_assign(a), a.argmax(1))


def _posterior():
    # 6 points, 2 clusters: points 0-2 belong to 0, 3-5 to 1, with known C_i1
    c1 = torch.tensor([0.10, 0.40, 0.30, 0.90, 0.60, 0.80])
    return torch.stack([1 - c1, c1], 1)


def test_epsilon_members_top_adds_the_best_explained_others():
    S = epsilon_members(_posterior(), sigma=2, mode="top")
    assert sorted(S[0].tolist()) == [0, 1, 2, 4, 5]   # C_i0 of 3, 4, 5: 0.1, 0.4, 0.2 -> 4, 5
    assert sorted(S[1].tolist()) == [1, 2, 3, 4, 5]   # C_i1 of 0, 1, 2: 0.1, 0.4, 0.3 -> 1, 2


def test_epsilon_members_sigma_zero_is_hard_em():
    S = epsilon_members(_posterior(), sigma=0)
    assert S[0].tolist() == [0, 1, 2] and S[1].tolist() == [3, 4, 5]


def test_epsilon_members_sample_draws_distinct_others_proportionally():
    post = _posterior()
    counts = torch.zeros(6)
    g = torch.Generator().manual_seed(0)
    for _ in range(3000):
        S = epsilon_members(post, sigma=1, mode="sample", generator=g)
        extra = [i for i in S[1].tolist() if i < 3]
        assert len(extra) == 1 and len(set(S[1].tolist())) == len(S[1])
        counts[extra[0]] += 1
    freq = counts[:3] / counts[:3].sum()
    assert torch.allclose(freq, torch.tensor([0.1, 0.4, 0.3]) / 0.8, atol=0.03)
    with pytest.raises(ValueError, match="mode must be"):
        epsilon_members(post, 1, mode="random")
    with pytest.raises(ValueError, match="sigma must be"):
        epsilon_members(post, -1)


def test_the_e_step_survives_log_joints_far_below_zero():
    """The log-sum-exp is shifted by its maximum: log joints near -1000 (a point far from
    every component) give the same responsibilities as near 0, not 0/0."""
    a = torch.randn(20, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for shift in (-1000.0, -1e5, 700.0):
        log_gamma, log_px = responsibilities(a + shift)
        ref_gamma, ref_px = responsibilities(a)
        assert torch.isfinite(log_gamma).all() and torch.isfinite(log_px).all()
        assert torch.allclose(log_gamma, ref_gamma, atol=1e-9)
        assert torch.allclose(log_px, ref_px + shift, rtol=0, atol=1e-9 * max(1.0, abs(shift)))
    # float32 too: exp(-1000) underflows there as well (a - 1000 keeps about 4 decimals)
    lg, lp = responsibilities((a - 1000).float())
    assert torch.isfinite(lg).all() and torch.allclose(lg.exp().sum(1), torch.ones(20), atol=1e-3)
