"""DCAN: each clustering term against an independent computation (Monte Carlo, a loop,
a hand-written step), the target's sampler, the JSD estimator and the optimal
discriminator's value, determinism, the recoveries, and bad input."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcl_lib.gan import gan_value, optimal_value
from dcl_lib.methods.dcan import (DCAN, DCANConfig, DCANNets, Target, abc_loss, codes_jsd,
                                  fit_target, gaussian_jsd, kl_to_target, sample_target,
                                  train_dcan, update_autoencoder, update_discriminator)
from dcl_lib.nets import MLPAutoencoder
from dcl_lib.train import seeded_generator

CFG = DCANConfig(n_clusters=3, hidden=(16,), latent_dim=2, epochs=3, batch_size=32,
                 finetune_epochs=3, finetune_batch=32, gmm_n_init=1, disc_hidden=(8,),
                 refresh_steps=1)


def _target(d=2, K=3, seed=0, tau=1.0) -> Target:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, d, d, generator=g)
    cov = A @ A.transpose(1, 2) + 0.5 * torch.eye(d)
    return Target(torch.full((K,), 1 / K), 3 * torch.randn(K, d, generator=g), cov,
                  torch.arange(30) % K, tau=tau)


def _images(n=60, seed=0):
    """Synthetic 'images' in [0, 1] in three groups: unit tests only."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    protos = torch.rand(3, 20, generator=g).round()
    x = (protos[y] * 0.8 + 0.2 * torch.rand(n, 20, generator=g)).clamp(0, 1)
    return x, y


