"""VCAMI: every term against an independent computation, the step, determinism, bad input."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from dcl_lib.methods.vcami import (VCAMI, VCAMIConfig, VCAMINets, _views, augment,
                                   cluster_mi, erase, gaussian_kl, gmm_loss,
                                   joint_posterior, jsd_mi, mixture_posterior, reg_loss,
                                   train_vcami, update_vcami, vcami_losses)
from dcl_lib.train import NonFiniteLossError

CFG = VCAMIConfig(n_clusters=3, latent_dim=4, channels=(4, 8), hidden=16, head_hidden=8,
                  critic_hidden=8, epochs=2, batch_size=16, gmm_start=1)


def _images(n=48, seed=0):
    """Three synthetic 8x8 'shapes' with noise (unit tests only)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.zeros(3, 1, 8, 8)
    base[0, :, 2:6, 2:6] = 1
    base[1, :, :, 3:5] = 1
    base[2, :, 3:5, :] = 1
    y = torch.arange(n) % 3
    x = (base[y] + 0.1 * torch.rand(n, 1, 8, 8, generator=g)).clamp(0, 1)
    return x, y


# -- the estimators ---------------------------------------------------------------------

def _gaussian_pairs(rho, n, g):
    x = torch.randn(n, 1, generator=g)
    z = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, 1, generator=g)
    return x, z


def _log_ratio(x, z, rho):
    """log p(x, z) / (p(x) p(z)) of a standard bivariate normal with correlation rho."""
    q = (x**2 - 2 * rho * x * z + z**2) / (1 - rho**2)
    return (-0.5 * math.log(1 - rho**2) - 0.5 * q + 0.5 * (x**2 + z**2)).squeeze(1)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_jsd_mi_at_the_optimal_critic_is_the_gan_value_of_the_joint(rho):
    """With T* = log p(x,z)/(p(x)p(z)), I_JSD = 2 JSD(p(x,z) || p(x)p(z)) - 2 log 2; the JSD
    by Monte Carlo from the densities (an independent formula)."""
    g = torch.Generator().manual_seed(1)
    x, z = _gaussian_pairs(rho, 200_000, g)
    zn = z[torch.randperm(len(z), generator=g)]  # the product of marginals
    est = float(jsd_mi(_log_ratio(x, z, rho), _log_ratio(x, zn, rho)))
    r_p, r_q = _log_ratio(x, z, rho).exp(), _log_ratio(x, zn, rho).exp()
    # JSD = 1/2 E_p log(2r/(1+r)) + 1/2 E_q log(2/(1+r))
    jsd = 0.5 * float(torch.log(2 * r_p / (1 + r_p)).mean() + torch.log(2 / (1 + r_q)).mean())
    assert est == pytest.approx(2 * jsd - 2 * math.log(2), abs=5e-3)


