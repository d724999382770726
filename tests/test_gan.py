"""The shared GAN parts (dcl_lib.gan) against independent computations: priors, the
WGAN-GP penalty (value *and* gradient), the Wasserstein and Jensen-Shannon losses, and
the value of the game at the optimal discriminator, 2 JSD - 2 log 2, with the JSD
computed by numerical integration."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats

from dcl_lib.gan import (discriminator_loss, gan_value, gradient_penalty, nonsaturating_generator_loss,
                         optimal_value, sample_normal, sample_prior, saturating_generator_loss,
                         wasserstein_critic_loss, wasserstein_generator_loss)


def test_prior_statistics():
    g = torch.Generator().manual_seed(0)
    z_n, z_c, k = sample_prior(20000, 30, 10, 0.1, g)
    assert z_n.shape == (20000, 30) and z_c.shape == (20000, 10)
    assert torch.equal(z_c.argmax(1), k) and torch.all(z_c.sum(1) == 1)
    assert abs(float(z_n.std()) - 0.1) < 0.002 and abs(float(z_n.mean())) < 0.002
    counts = torch.bincount(k, minlength=10).float() / 20000
    assert torch.all((counts - 0.1).abs() < 0.01)


class _Linear(torch.nn.Module):
    """D(x) = w . x: its input gradient is w everywhere, so GP = (||w|| - 1)^2."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w


def test_gradient_penalty_on_a_linear_critic():
    w = torch.tensor([3.0, 4.0])  # ||w|| = 5
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    gp = gradient_penalty(_Linear(w), real, fake, torch.Generator().manual_seed(0))
    assert float(gp.detach()) == pytest.approx((5.0 - 1.0) ** 2)


def test_gradient_penalty_per_sample_interpolation():
    """With D(x) = ||x||^2 / 2 the gradient at x_hat is x_hat itself."""
    class Quadratic(torch.nn.Module):
        def forward(self, x):
            return 0.5 * (x.flatten(1) ** 2).sum(1)

    real, fake = torch.randn(16, 3), torch.randn(16, 3)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    gp = gradient_penalty(Quadratic(), real, fake, g1)
    eps = torch.rand(16, 1, generator=g2)
    x_hat = eps * real + (1 - eps) * fake
    assert float(gp.detach()) == pytest.approx(float(((x_hat.norm(dim=1) - 1) ** 2).mean()), rel=1e-6)


def test_gradient_penalty_gives_the_critic_its_gradient():
    """GP = (||w|| - 1)^2 for D(x) = w.x, so dGP/dw = 2 (||w|| - 1) w / ||w||.  A penalty
    computed without create_graph (or detached) would give the critic no gradient."""
    w = torch.tensor([3.0, 4.0])
    critic = _Linear(w.clone())
    gp = gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2), torch.Generator().manual_seed(0))
    gp.backward()
    expected = 2 * (5.0 - 1.0) * w / 5.0
    assert critic.w.grad is not None and torch.allclose(critic.w.grad, expected, atol=1e-5)


def test_sample_normal_and_gaussian_prior():
    z = sample_normal(50_000, 3, torch.Generator().manual_seed(0), sigma=2.0)
    assert z.shape == (50_000, 3) and abs(float(z.std()) - 2.0) < 0.02
    z_n, z_c, k = sample_prior(10, 5, 0, 0.1, torch.Generator().manual_seed(0))
    assert z_c.shape == (10, 0) and torch.all(k == 0)
    k_fixed = torch.tensor([2, 0, 1])
    assert torch.equal(sample_prior(3, 2, 3, 0.1, torch.Generator(), k=k_fixed)[2], k_fixed)


def test_wasserstein_losses_by_hand():
    d_real, d_fake = torch.tensor([1.0, 3.0]), torch.tensor([0.5, -0.5])
    assert float(wasserstein_critic_loss(d_real, d_fake, torch.tensor(0.2), 10.0)) == pytest.approx(0 - 2 + 2)
    assert float(wasserstein_critic_loss(d_real, d_fake)) == pytest.approx(-2.0)  # no penalty
    # the fake term matters: a critic loss without it would not move with d_fake
    assert float(wasserstein_critic_loss(d_real, d_fake + 4)) == pytest.approx(2.0)
    assert float(wasserstein_generator_loss(torch.tensor([2.0, 4.0]))) == pytest.approx(-3.0)


def test_discriminator_loss_is_binary_cross_entropy():
    g = torch.Generator().manual_seed(0)
    lr, lf = 3 * torch.randn(100, generator=g), 3 * torch.randn(100, generator=g)
    ref = (F.binary_cross_entropy_with_logits(lr, torch.ones(100))
           + F.binary_cross_entropy_with_logits(lf, torch.zeros(100)))
    assert torch.allclose(discriminator_loss(lr, lf), ref, atol=1e-6)
    assert torch.allclose(gan_value(lr, lf), -ref, atol=1e-6)
    # no overflow at saturated logits: log D and log(1 - D) stay finite
    assert torch.isfinite(gan_value(torch.tensor([-200.0]), torch.tensor([200.0])))


def test_saturating_and_nonsaturating_generator_gradients():
    """At logit l: d/dl E log(1 - D) = -sigmoid(l) (vanishes when D rejects the fakes),
    d/dl -E log D = -(1 - sigmoid(l)) (stays near -1)."""
    l = torch.tensor([-8.0, 0.0, 3.0], requires_grad=True)
    (g_sat,) = torch.autograd.grad(saturating_generator_loss(l), l)
    (g_ns,) = torch.autograd.grad(nonsaturating_generator_loss(l), l)
    s = torch.sigmoid(l.detach())
    assert torch.allclose(g_sat, -s / 3) and torch.allclose(g_ns, -(1 - s) / 3)
    assert abs(float(g_sat[0])) < 1e-3 < abs(float(g_ns[0]))