def _nets(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    ae = MLPAutoencoder(20, cfg.hidden, cfg.latent_dim)
    return DCANNets(ae, cfg.n_clusters, torch.zeros(2), 1.0, cfg.disc_hidden,
                    cfg.conditional, cfg.loss == "kl", cfg.logvar_init)


# -- the target -------------------------------------------------------------------

def test_target_samples_have_the_scaled_covariance():
    t = _target(tau=0.5)
    k = torch.ones(200000, dtype=torch.long)
    z = sample_target(t, k, seeded_generator(0))
    assert torch.allclose(z.mean(0), t.means[1], atol=0.02)
    assert torch.allclose(torch.cov(z.T), 0.25 * t.covariances[1], atol=0.02)
    assert torch.allclose(t.precisions[1], torch.linalg.inv(0.25 * t.covariances[1]), atol=1e-4)
    assert float(t.logdet[1]) == pytest.approx(float(torch.logdet(0.25 * t.covariances[1])),
                                               abs=1e-4)


def test_soft_assignments_follow_the_responsibilities():
    t = _target()
    t.resp = torch.tensor([[0.2, 0.5, 0.3]]).repeat(30, 1)
    idx = torch.zeros(60000, dtype=torch.long)
    k = t.assignments(idx, "soft", seeded_generator(1))
    freq = torch.bincount(k, minlength=3).float() / len(k)
    assert torch.allclose(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.01)
    assert torch.equal(t.assignments(torch.arange(30), "hard", seeded_generator(1)), t.labels)


# -- the clustering terms ----------------------------------------------------------

def test_abc_loss_is_the_mean_squared_distance_to_the_assigned_mean():
    t = _target()
    z, k = torch.randn(7, 2), torch.tensor([0, 1, 2, 0, 1, 2, 2])
    loop = sum(float(((z[i] - t.means[k[i]]) ** 2).sum()) for i in range(7)) / (7 * 2)
    assert float(abc_loss(z, k, t)) == pytest.approx(loop, rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_kl_closed_form_matches_monte_carlo(tau):
    """KL(N(m, diag s^2) || N(mu_k, tau^2 Sigma_k)) = E_q[log q - log p], by 400k draws."""
    t = _target(tau=tau)
    m, logvar = torch.tensor([[0.3, -1.0]]), torch.tensor([[-0.5, 0.4]])
    k = torch.tensor([2])
    q = torch.distributions.Normal(m[0].double(), (0.5 * logvar[0]).exp().double())
    p = torch.distributions.MultivariateNormal(t.means[2].double(),
                                               covariance_matrix=tau**2 * t.covariances[2].double())
    torch.manual_seed(0)
    z = q.sample((400000,))
    mc = float((q.log_prob(z).sum(1) - p.log_prob(z)).mean()) / 2  # per dimension
    assert float(kl_to_target(m, logvar, k, t)[0]) == pytest.approx(mc, rel=3e-3)
    exact = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(m[0].double(), torch.diag(logvar[0].exp().double())), p)
    assert float(kl_to_target(m, logvar, k, t)[0]) == pytest.approx(float(exact) / 2, rel=1e-4)


def test_jsd_estimator_against_quadrature_and_its_bounds():
    """1-D: Monte Carlo against numerical integration; identical Gaussians give 0; far
    apart ones approach log 2."""
    from scipy import integrate, stats

    p, q = stats.norm(0, 1), stats.norm(1.5, 0.7)
    m = lambda x: (p.pdf(x) + q.pdf(x)) / 2  # noqa: E731
    quad = 0.5 * integrate.quad(lambda x: p.pdf(x) * np.log(p.pdf(x) / m(x)), -12, 12)[0] + \
        0.5 * integrate.quad(lambda x: q.pdf(x) * np.log(q.pdf(x) / m(x)), -12, 12)[0]
    mc = gaussian_jsd([0.0], [[1.0]], [1.5], [[0.49]], n=400000)
    assert mc == pytest.approx(quad, abs=3e-3)
    assert gaussian_jsd([0.0, 0.0], torch.eye(2), [0.0, 0.0], torch.eye(2)) == pytest.approx(0, abs=1e-12)
    assert gaussian_jsd([0.0], [[1.0]], [40.0], [[1.0]]) == pytest.approx(math.log(2), abs=1e-6)


def test_optimal_discriminator_value_is_two_jsd_minus_two_log_two():
    """Lemma 2: with D* = p / (p + q), V(D*) = 2 JSD - 2 log 2 (two 2-D Gaussians)."""
    mp, cp = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    mq, cq = torch.tensor([1.0, 0.5], dtype=torch.float64), 0.5 * torch.eye(2, dtype=torch.float64)
    P = torch.distributions.MultivariateNormal(mp, cp)
    Q = torch.distributions.MultivariateNormal(mq, cq)
    torch.manual_seed(0)
    zp, zq = P.sample((400000,)), Q.sample((400000,))
    logit = lambda z: P.log_prob(z) - Q.log_prob(z)  # noqa: E731  (log D* - log(1 - D*))
    v = float(gan_value(logit(zp), logit(zq)))
    assert v == pytest.approx(optimal_value(gaussian_jsd(mp, cp, mq, cq, n=400000)), abs=5e-3)


def test_codes_jsd_is_zero_for_codes_drawn_from_the_target():
    t = _target(tau=1.0)
    t.labels = torch.arange(30000) % 3
    Z = sample_target(t, t.labels, seeded_generator(3))
    assert codes_jsd(Z, t) < 2e-3
    assert codes_jsd(Z, Target(t.weights, t.means, t.covariances, t.labels, tau=0.5)) > 0.05


# -- the players' steps --------------------------------------------------------------

def test_discriminator_step_is_the_cross_entropy_step_written_out():
    """T = 1 for z+ ~ N(mu_k*, tau^2 Sigma_k*), T = 0 for E(x), D conditioned on k*; the
    encoder does not move."""
    cfg = dataclasses.replace(CFG, tau=0.5)
    nets, t = _nets(cfg), _target(tau=0.5)
    x, k = _images(8)[0], torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    ref = _nets(cfg)
    ref.load_state_dict(nets.state_dict())
    opt = torch.optim.SGD(nets.disc.parameters(), lr=0.1)
    enc_before = [p.clone() for p in nets.ae.parameters()]
    value, _ = update_discriminator(nets, opt, x, k, t, cfg, seeded_generator(5))
    # by hand: the same draw, the poster's cross-entropy D^T (1 - D)^(1 - T)
    z_real = sample_target(t, k, seeded_generator(5))
    z_fake = ref.code(x).detach()
    onehot = F.one_hot(k, 3).float()
    d_real = torch.sigmoid(ref.disc(torch.cat([z_real, onehot], 1)).squeeze(1))
    d_fake = torch.sigmoid(ref.disc(torch.cat([z_fake, onehot], 1)).squeeze(1))
    T = torch.cat([torch.ones(8), torch.zeros(8)])
    D = torch.cat([d_real, d_fake])
    ce = -(T * D.log() + (1 - T) * (1 - D).log())
    loss = ce[:8].mean() + ce[8:].mean()
    loss.backward()
    for p_ref, p in zip(ref.disc.parameters(), nets.disc.parameters()):
        assert torch.allclose(p_ref - 0.1 * p_ref.grad, p, atol=1e-6)
    assert float(value) == pytest.approx(-float(loss.detach()), rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(enc_before, nets.ae.parameters()))


@pytest.mark.parametrize("loss", ["dcan", "abc", "kl", "aae"])
def test_autoencoder_step_moves_encoder_and_decoder_not_d(loss):
    cfg = dataclasses.replace(CFG, loss=loss, conditional=loss == "dcan")
    nets, t = _nets(cfg), _target()
    x, k = _images(8)[0], torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    d_before = [p.clone() for p in nets.disc.parameters()]
    e_before = [p.clone() for p in nets.ae.encoder.parameters()]
    params = list(nets.ae.parameters()) + (list(nets.logvar.parameters()) if nets.logvar else [])
    opt = torch.optim.SGD(params, lr=0.1)
    recon, cluster = update_autoencoder(nets, opt, x, k, t, cfg, seeded_generator(0))
    assert torch.isfinite(recon) and torch.isfinite(cluster)
    assert all(torch.equal(a, b) for a, b in zip(d_before, nets.disc.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(e_before, nets.ae.encoder.parameters()))


@pytest.mark.parametrize("ae_loss", ["bce", "mse"])
def test_the_step_s_reconstruction_is_the_autoencoder_s_own_loss_written_out(ae_loss):
    """The fine-tuning step reconstructs with the loss the autoencoder was trained with:
    the binary cross-entropy of a sigmoid output, or the squared error of a linear one
    (the full profile's DEC-keras recipe), each written out here."""
    cfg = dataclasses.replace(CFG, ae_loss=ae_loss)
    torch.manual_seed(0)
    ae = MLPAutoencoder(20, cfg.hidden, cfg.latent_dim, sigmoid_output=ae_loss == "bce")
    nets = DCANNets(ae, 3, torch.zeros(2), 1.0, cfg.disc_hidden, True)
    x, k = _images(8)[0], torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    with torch.no_grad():
        x_hat = nets.decode(nets.code(x))
    if ae_loss == "bce":
        want = -(x * x_hat.log() + (1 - x) * (1 - x_hat).log()).mean()
    else:
        want = ((x_hat - x) ** 2).mean()
    opt = torch.optim.SGD(nets.ae.parameters(), lr=0.0)
    recon, _ = update_autoencoder(nets, opt, x, k, _target(), cfg, seeded_generator(0))
    assert float(recon) == pytest.approx(float(want), rel=1e-5)


def test_an_autoencoder_trained_with_another_loss_is_a_value_error():
    x = _images(30)[0]
    linear = MLPAutoencoder(20, CFG.hidden, CFG.latent_dim, sigmoid_output=False)
    with pytest.raises(ValueError, match="ae_loss='bce' needs an autoencoder with a sigmoid"):
        DCAN(3, CFG).fit(x, autoencoder=linear)
    sigmoid = MLPAutoencoder(20, CFG.hidden, CFG.latent_dim)
    with pytest.raises(ValueError, match="ae_loss='mse' needs an autoencoder with a linear"):
        DCAN(3, dataclasses.replace(CFG, ae_loss="mse")).fit(x, autoencoder=sigmoid)


def test_clustering_term_reaches_the_encoder():
    """The adversarial term alone (recon_weight=0) must change the encoder: a detached
    code would leave it still."""
    cfg = dataclasses.replace(CFG, recon_weight=0.0, weight=1.0)
    nets, t = _nets(cfg), _target()
    x, k = _images(8)[0], torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    before = [p.clone() for p in nets.ae.encoder.parameters()]
    update_autoencoder(nets, torch.optim.SGD(nets.ae.parameters(), lr=0.1), x, k, t, cfg)
    assert any(not torch.equal(a, b) for a, b in zip(before, nets.ae.encoder.parameters()))


def test_nonsaturating_encoder_gradient_points_towards_real():
    """With D fixed to score z by -|z - c|^2, the encoder's step must move codes towards c
    (a flipped sign moves them away)."""
    cfg = dataclasses.replace(CFG, conditional=False, recon_weight=0.0, weight=1.0)
    nets, t = _nets(cfg), _target()
    c = torch.tensor([2.0, -1.0])

    class Fixed(torch.nn.Module):
        def forward(self, z):
            return -((z - c) ** 2).sum(1, keepdim=True)

    nets.disc = Fixed()
    x = _images(16)[0]
    opt = torch.optim.SGD(nets.ae.parameters(), lr=0.05)
    def distance() -> float:  # mean squared distance of the codes to the critic's centre
        with torch.no_grad():
            return float(((nets.code(x) - c) ** 2).sum(1).mean())

    before = distance()
    for _ in range(5):
        update_autoencoder(nets, opt, x, torch.zeros(16, dtype=torch.long), t, cfg)
    assert distance() < before


# -- the loop, the estimator ---------------------------------------------------------

def test_fit_target_refresh_keeps_cluster_identities():
    Z = torch.cat([torch.randn(50, 2) + torch.tensor(m) for m in ([0.0, 0], [8, 0], [0, 8])])
    first, note = fit_target(Z, CFG, 0)
    assert note == "fit"
    second, note = fit_target(Z + 0.1, CFG, 0, previous=first)
    assert note == "refresh"
    assert torch.equal(first.labels, second.labels)
    assert torch.allclose(second.means, first.means + 0.1, atol=0.05)
    assert torch.allclose(first.resp.sum(1), torch.ones(150))


def test_refresh_that_empties_a_cluster_refits_and_says_so():
    Z = torch.cat([torch.randn(50, 2) + torch.tensor(m) for m in ([0.0, 0], [8, 0], [0, 8])])
    first, _ = fit_target(Z, CFG, 0)
    # components 0 and 1 identical: EM keeps them so, argmax gives component 1 no point
    # (the mixture's own re-seeding acts only on a component empty at the start)
    twin = Target(first.weights, first.means.clone(), first.covariances.clone(), first.labels)
    twin.means[1], twin.covariances[1] = twin.means[0], twin.covariances[0]
    _, note = fit_target(Z, CFG, 0, previous=twin)
    assert note.startswith("refit: cluster(s) [")


def test_same_seed_same_labels_and_the_history():
    x, y = _images(90)
    a = DCAN(3, CFG, random_state=4).fit(x, y_eval=y)
    b = DCAN(3, CFG, random_state=4).fit(x, y_eval=y)
    assert np.array_equal(a.labels_, b.labels_)
    h = a.history_
    assert h["step"] == list(range(CFG.finetune_epochs + 1))
    assert all(sum(s) == 90 for s in h["sizes"])
    assert "loss/value" in h and "start" in h.scalars
    assert np.array_equal(a.predict(x), a.labels_)


def test_estimator_reuses_a_pretrained_autoencoder_without_changing_it():
    x, y = _images(60)
    ae = MLPAutoencoder(20, CFG.hidden, CFG.latent_dim)
    before = {k: v.clone() for k, v in ae.state_dict().items()}
    est = DCAN(3, CFG).fit(x, autoencoder=ae)
    assert all(torch.equal(before[k], v) for k, v in ae.state_dict().items())
    assert est.transform(x).shape == (60, 2)


def test_saturated_discriminator_is_logged_with_the_step():
    # targets 50x wider than the (tight) codes: D separates them within a few epochs
    cfg = dataclasses.replace(CFG, tau=50.0, disc_lr=0.01, weight=1e-3, saturation=0.9,
                              finetune_epochs=6)
    est = DCAN(3, cfg, random_state=0).fit(_images(90)[0])
    notes = [e for e in est.history_["events"] if "saturated" in e[1]]
    assert notes and all(isinstance(step, int) and step > 0 for step, _ in notes)


# -- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("loss", "jsd", "loss must be one of"),
    ("covariance_type", "tied", "covariance_type must be"),
    ("assign", "fuzzy", "assign must be"),
    ("refresh_steps", -1, "refresh_steps must be"),
    ("target_spread", "shrinking", "target_spread must be"),
    ("weight", 0.0, "not both 0"),
])
def test_bad_config_is_a_value_error(field, value, message):
    cfg = dataclasses.replace(CFG, **{field: value})
    if field == "weight":
        cfg = dataclasses.replace(cfg, recon_weight=0.0)
    with pytest.raises(ValueError, match=message):
        DCAN(3, cfg).fit(_images(30)[0])