def test_a_trained_critic_ranks_correlated_gaussians_by_their_true_mi():
    """A small critic trained by the JSD estimator (negatives: z shuffled in the batch)
    approaches the optimum from below, and its estimates order the pairs as the true MI
    -1/2 log(1 - rho^2) does."""
    got = []
    for rho in (0.0, 0.5, 0.9):
        g = torch.Generator().manual_seed(2)
        torch.manual_seed(0)
        T = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
        opt = torch.optim.Adam(T.parameters(), 1e-2)
        for _ in range(300):
            x, z = _gaussian_pairs(rho, 256, g)
            zs = z.roll(1, 0)
            loss = -jsd_mi(T(torch.cat([x, z], 1)).squeeze(1), T(torch.cat([x, zs], 1)).squeeze(1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        x, z = _gaussian_pairs(rho, 50_000, g)
        zs = z.roll(1, 0)
        with torch.no_grad():
            trained = float(jsd_mi(T(torch.cat([x, z], 1)).squeeze(1),
                                   T(torch.cat([x, zs], 1)).squeeze(1)))
            best = float(jsd_mi(_log_ratio(x, z, rho), _log_ratio(x, zs, rho)))
        assert trained <= best + 0.01
        assert trained >= best - 0.05
        got.append(trained)
    assert got[0] < got[1] < got[2]
    assert got[0] == pytest.approx(-2 * math.log(2), abs=0.02)  # MI 0: nothing to find


def test_cluster_mi_against_sklearn_mutual_info_for_hard_posteriors():
    """One-hot posteriors: P is the (symmetrised) contingency table of the two labelings, and
    I(y; y') is scikit-learn's mutual_info_score of that table."""
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 500)
    b = np.where(rng.random(500) < 0.7, a, rng.integers(0, 4, 500))
    pa, pb = (F.one_hot(torch.tensor(v), 4).double() for v in (a, b))
    counts = np.zeros((4, 4))
    np.add.at(counts, (a, b), 1)
    want = mutual_info_score(None, None, contingency=counts + counts.T)
    assert float(cluster_mi(pa, pb, eps=1e-300)) == pytest.approx(want, rel=1e-10)


def test_cluster_mi_limits_log_k_and_zero():
    K = 5
    p = F.one_hot(torch.arange(1000) % K, K).double()
    assert float(cluster_mi(p, p, eps=1e-300)) == pytest.approx(math.log(K), rel=1e-12)
    assert float(cluster_mi(p, p)) == pytest.approx(math.log(K), rel=1e-5)  # the 1e-8 clamp
    u = torch.full((1000, K), 1.0 / K, dtype=torch.float64)
    assert abs(float(cluster_mi(u, u))) < 1e-9  # uninformative posteriors
    one = F.one_hot(torch.zeros(1000, dtype=torch.long), K).double()
    assert abs(float(cluster_mi(one, one, eps=1e-300))) < 1e-12  # one cluster: no information
    P = joint_posterior(p, p)
    assert torch.allclose(P, P.T) and float(P.sum()) == pytest.approx(1.0)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(3)
    mu, lv = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    m, lvk = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    got = gaussian_kl(mu, lv, m, lvk)
    for b in range(6):
        for k in range(3):
            want = kl_divergence(Independent(Normal(mu[b], (0.5 * lv[b]).exp()), 1),
                                 Independent(Normal(m[k], (0.5 * lvk[k]).exp()), 1))
            assert float(got[b, k]) == pytest.approx(float(want), rel=1e-5)
    p = torch.softmax(torch.randn(6, 3, generator=g), 1)
    assert float(gmm_loss(p, mu, lv, m, lvk)) == pytest.approx(float((p * got).sum(1).mean()))


def test_reg_loss_is_the_kl_to_uniform():
    K = 4
    log_p = torch.log_softmax(torch.randn(10, K), 1)
    want = F.kl_div(torch.full((10, K), -math.log(K)), log_p, log_target=True,
                    reduction="batchmean")  # KL(p || uniform)
    assert float(reg_loss(log_p)) == pytest.approx(float(want), rel=1e-5)
    assert float(reg_loss(torch.full((3, K), -math.log(K)))) == pytest.approx(0.0, abs=1e-7)


def test_mixture_posterior_matches_the_gaussian_mixture_e_step():
    from dcl_lib.methods.gmm import e_step

    nets = VCAMINets((1, 8, 8), CFG)
    with torch.no_grad():
        nets.mu_k.normal_()
        nets.log_var_k.uniform_(-1, 1)
    z = torch.randn(20, CFG.latent_dim)
    K = CFG.n_clusters
    want, _ = e_step(z.double(), torch.full((K,), -math.log(K), dtype=torch.float64),
                     nets.mu_k.detach().double(), nets.log_var_k.detach().exp().double(), "diag")
    assert torch.allclose(mixture_posterior(nets, z).detach().double(), want, atol=1e-5)


def test_augment_identity_determinism_and_range():
    x, _ = _images(8)
    g = torch.Generator().manual_seed(0)
    same = augment(x, g, rotate=0, zoom=0, shear=0, translate=0)
    assert torch.allclose(same, x, atol=1e-6)
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.allclose(a, x) and a.min() >= 0 and a.max() <= 1 + 1e-6


def test_erase_zeroes_one_square_per_chosen_image():
    x = torch.rand(400, 1, 12, 10) * 0.5 + 0.5  # no zero anywhere before
    g = torch.Generator().manual_seed(0)
    out = erase(x, g, 4, p=1.0)
    zero = out[:, 0] == 0
    assert torch.equal(zero.sum((1, 2)), torch.full((400,), 16))  # 4 x 4, every image
    for b in range(0, 400, 37):  # one contiguous square, inside the image
        r, c = torch.nonzero(zero[b], as_tuple=True)
        assert r.max() - r.min() == 3 and c.max() - c.min() == 3
    assert torch.equal(out[~zero[:, None]], x[~zero[:, None]])  # the rest untouched
    # every position of the square's corner is drawn: rows 0..8, columns 0..6
    tops = {int(torch.nonzero(zero[b], as_tuple=True)[0].min()) for b in range(400)}
    lefts = {int(torch.nonzero(zero[b], as_tuple=True)[1].min()) for b in range(400)}
    assert tops == set(range(9)) and lefts == set(range(7))
    # p: the share of images erased
    share = (erase(x, g, 4, p=0.3)[:, 0] == 0).any(-1).any(-1).float().mean().item()
    assert 0.22 < share < 0.38
    assert torch.equal(erase(x, g, 4, p=0.0), x)
    a = erase(x, torch.Generator().manual_seed(3), 5)
    assert torch.equal(a, erase(x, torch.Generator().manual_seed(3), 5))
    for size, p in ((0, 0.5), (11, 0.5), (4, 1.5), (4, -0.1)):
        with pytest.raises(ValueError, match="erase needs"):
            erase(x, g, size, p)
    with pytest.raises(ValueError, match="erase must be"):
        VCAMIConfig(erase=-1).validate()


def test_views_erase_only_when_asked_and_keep_the_stream_otherwise():
    x, _ = _images(16)
    cfg = VCAMIConfig(views="aug-aug")
    v1, v2 = _views(x, cfg, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    kw = dict(rotate=cfg.rotate, zoom=cfg.zoom, shear=cfg.shear, translate=cfg.translate)
    w2 = augment(x, g, **kw)
    w1 = augment(x, g, **kw)
    assert torch.equal(v1, w1) and torch.equal(v2, w2)  # erase=0: the committed runs' draws
    cfg_e = VCAMIConfig(views="aug-aug", erase=4, erase_p=1.0)
    e1, e2 = _views(x, cfg_e, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    want2 = erase(augment(x, g, **kw), g, 4, 1.0)
    want1 = erase(augment(x, g, **kw), g, 4, 1.0)
    assert torch.equal(e1, want1) and torch.equal(e2, want2)
    cfg_x = VCAMIConfig(views="x-aug", erase=4, erase_p=1.0)
    x1, _ = _views(x, cfg_x, torch.Generator().manual_seed(2))
    assert torch.equal(x1, x)  # the clean view is never erased


# -- the step ----------------------------------------------------------------------------

def test_update_vcami_is_the_gradient_step_of_the_weighted_terms():
    """The library's step against one written out here: same draws, same parameters after."""
    x, _ = _images(16)
    cfg = CFG
    terms = ("gmi", "lmi", "cmi", "gmm", "reg")
    torch.manual_seed(0)
    a = VCAMINets((1, 8, 8), cfg)
    b = VCAMINets((1, 8, 8), cfg)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.Adam(a.parameters(), 1e-2), torch.optim.Adam(b.parameters(), 1e-2)
    update_vcami(a, opt_a, x, cfg, torch.Generator().manual_seed(7), terms)
    g = torch.Generator().manual_seed(7)
    x1, x2 = x, augment(x, g, cfg.rotate, cfg.zoom, cfg.shear, cfg.translate)
    out = vcami_losses(b, x1, x2, cfg, g, terms)
    total = (out["gmi"] + cfg.lam_lmi * out["lmi"] + cfg.lam_cmi * out["cmi"]
             + cfg.lam_gmm * out["gmm"] + cfg.lam_reg * out["reg"])
    assert total.item() == pytest.approx(out["total"].item(), rel=1e-6)
    opt_b.zero_grad()
    total.backward()
    opt_b.step()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), name


@pytest.mark.parametrize("term", ["gmi", "lmi", "cmi", "gmm", "reg"])
def test_every_term_reaches_the_encoder(term):
    """A detached code (the bug a test must catch) would leave the encoder without gradient."""
    x, _ = _images(16)
    nets = VCAMINets((1, 8, 8), CFG)
    with torch.no_grad():
        nets.mu_k.normal_()
    g = torch.Generator().manual_seed(0)
    out = vcami_losses(nets, x, augment(x, g), CFG, g, (term,))
    out[term].backward()
    grad = nets.conv[0].weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0


def test_same_seed_same_labels_and_history():
    x, y = _images(48)
    a = VCAMI(3, CFG, random_state=0).fit(x, y_eval=y)
    b = VCAMI(3, CFG, random_state=0).fit(x, y_eval=y)
    assert np.array_equal(a.labels_, b.labels_)
    assert a.history_["loss/total"] == b.history_["loss/total"]
    assert np.array_equal(a.predict(x), a.labels_)
    assert a.transform(x).shape == (48, CFG.latent_dim)
    assert np.allclose(a.predict_proba(x).sum(1), 1, atol=1e-5)
    for key in ("loss/gmi", "loss/lmi", "loss/cmi", "loss/gmm", "loss/reg", "acc_mixture"):
        assert key in a.history_
    assert len(a.history_["loss/gmm"]) == CFG.epochs - CFG.gmm_start  # switched on after


@pytest.mark.parametrize("objective, present, absent", [
    ("dmi", ("gmi", "lmi"), ("cmi", "gmm")),
    ("cmi", ("cmi",), ("gmi", "lmi", "gmm")),
    ("ami", ("gmi", "lmi", "cmi"), ("gmm", "reg")),
])
def test_the_ablation_objectives_train_only_their_terms(objective, present, absent):
    import dataclasses

    x, _ = _images(32)
    cfg = dataclasses.replace(CFG, objective=objective, epochs=1)
    _, hist = train_vcami(x, cfg, verbose=False)
    for t in present:
        assert f"loss/{t}" in hist
    for t in absent:
        assert f"loss/{t}" not in hist


# -- bad input and degenerate states -------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("objective", "dim", "objective must be one of"),
    ("output", "kmeans", "output must be"),
    ("views", "x-x", "views must be"),
    ("lam_gmm", -1.0, "lam_gmm must be >= 0"),
    ("latent_dim", 0, "latent_dim must be >= 1"),
    ("eps_p", 0.0, "eps_p must be in"),
])
def test_bad_config(field, value, message):
    import dataclasses

    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CFG, **{field: value}).validate()
    with pytest.raises(ValueError, match="needs the mixture terms"):
        dataclasses.replace(CFG, objective="ami", output="mixture").validate()


