"""The parts every adversarial method shares: priors, discriminator/critic and
generator losses, the WGAN-GP penalty, and the value of the GAN game.

Tensors in, tensors out, no hidden state.  Two families of losses:

* the **original (Jensen-Shannon) GAN** of Goodfellow et al. (2014), with a
  discriminator that outputs a *logit* l, D = sigmoid(l).  Its value
  V(D) = E_p log D(x) + E_q log(1 - D(x)) is at most 2 JSD(p || q) - 2 log 2, with
  equality at D* = p / (p + q) (:func:`gan_value`); the discriminator minimises -V,
  the generator either the saturating E_q log(1 - D) or the non-saturating
  -E_q log D;
* the **Wasserstein GAN** (Arjovsky et al. 2017) with a real-valued critic, made
  1-Lipschitz by the gradient penalty of Gulrajani et al. (2017).

``log D = -softplus(-l)`` and ``log(1 - D) = -softplus(l)`` are used throughout,
so no probability is ever rounded to 0 or 1 before its logarithm.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "sample_normal",
    "sample_prior",
    "gradient_penalty",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
    "gan_value",
    "discriminator_loss",
    "saturating_generator_loss",
    "nonsaturating_generator_loss",
    "optimal_value",
]


# ---------------------------------------------------------------------------
# Priors
# ---------------------------------------------------------------------------

def sample_normal(n: int, dim: int, generator: torch.Generator, sigma: float = 1.0,
                  device=None) -> torch.Tensor:
    """z ~ N(0, sigma^2 I_dim), (n, dim), drawn on the generator's device."""
    z = sigma * torch.randn(n, dim, generator=generator, device=generator.device)
    return z.to(device) if device is not None else z


def sample_prior(n: int, dim_n: int, n_clusters: int, sigma: float, generator: torch.Generator,
                 device=None, k: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mixed prior of ClusterGAN: z = (z_n, z_c), z_n ~ N(0, sigma^2 I_{dim_n}),
    z_c = e_k with k ~ Unif{0..K-1}.

    ``k`` fixes the clusters instead of drawing them.  ``n_clusters=0`` gives a plain
    Gaussian prior (z_c has no columns).  Draws happen on the generator's device (no
    host-device copy per step).  Returns (z_n (n, dim_n), z_c (n, K) one-hot, k (n,)).
    """
    gdev = generator.device
    if n_clusters == 0:
        k = torch.zeros(n, dtype=torch.long, device=gdev)
        z_c = torch.zeros(n, 0, device=gdev)
    else:
        if k is None:
            k = torch.randint(n_clusters, (n,), generator=generator, device=gdev)
        z_c = F.one_hot(k.to(gdev), n_clusters).float()
    z_n = sigma * torch.randn(n, dim_n, generator=generator, device=gdev)
    return z_n.to(device), z_c.to(device), k.to(device)


# ---------------------------------------------------------------------------
# Wasserstein GAN with gradient penalty
# ---------------------------------------------------------------------------

def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None, batch_dims: int = 1) -> torch.Tensor:
    """WGAN-GP: E[(||grad D(x_hat)||_2 - 1)^2] at x_hat = eps x + (1 - eps) G(z), one
    eps ~ U(0, 1) *per sample*.

    The first ``batch_dims`` dimensions index samples (``batch_dims=2``: K critics run
    as one batched module on (K, B, d) inputs, each sample's gradient its own critic's:
    the sum of independent critics' outputs has the per-critic gradients).  Returns the
    mean over every sample.  ``create_graph=True``: the penalty is differentiable with
    respect to the critic's parameters, which is what makes it a penalty on the critic.
    """
    shape = (*real.shape[:batch_dims], *([1] * (real.dim() - batch_dims)))
    gdev = generator.device if generator is not None else real.device
    eps = torch.rand(shape, generator=generator, device=gdev).to(real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(batch_dims).norm(dim=-1) - 1) ** 2).mean()


def wasserstein_critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor,
                            gp: torch.Tensor | float = 0.0, lam: float = 10.0) -> torch.Tensor:
    """L_D = mean D(G(z)) - mean D(x) + lam * GP: minimising it scores real data high."""
    return d_fake.mean() - d_real.mean() + lam * gp


def wasserstein_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """L_G = -mean D(G(z)): the generator raises the critic's score of its samples."""
    return -d_fake.mean()


# ---------------------------------------------------------------------------
# The original (Jensen-Shannon) GAN, on logits
# ---------------------------------------------------------------------------

def gan_value(logit_real: torch.Tensor, logit_fake: torch.Tensor) -> torch.Tensor:
    """V(D) = E_p log D(x) + E_q log(1 - D(x)) with D = sigmoid(logit) (a scalar).

    At most 2 JSD(p || q) - 2 log 2 for any D, with equality at D* = p / (p + q)."""
    return -F.softplus(-logit_real).mean() - F.softplus(logit_fake).mean()


def discriminator_loss(logit_real: torch.Tensor, logit_fake: torch.Tensor) -> torch.Tensor:
    """-V(D): the binary cross-entropy with real labelled 1 and fake labelled 0."""
    return -gan_value(logit_real, logit_fake)


def saturating_generator_loss(logit_fake: torch.Tensor) -> torch.Tensor:
    """The minimax generator loss E_q log(1 - D(G(z))).  When D rejects the fakes
    confidently (logit -> -inf) its gradient vanishes: it saturates."""
    return -F.softplus(logit_fake).mean()


def nonsaturating_generator_loss(logit_fake: torch.Tensor) -> torch.Tensor:
    """-E_q log D(G(z)): the same fixed point, a gradient that stays large when D wins."""
    return F.softplus(-logit_fake).mean()


def optimal_value(jsd: float | torch.Tensor) -> float | torch.Tensor:
    """V(D*) = 2 JSD - 2 log 2, the value of the game at the optimal discriminator
    (JSD in nats; the value lies in [-2 log 2, 0])."""
    return 2 * jsd - 2 * math.log(2)