def test_non_finite_codes_and_mismatched_autoencoder_are_value_errors():
    x = _images(30)[0]
    ae = MLPAutoencoder(20, CFG.hidden, CFG.latent_dim)
    with torch.no_grad():
        ae.encoder[-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        DCAN(3, CFG).fit(x, autoencoder=ae)
    with pytest.raises(ValueError, match="the autoencoder takes 20 inputs"):
        DCAN(3, CFG).fit(torch.rand(30, 12), autoencoder=MLPAutoencoder(20, (16,), 2))
    with pytest.raises(ValueError, match="non-finite"):
        fit_target(torch.full((30, 2), float("inf")), CFG, 0)


@pytest.mark.parametrize("spread", ["fixed", "refit"])
def test_target_spread_fixed_keeps_the_first_fits_covariances(spread):
    """Codes that shrink: the refit's Sigma_k shrinks; the targets' do only with "refit"."""
    cfg = dataclasses.replace(CFG, target_spread=spread, tau=0.5)
    Z = torch.cat([torch.randn(50, 2) + torch.tensor(m) for m in ([0.0, 0], [8, 0], [0, 8])])
    first, _ = fit_target(Z, cfg, 0)
    centres = first.means[first.labels]
    second, note = fit_target(centres + 0.3 * (Z - centres), cfg, 0, previous=first)
    third, _ = fit_target(centres + 0.2 * (Z - centres), cfg, 0, previous=second)
    assert note == "refresh" and (second.covariances.diagonal(dim1=1, dim2=2) <
                                  0.2 * first.covariances.diagonal(dim1=1, dim2=2)).all()
    if spread == "fixed":
        assert torch.allclose(third.chol, first.chol)
        assert torch.allclose(third.chol @ third.chol.transpose(1, 2), 0.25 * first.covariances,
                              atol=1e-5)
    else:
        assert torch.allclose(third.chol @ third.chol.transpose(1, 2), 0.25 * third.covariances,
                              atol=1e-5)


@pytest.mark.parametrize("recipe", ["bce", "mse"])
def test_runner_checkpoint_reloads_to_the_recorded_labels(tmp_path, recipe):
    """The runner's export (half-precision encoder, theta*) relabels the data as the run
    did: predict and reload both use theta*'s responsibilities (a covariance passed where
    a Cholesky factor is expected would move most labels).  Both autoencoder recipes: a
    sigmoid output fine-tuned on the cross-entropy (Adam, the recipe before issue 37), and
    the profiles' DEC-keras recipe, whose linear output is fine-tuned on the squared error."""
    from dcl_lib.methods.autoencoder import AutoencoderConfig
    from dcl_lib.results import reevaluate
    from dcl_lib.runner import run

    ae = ({"ae_loss": "bce", "ae_optimizer": "adam", "lr": 1e-3, "ae_init": "torch",
           "input_dropout": 0.2} if recipe == "bce" else
          {k: v for k, v in AutoencoderConfig.profiles["full"].items() if k != "epochs"})
    rec = run(method="dcan", dataset="digits", profile="quick", seed=0, verbose=False,
              overrides={**ae, "hidden": (64,), "epochs": 5, "finetune_epochs": 3,
                         "gmm_n_init": 1},
              out_dir=tmp_path)
    assert rec["config"]["ae_loss"] == recipe
    got, labels = reevaluate(tmp_path / "dcan" / "digits-all-quick-seed0.json")
    assert abs(got["acc"] - rec["metrics"]["acc"]) <= 5e-3
    x, y = _images(60)
    est = DCAN(3, CFG, random_state=1).fit(x)
    assert np.array_equal(est.predict(x), est.labels_)


# -- the contracts of the loop ------------------------------------------------------------

def test_kl_step_samples_the_code_with_its_standard_deviation():
    """loss="kl": z = m + s * eps with s = exp(log s^2 / 2), the same eps as the step's
    generator draws; the reconstruction is of that sample (written out here)."""
    cfg = dataclasses.replace(CFG, loss="kl", logvar_init=1.0)  # s = 1.65, s^2 = 2.72
    nets, t = _nets(cfg), _target()
    ref = _nets(cfg)
    ref.load_state_dict(nets.state_dict())
    x, k = _images(8)[0], torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    opt = torch.optim.SGD(nets.parameters(), lr=0.0)
    recon, cluster = update_autoencoder(nets, opt, x, k, t, cfg, seeded_generator(3))
    with torch.no_grad():  # the reference values only
        m, logvar = ref.code_logvar(x)
        eps = torch.randn(m.shape, generator=seeded_generator(3))
        z = m + torch.exp(0.5 * logvar) * eps
        want_recon = float(F.binary_cross_entropy(ref.decode(z), x))
        want_cluster = float(kl_to_target(m, logvar, k, t).mean())
    assert float(recon) == pytest.approx(want_recon, rel=1e-6)
    assert float(cluster) == pytest.approx(want_cluster, rel=1e-6)


def test_the_target_is_refreshed_every_refresh_steps_minibatch_steps(monkeypatch):
    """theta* is refitted after every refresh_steps steps, counted across epochs (90
    images in batches of 32: 3 steps an epoch, 9 in 3 epochs; refresh_steps=2: after
    steps 2, 4, 6 and 8), besides the first fit and the final one."""
    import dcl_lib.methods.dcan as dcan

    calls = []
    orig = dcan.fit_target

    def spy(Z, cfg, seed, previous=None):
        calls.append(previous is not None)
        return orig(Z, cfg, seed, previous)

    monkeypatch.setattr(dcan, "fit_target", spy)
    x, _ = _images(90)
    cfg = dataclasses.replace(CFG, refresh_steps=2)
    train_dcan(x, _nets(cfg).ae, cfg, seed=0, verbose=False)
    assert calls == [False] + [True] * 4 + [True]  # first fit, 4 refreshes, the final fit


def test_finetune_steps_count_the_discriminator_steps_the_loop_takes(monkeypatch):
    """The step count the chapters quote is the one the loop runs: 70 images in batches
    of 32 are 3 steps an epoch (the short last batch is kept), 9 in 3 epochs."""
    import dcl_lib.methods.dcan as dcan

    calls = []
    orig = dcan.update_discriminator

    def spy(*args, **kwargs):
        calls.append(len(args[2]))
        return orig(*args, **kwargs)

    monkeypatch.setattr(dcan, "update_discriminator", spy)
    x, _ = _images(70)
    assert CFG.steps_per_epoch(70) == 3 and CFG.finetune_steps(70) == 9
    train_dcan(x, _nets().ae, CFG, seed=0, verbose=False)
    assert len(calls) == CFG.finetune_steps(70)
    assert calls[:3] == [32, 32, 6]
    with pytest.raises(ValueError, match="n must be >= 1"):
        CFG.steps_per_epoch(0)


def test_train_dcan_seeds_its_own_draws():
    """The same seed gives the same run whatever torch's global generator held before
    (the discriminator's initialisation and dropout-free steps draw from it)."""
    x, _ = _images(60)
    ae = _nets().ae
    runs = []
    for before in (1, 2):
        torch.manual_seed(before)
        nets, target, hist = train_dcan(x, ae, CFG, seed=5, verbose=False)
        runs.append((target.labels, hist["loss/value"], nets.disc[0].weight.detach().clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert torch.equal(runs[0][2], runs[1][2])


def test_kl_to_target_is_one_value_per_row():
    """Each row's own KL (rows with different variances and clusters), not a batch sum."""
    t = _target()
    m = torch.tensor([[0.3, -1.0], [1.0, 2.0], [-0.5, 0.0]])
    logvar = torch.tensor([[-0.5, 0.4], [0.2, -1.0], [0.0, 0.0]])
    k = torch.tensor([2, 0, 1])
    got = kl_to_target(m, logvar, k, t)
    assert got.shape == (3,)
    for i in range(3):
        q = torch.distributions.MultivariateNormal(m[i].double(), torch.diag(logvar[i].exp().double()))
        p = torch.distributions.MultivariateNormal(t.means[k[i]].double(),
                                                   covariance_matrix=t.covariances[k[i]].double())
        assert float(got[i]) == pytest.approx(float(torch.distributions.kl_divergence(q, p)) / 2, rel=1e-4)


# -- the method against its own start ---------------------------------------------------

@pytest.fixture(scope="module")
def digits_case():
    """scikit-learn's 8x8 digits and an autoencoder pretrained to a plateau (200 epochs of
    the library's own recipe, about 10 s at one thread): fine-tuning it further on
    reconstruction alone leaves its codes almost where they are."""
    from dcl_lib.data import load_dataset
    from dcl_lib.methods.autoencoder import AutoencoderConfig, train_autoencoder

    d = load_dataset("digits")
    X = d.flat()
    ae, _ = train_autoencoder(X, AutoencoderConfig(hidden=(64, 64), latent_dim=10, epochs=200,
                                                   batch_size=64), 0, "cpu", verbose=False)
    return X, torch.as_tensor(d.y), ae


def test_the_adversarial_term_pulls_the_codes_to_their_targets_and_keeps_the_start(digits_case):
    """What DCAN optimises, against the control with the adversarial weight at 0 (the same
    fine-tuning on reconstruction alone).  Measured at one thread, seeds 0-2, 40 epochs: the
    codes' JSD to their targets falls from 0.52 to 0.40-0.43 with the term and rises to
    0.53 without it.  ACC does not gain on this problem (0.795 -> 0.782, 0.733 -> 0.751,
    0.717 -> 0.695): the term tightens the partition it starts from; the MNIST gain of
    chapter 03's full profile is asserted there, from its committed runs.  A flipped sign,
    a detached code or a dropped term moves the JSD the other way."""
    X, y, ae = digits_case
    cfg = DCANConfig(n_clusters=10, hidden=(64, 64), latent_dim=10, gmm_n_init=3,
                     finetune_epochs=40, weight=1.0)
    _, _, h = train_dcan(X, ae, cfg, seed=0, y=y, verbose=False, jsd_every=40)
    _, _, h0 = train_dcan(X, ae, dataclasses.replace(cfg, weight=0.0), seed=0, y=y,
                          verbose=False, jsd_every=40)
    (start, end), (start0, end0) = h["jsd"], h0["jsd"]
    assert start == start0                      # the same start: the same mixture, the same codes
    assert end < start - 0.05, (start, end)     # measured -0.09 .. -0.12
    assert end < end0 - 0.05, (end, end0)       # the control ends at or above its start
    assert abs(h.scalars["final_acc"] - h.scalars["start"]["acc"]) < 0.04  # measured <= 0.022