def test_bad_images():
    with pytest.raises(ValueError, match="divisible by 4"):
        VCAMI(3, CFG).fit(torch.rand(20, 1, 10, 10))
    with pytest.raises(ValueError, match="NaN or inf"):
        VCAMI(3, CFG).fit(torch.full((20, 1, 8, 8), float("nan")))
    est = VCAMI(3, CFG).fit(_images(32)[0])
    with pytest.raises(ValueError, match="expecting"):
        est.predict(torch.rand(4, 1, 12, 12))


def test_non_finite_term_stops_with_its_name():
    import dataclasses

    x, _ = _images(32)
    cfg = dataclasses.replace(CFG, lr=1e30, epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"loss '\w+' became (nan|inf)"):
        train_vcami(x, cfg, verbose=False)


def test_collapse_is_logged_with_the_step():
    x = torch.zeros(32, 1, 8, 8)  # identical images: every posterior the same
    _, hist = train_vcami(x, CFG, verbose=False)
    notes = [e for e in hist["events"] if e[1].startswith("collapse")]
    assert notes and notes[0][0] == 0 and "100%" in notes[0][1]


def test_runner_checkpoint_reloads_to_the_recorded_labels(tmp_path):
    from dcl_lib.results import reevaluate
    from dcl_lib.runner import run

    rec = run(method="vcami", dataset="digits", profile="quick", seed=0, verbose=False,
              overrides={"epochs": 2, "channels": (8, 16), "hidden": 32, "latent_dim": 8,
                         "critic_hidden": 16}, out_dir=tmp_path)
    got, _ = reevaluate(tmp_path / "vcami" / "digits-all-quick-seed0.json")
    assert abs(got["acc"] - rec["metrics"]["acc"]) <= 5e-3


