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


def test_kl_rows_is_per_row_and_zero_where_q_is():
    from scipy.stats import entropy

    from dcl_lib.em import kl_rows

    q = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    p = torch.tensor([[0.2, 0.3, 0.5], [0.4, 0.4, 0.2], [0.2, 0.3, 0.5]], dtype=torch.float64)
    got = kl_rows(torch.log(q), torch.log(p))
    assert got.shape == (3,) and torch.isfinite(got).all()
    assert torch.allclose(got, torch.tensor([entropy(a, b) for a, b in zip(q.numpy(), p.numpy())],
                                            dtype=torch.float64), atol=1e-12)


def test_perturbation_at_one_and_beyond_its_maximum():
    from dcl_lib.em import kl_rows, perturb_responsibilities

    log_gamma = torch.log_softmax(torch.randn(50, 4, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.float64), 1)
    log_q, kl = perturb_responsibilities(log_gamma, 1.0)
    assert kl == pytest.approx(1.0, abs=1e-9)
    # beyond lam = 1 the most it can do: every point on its least likely component
    log_q, kl = perturb_responsibilities(log_gamma, 1e6)
    assert torch.equal(log_q.exp().argmax(1), log_gamma.argmin(1))
    assert kl == pytest.approx(float(-log_gamma.min(1).values.sum()), rel=1e-9)
    assert kl == pytest.approx(float(kl_rows(log_q, log_gamma).sum()), rel=1e-9)
    with pytest.raises(ValueError, match="eps_total must be non-negative"):
        perturb_responsibilities(log_gamma, -0.1)


def test_hard_em_calls_augment_each_iteration_and_never_assigns_an_empty_cluster():
    from dcl_lib.em import hard_em

    g = torch.Generator().manual_seed(0)
    X = torch.cat([torch.randn(20, 2, generator=g) - 3, torch.randn(20, 2, generator=g) + 3]).double()
    labels = torch.cat([torch.zeros(20), torch.ones(20)]).long()
    labels[0] = 2  # three clusters, the third with one point
    seen = []

    def augment(t, X_, lab):
        seen.append((t, X_ is X, lab.clone()))
        members = [torch.nonzero(lab == k).flatten() for k in range(3)]
        members[2] = members[2][:0]  # cluster 2 gets no training points
        return members

    def fit(points):
        mu = points.mean(0)
        return lambda x: -((x - mu) ** 2).sum(1)

    out, changes = hard_em(X, labels, fit, augment=augment)
    assert [t for t, _, _ in seen] == list(range(1, 21)) and all(same for _, same, _ in seen)
    assert torch.equal(seen[1][2], hard_em(X, labels, fit, n_iter=1, augment=augment)[0])
    # -inf for the empty cluster: never chosen; point 0 joins its blob, then nothing moves
    assert changes == [1] + [0] * 19
    assert torch.equal(out, torch.cat([torch.zeros(20), torch.ones(20)]).long())


def test_epsilon_members_sample_is_distinct_seeded_and_uniform_when_weights_vanish():
    post = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4],
                         [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # 0-3 in 0, 4-5 in 1
    def draw(seed, global_seed):
        torch.manual_seed(global_seed)
        return epsilon_members(post, 3, "sample", torch.Generator().manual_seed(seed))
    a, b = draw(1, 5), draw(1, 6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # the given generator only
    extra1 = a[1][2:]
    assert len(set(extra1.tolist())) == 3 and set(extra1.tolist()) <= {0, 1, 2, 3}
    # cluster 0's outsiders (4, 5) have C_i0 = 0: drawn uniformly, not refused
    counts = torch.zeros(6)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        S = epsilon_members(post, 1, "sample", g)
        counts[S[0][-1]] += 1
    assert counts[:4].sum() == 0 and abs(float(counts[4] - counts[5])) < 80