def _jsd(p, q, lo=-15.0, hi=15.0):
    m = lambda x: 0.5 * (p(x) + q(x))
    kl = lambda a: integrate.quad(lambda x: a(x) * math.log(a(x) / m(x)) if a(x) > 0 else 0.0,
                                  lo, hi, limit=400)[0]
    return 0.5 * kl(p) + 0.5 * kl(q)


def test_value_at_the_optimal_discriminator_is_2jsd_minus_2log2():
    p = lambda x: 0.6 * stats.norm.pdf(x, -1, 0.7) + 0.4 * stats.norm.pdf(x, 2, 0.5)
    q = lambda x: stats.norm.pdf(x, 0.5, 1.2)
    jsd = _jsd(p, q)
    assert 0 < jsd < math.log(2)
    rng = np.random.default_rng(0)
    n = 400_000
    xp = np.where(rng.random(n) < 0.6, rng.normal(-1, 0.7, n), rng.normal(2, 0.5, n))
    xq = rng.normal(0.5, 1.2, n)
    logit = lambda x: torch.tensor(np.log(p(x)) - np.log(q(x)))  # D* = p / (p + q)
    v_star = float(gan_value(logit(xp), logit(xq)))
    assert v_star == pytest.approx(float(optimal_value(jsd)), abs=4e-3)
    # any other discriminator does worse
    for shift in (-1.0, 0.5, 2.0):
        assert float(gan_value(logit(xp) + shift, logit(xq) + shift)) < v_star
    assert optimal_value(0.0) == pytest.approx(-2 * math.log(2)) and optimal_value(math.log(2)) == 0


# -- contracts the mutation run found untested ----------------------------------------------

def test_draws_come_from_the_given_generator_alone():
    """The same generator seed gives the same draws whatever torch's global generator
    holds; another seed gives others (a draw from the global generator would not)."""
    def draws(seed, global_seed):
        torch.manual_seed(global_seed)
        g = torch.Generator().manual_seed(seed)
        z_n, z_c, k = sample_prior(50, 3, 4, 0.5, g)
        return z_n, k, sample_normal(20, 2, g)
    a, b, c = draws(1, 10), draws(1, 20), draws(2, 10)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1]) and not torch.equal(a[2], c[2])
    x = torch.randn(8, 3)
    torch.manual_seed(5)
    p1 = gradient_penalty(_Quadratic(), x, x + 1, torch.Generator().manual_seed(3))
    torch.manual_seed(6)
    p2 = gradient_penalty(_Quadratic(), x, x + 1, torch.Generator().manual_seed(3))
    assert p1.item() == p2.item()


class _Quadratic(torch.nn.Module):
    def forward(self, x):  # D(x) = |x|^2 / 2: grad = x_hat, so GP depends on eps
        return 0.5 * (x.flatten(1) ** 2).sum(1)


def test_prior_shapes_and_types_in_every_case():
    g = torch.Generator().manual_seed(0)
    z_n, z_c, k = sample_prior(6, 2, 0, 1.0, g)  # a plain Gaussian prior
    assert z_c.shape == (6, 0) and k.dtype == torch.long and torch.equal(k, torch.zeros(6).long())
    # given clusters that leave out the last one: z_c still has K columns
    z_n, z_c, k = sample_prior(3, 2, 5, 1.0, g, k=torch.tensor([0, 1, 1]))
    assert z_c.shape == (3, 5) and torch.equal(z_c.argmax(1), k) and z_c.dtype == torch.float32
    # the default scale of sample_normal is 1
    z = sample_normal(40000, 2, torch.Generator().manual_seed(1))
    assert abs(float(z.std()) - 1.0) < 0.02


def test_batched_gradient_penalty_is_each_critics_own():
    """batch_dims=2: (K, B, d) inputs, the norm over each sample's features (not over the
    critics' axis), the same eps per (k, b) as a loop over k draws in that order."""
    K, B, d = 3, 5, 4
    W = torch.randn(K, d, generator=torch.Generator().manual_seed(0))

    class Batched(torch.nn.Module):
        def forward(self, x):  # (K, B, d) -> (K, B): critic k is x . W_k
            return torch.einsum("kbd,kd->kb", x, W) + 0.5 * (x ** 2).sum(-1)

    real = torch.randn(K, B, d, generator=torch.Generator().manual_seed(1))
    fake = torch.randn(K, B, d, generator=torch.Generator().manual_seed(2))
    got = gradient_penalty(Batched(), real, fake, torch.Generator().manual_seed(4), batch_dims=2)
    eps = torch.rand(K, B, 1, generator=torch.Generator().manual_seed(4))
    x_hat = eps * real + (1 - eps) * fake
    grad = W[:, None, :] + x_hat  # the critic's input gradient, by hand
    ref = ((grad.norm(dim=-1) - 1) ** 2).mean()
    assert float(got) == pytest.approx(float(ref), rel=1e-5)


def test_wasserstein_critic_loss_default_weight_is_wgan_gps_ten():
    d = torch.zeros(3)
    assert float(wasserstein_critic_loss(d, d, gp=1.0)) == 10.0  # Gulrajani et al. 2017