def test_export_is_compact_without_critics_and_reloads_both_forms():
    """The runner's export at MNIST size: the large matrices as int8 rows, no critic; it
    and the older all-half form relabel the images as the network does."""
    from types import SimpleNamespace

    from dcl_lib.methods.vcami import _reload, export_state, labels_of

    torch.manual_seed(0)
    cfg = VCAMIConfig()
    nets = VCAMINets((1, 28, 28), cfg).eval()
    nets.head.weight.data.mul_(50)  # confident clusters: few near-ties to flip
    x = torch.rand(256, 1, 28, 28)
    want = labels_of(nets, x, cfg.output).numpy()
    ck = export_state(nets)
    assert ck["fc.1.weight"].dtype == torch.int8 and "fc.1.weight.int8_scale" in ck
    assert ck["head.weight"].dtype == torch.float16  # below the int8 threshold
    assert not any(k.startswith(("global_", "local_")) for k in ck)
    data = SimpleNamespace(x=x)
    got = _reload({**ck, "config": dataclasses.asdict(cfg)}, data, cfg, torch.device("cpu"))
    assert (got == want).mean() >= 0.98
    old = {k: v.half() if v.is_floating_point() else v for k, v in nets.state_dict().items()
           if not k.startswith(("global_", "local_"))}  # the exports before int8 rows
    assert (_reload(old, data, cfg, torch.device("cpu")) == want).mean() >= 0.98
    del ck["head.weight"]
    with pytest.raises(ValueError, match="lacks.*head.weight"):
        _reload(ck, data, cfg, torch.device("cpu"))


def test_gmm_loss_gradient_pulls_each_code_toward_its_clusters_means():
    """d L_GMM / d mu_b = (1/B) sum_k p_bk (mu_b - m_k) / v_k (p held fixed): a code
    detached inside the term would have no gradient here."""
    g = torch.Generator().manual_seed(4)
    mu = torch.randn(5, 3, generator=g, requires_grad=True)
    lv = torch.randn(5, 3, generator=g)
    m, lvk = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    p = torch.softmax(torch.randn(5, 2, generator=g), 1)
    (grad,) = torch.autograd.grad(gmm_loss(p, mu, lv, m, lvk), mu)
    want = (p[:, :, None] * (mu[:, None] - m[None]) / lvk.exp()[None]).sum(1) / 5
    assert torch.allclose(grad, want.detach(), atol=1e-6)


def test_entropy_weight_scales_the_marginal_entropies():
    """w (H(y) + H(y')) - H(y, y') from the joint table, computed here with numpy."""
    g = torch.Generator().manual_seed(6)
    p = torch.softmax(3 * torch.randn(200, 4, generator=g, dtype=torch.float64), 1)
    q = torch.softmax(3 * torch.randn(200, 4, generator=g, dtype=torch.float64), 1)
    P = joint_posterior(p, q).numpy()
    H = lambda t: -(t * np.log(t)).sum()  # noqa: E731
    for w in (1.0, 2.0):
        want = w * (H(P.sum(1)) + H(P.sum(0))) - H(P)
        assert float(cluster_mi(p, q, eps=1e-300, entropy_weight=w)) == pytest.approx(want, rel=1e-10)


def test_overclustering_head_adds_its_own_term():
    import dataclasses

    x, _ = _images(16)
    cfg = dataclasses.replace(CFG, overcluster=6)
    nets = VCAMINets((1, 8, 8), cfg)
    assert nets.over.out_features == 6
    g = torch.Generator().manual_seed(0)
    with_over = vcami_losses(nets, x, augment(x, g), cfg, torch.Generator().manual_seed(1), ("cmi",))
    nets.over = None
    g = torch.Generator().manual_seed(0)
    without = vcami_losses(nets, x, augment(x, g), cfg, torch.Generator().manual_seed(1), ("cmi",))
    assert with_over["cmi"].item() < without["cmi"].item()  # minus a second (positive) MI


def test_cosine_schedule_sets_each_steps_learning_rate(monkeypatch):
    """lr_schedule='cosine': step t of T uses lr (1 + cos(pi t / T)) / 2, from lr at the first
    step down towards 0 at the last; 'constant' leaves lr alone."""
    import dataclasses
    import math

    import dcl_lib.methods.vcami as V

    seen = []
    real = V.update_vcami

    def spy(nets, opt, *a, **kw):
        seen.append(opt.param_groups[0]["lr"])
        return real(nets, opt, *a, **kw)

    monkeypatch.setattr(V, "update_vcami", spy)
    x, _ = _images(40)  # batch 16: 3 steps per epoch (16, 16, 8)
    cfg = dataclasses.replace(CFG, epochs=2, batch_size=16, lr_schedule="cosine")
    train_vcami(x, cfg, verbose=False)
    T = 2 * 3
    assert seen == pytest.approx([cfg.lr * (1 + math.cos(math.pi * t / T)) / 2 for t in range(T)])
    seen.clear()
    train_vcami(x, dataclasses.replace(cfg, lr_schedule="constant"), verbose=False)
    assert seen == [cfg.lr] * T
    with pytest.raises(ValueError, match="lr_schedule"):
        dataclasses.replace(cfg, lr_schedule="step").validate()


def test_cosine_lr_bounds():
    from dcl_lib.train import cosine_lr

    assert cosine_lr(0.1, 0, 10) == 0.1 and cosine_lr(0.1, 10, 10) == pytest.approx(0.0)
    assert cosine_lr(0.1, 5, 10) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="step"):
        cosine_lr(0.1, 11, 10)


# -- the contracts the loop relies on ------------------------------------------------------

def test_cluster_term_pairs_each_image_with_its_augmented_view():
    """L_CMI against its equation: x and x' encoded separately, z = m + s * eps for both
    (one draw of eps for the 2B rows), P = p(x)^T p(x') / B, L = -I(P)."""
    from dcl_lib.methods.vcami import joint_mi

    x, _ = _images(16)
    g = torch.Generator().manual_seed(1)
    x_aug = augment(x, g)
    torch.manual_seed(0)
    nets = VCAMINets((1, 8, 8), CFG)
    out = vcami_losses(nets, x, x_aug, CFG, torch.Generator().manual_seed(5), ("cmi",))
    (_, m1, s1), (_, m2, s2) = nets.encode(x), nets.encode(x_aug)
    m, log_s2 = torch.cat([m1, m2]), torch.cat([s1, s2])
    eps = torch.randn(m.shape, generator=torch.Generator().manual_seed(5))
    p = nets.posterior(m + torch.exp(0.5 * log_s2) * eps).exp()
    P = p[:16].T @ p[16:] / 16
    P = (P + P.T) / 2  # symmetrised, as IIC does
    ref = -joint_mi(P, CFG.eps_p, CFG.entropy_weight)
    assert float(out["cmi"]) == pytest.approx(float(ref), rel=1e-5)
    # and it depends on the augmented view (an unused x' would not)
    other = vcami_losses(nets, x, augment(x, torch.Generator().manual_seed(9)), CFG,
                         torch.Generator().manual_seed(5), ("cmi",))
    assert abs(float(other["cmi"]) - float(out["cmi"])) > 1e-6


def test_the_mixture_term_pulls_the_codes_themselves():
    """L_GMM's gradient reaches the encoder's mean and variance layers directly, not only
    through the head: with a head that outputs a constant posterior, the term still moves
    fc_m and fc_log_s2 (detached codes would leave them without gradient)."""
    x, _ = _images(16)
    torch.manual_seed(0)
    nets = VCAMINets((1, 8, 8), CFG)
    with torch.no_grad():
        nets.mu_k.normal_()
        for p in nets.head.parameters():
            p.zero_()  # p(c | z) = 1/K whatever z: no gradient through the head
    g = torch.Generator().manual_seed(0)
    out = vcami_losses(nets, x, augment(x, g), CFG, g, ("gmm",))
    out["gmm"].backward()
    for layer in (nets.fc_m, nets.fc_log_s2):
        assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0


def test_init_mixture_encodes_in_evaluation_mode_and_leaves_the_statistics():
    """One M-step on m(x) from the running batch-norm statistics; no statistic moves."""
    from dcl_lib.methods.vcami import init_mixture

    x, _ = _images(48)
    torch.manual_seed(0)
    nets = VCAMINets((1, 8, 8), CFG)
    nets.train()
    with torch.no_grad():  # statistics far from a batch's, so the two modes differ
        for m in nets.modules():
            if isinstance(m, torch.nn.BatchNorm2d) or isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.fill_(0.3)
                m.running_var.fill_(2.0)
    before = {k: v.clone() for k, v in nets.state_dict().items() if "running" in k}
    init_mixture(nets, x)
    assert nets.training  # the mode is restored
    for k, v in before.items():
        assert torch.equal(nets.state_dict()[k], v), k
    nets.eval()
    with torch.no_grad():
        m = nets.encode(x)[1]
        r = nets.posterior(m).exp()
    mu = (r.T @ m) / r.sum(0)[:, None]
    assert torch.allclose(nets.mu_k, mu, atol=1e-5)


def test_negative_pairs_never_pair_a_row_with_itself():
    from dcl_lib.methods.vcami import _shuffled

    g = torch.Generator().manual_seed(0)
    for B in (2, 3, 5, 8):
        z = torch.arange(B, dtype=torch.float32)[:, None]
        for _ in range(200):
            assert (_shuffled(z, g) != z).all()


def test_joint_mi_defaults_are_the_plain_mutual_information():
    """eps = 1e-8 and entropy weight 1: I(P) = sum P log(P / (P_c P_c'))."""
    from dcl_lib.methods.vcami import joint_mi

    P = torch.tensor([[0.3, 0.05], [0.05, 0.6]], dtype=torch.float64)
    Pc, Pc_ = P.sum(1, keepdim=True), P.sum(0, keepdim=True)
    ref = (P * (P / (Pc * Pc_)).log()).sum()
    assert float(joint_mi(P)) == pytest.approx(float(ref), rel=1e-12)
    Z = torch.tensor([[0.5, 0.0], [0.0, 0.5]], dtype=torch.float64)  # zeros: clamped at 1e-8
    assert float(joint_mi(Z)) == pytest.approx(math.log(2), abs=1e-6)
