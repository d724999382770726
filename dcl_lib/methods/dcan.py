"""DCAN (Lim, ICLR 2025 DeLTa workshop, arXiv 2412.08933): deep clustering with an
adversarial-net clustering loss.  No public code exists; this module is the reference
implementation, and every choice the poster leaves open is a config field measured in
the book's chapter 03.

A pretrained autoencoder's codes z = E(x) are standardized once (z_hat = (z - m) / s,
one shift per dimension and one scale for all, fixed for the run) and a Gaussian mixture
theta* = {pi_k, mu_k, Sigma_k} is fitted to them; k*(x) = argmax_k p(k | z_hat(x)).
The encoder (and decoder) are then fine-tuned on

    L = recon_weight * R(x, dec(enc(x))) + weight * L_cluster

with one of four clustering terms (``loss``):

* ``"dcan"``: an adversarial net.  D is asked "does z belong to the assigned cluster?":
  real z+ ~ N(mu_{k*}, tau^2 Sigma0_{k*}) (label T = 1; Sigma0: the covariances of the
  first fit, see below), fake z_hat(x) (T = 0), both with k*
  as a second input (``conditional=True``).  D maximises
  V = E_p log D(z+, k*) + E_q log(1 - D(z_hat, k*)) (at most 2 JSD - 2 log 2); the
  encoder minimises the non-saturating -E_q log D(z_hat, k*);
* ``"kl"``: the closed-form deep-clustering loss that DCAN replaces, the KL divergence of
  the encoder's Gaussian q(z | x) = N(m(x), diag s^2(x)) to the same target;
* ``"abc"``: the Euclidean loss ||z_hat - mu_{k*}||^2 (the poster's first baseline);
* ``"aae"``: the contrast, an adversarial autoencoder with one Gaussian prior N(0, I)
  and an unconditional D: a matched prior without clusters.

theta* is refitted on the current codes every ``refresh_steps`` minibatch steps (EM
warm-started from the previous theta*, so cluster k keeps its identity); the targets'
covariances stay those of the first fit (``target_spread="fixed"``: a target that follows
each refit keeps shrinking with the codes, and on MNIST the clusters then starve one by
one); the clusters are k*.

Order: config -> networks -> target (theta*) -> losses -> the two players' steps ->
the loop -> estimator -> runner entry.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..gan import discriminator_loss, nonsaturating_generator_loss
from ..nets import MLPAutoencoder, mlp
from ..train import (History, LossWindow, TrainState, batched, make_adam,
                     minibatches, progress, seeded_generator)
from .autoencoder import (AutoencoderConfig, cache_metrics, cached_autoencoder,
                          codes_from_checkpoint, encode, export_encoder, reconstruction_loss,
                          train_autoencoder)
from .base import ConfiguredEstimator, FitResult, MethodSpec, RunContext, as_tensor, check_n_clusters

__all__ = ["DCANConfig", "DCANNets", "Target", "fit_target", "sample_target", "abc_loss",
           "kl_to_target", "update_discriminator", "update_autoencoder", "gaussian_jsd",
           "train_dcan", "DCAN", "LOSSES"]

LOSSES = ("dcan", "kl", "abc", "aae")


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DCANConfig(AutoencoderConfig):
    """Every field of the autoencoder (:class:`AutoencoderConfig`, the GMM chapter's
    pretraining), then the clustering phase's."""

    n_clusters: int = 10
    loss: str = "dcan"              # "dcan" | "kl" | "abc" (baselines) | "aae" (contrast)
    conditional: bool = True        # D sees (z, e_{k*}); False: z alone (matches the marginal)
    disc_hidden: tuple[int, ...] = (64, 64)  # small: a 10-D discriminator saturates easily
    disc_lr: float = 2e-4           # Adam (0.5, 0.999), as DCGAN
    finetune_lr: float = 1e-4       # Adam, encoder and decoder
    finetune_epochs: int = 30
    finetune_batch: int = 256
    weight: float = 0.1             # lambda: the clustering term against reconstruction
    recon_weight: float = 1.0       # 0: the clustering term alone
    refresh_steps: int = 25         # minibatch steps between refits of theta* (0: never)
    tau: float = 0.5                # the target's spread: N(mu_k, tau^2 Sigma_k); 1: the fitted
                                    # mixture itself, which D can hardly tell from the codes
    target_spread: str = "fixed"    # Sigma_k of the targets: "fixed" at the first fit, or "refit"
                                    # (follows every refit: a scale-free pull that never settles)
    assign: str = "hard"            # each point's cluster in the terms: "hard" k* or "soft" k ~ p(k | z)
    covariance_type: str = "full"   # of theta* ("full" or "diag")
    reg_covar: float = 1e-4         # on standardized codes
    gmm_n_init: int = 5             # the initial theta* (and the GMM baseline it is) ...
    gmm_kmeans_start: int = 0       # ... plus (> 0) one EM start at the partition of k-means
                                    # with this many restarts (both profiles: 10)
    refresh_iter: int = 10          # EM iterations of a warm-started refit
    logvar_init: float = -4.0       # loss="kl": initial log s^2 of the encoder's Gaussian
    saturation: float = 0.99        # D's epoch accuracy from which it "wins outright"

    profiles = {
        # quick: 30 epochs of 40 steps; full: 15 epochs of 274 steps (all 70,000 images)
        "quick": {**AutoencoderConfig.profiles["quick"], "finetune_epochs": 30, "gmm_n_init": 2,
                  "gmm_kmeans_start": 10},
        "full": {**AutoencoderConfig.profiles["full"], "finetune_epochs": 15,
                 "gmm_kmeans_start": 10},
    }

    def steps_per_epoch(self, n: int) -> int:
        """Minibatch steps in one fine-tuning epoch over ``n`` points (the last batch may be
        short, none is dropped)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return math.ceil(n / self.finetune_batch)

    def finetune_steps(self, n: int) -> int:
        """Minibatch steps of the whole clustering phase over ``n`` points."""
        return self.finetune_epochs * self.steps_per_epoch(n)

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.covariance_type not in ("full", "diag"):
            raise ValueError(f"covariance_type must be 'full' or 'diag', got {self.covariance_type!r}")
        if self.target_spread not in ("fixed", "refit"):
            raise ValueError(f"target_spread must be 'fixed' or 'refit', got {self.target_spread!r}")
        if self.assign not in ("hard", "soft"):
            raise ValueError(f"assign must be 'hard' or 'soft', got {self.assign!r}")
        if self.refresh_steps < 0:
            raise ValueError(f"refresh_steps must be >= 0, got {self.refresh_steps}")
        if self.weight < 0 or self.recon_weight < 0 or self.weight + self.recon_weight == 0:
            raise ValueError(f"weight and recon_weight must be >= 0 and not both 0, got "
                             f"{self.weight}, {self.recon_weight}")


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------

class DCANNets(nn.Module):
    """The autoencoder, the standardization of its codes, the discriminator and (loss
    ``"kl"``) a log-variance head on the encoder's last hidden layer.

    ``code(x)`` -> z_hat (B, d); ``code_logvar(x)`` -> (z_hat, log s^2) in z_hat's units;
    ``D(z_hat, k)`` -> logits (B,).
    """

    def __init__(self, ae: MLPAutoencoder, n_clusters: int, shift: torch.Tensor, scale: float,
                 disc_hidden=(64, 64), conditional: bool = True, logvar_head: bool = False,
                 logvar_init: float = -4.0):
        super().__init__()
        self.ae, self.n_clusters, self.conditional = ae, n_clusters, conditional
        d = ae.latent_dim
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32).reshape(d))
        self.register_buffer("scale", torch.as_tensor(float(scale), dtype=torch.float32))
        self.disc = mlp([d + (n_clusters if conditional else 0), *disc_hidden, 1],
                        act=lambda: nn.LeakyReLU(0.2))
        self.logvar = None
        if logvar_head:
            self.logvar = nn.Linear(ae.encoder[-1].in_features, d)
            nn.init.zeros_(self.logvar.weight)
            nn.init.constant_(self.logvar.bias, logvar_init)

    def standardize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.shift) / self.scale

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardize(self.ae.encode(x))  # (B, d)

    def code_logvar(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.ae.encoder[:-1](x.flatten(1))  # (B, hidden[-1]): the last hidden layer
        return self.standardize(self.ae.encoder[-1](h)), self.logvar(h)  # (B, d) each

    def decode(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.ae.decoder(z_hat * self.scale + self.shift)  # (B, D)

    def D(self, z: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            z = torch.cat([z, F.one_hot(k, self.n_clusters).to(z.dtype)], 1)
        return self.disc(z).squeeze(1)  # (B,) logits


# ---------------------------------------------------------------------------
# The target theta*: a Gaussian mixture on the standardized codes
# ---------------------------------------------------------------------------

_TARGET_KEYS = ("weights", "means", "covariances", "labels", "resp", "spread")


@dataclass
class Target:
    """theta* = (pi (K,), mu (K, d), Sigma (K, d, d)), the mixture fitted to the codes, and
    k* (N,), the hard assignment of every training point under it.

    The clustering terms use the target Gaussians N(mu_k, tau^2 Sigma0_k), Sigma0_k =
    ``spread`` (the covariances of an earlier fit, kept fixed) or, without one, Sigma_k:
    ``chol`` (the Cholesky factor of tau^2 Sigma0_k), ``precisions`` (its inverse) and
    ``logdet`` (its log-determinant).
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    labels: torch.Tensor
    resp: torch.Tensor | None = None
    tau: float = 1.0
    spread: torch.Tensor | None = None

    def __post_init__(self) -> None:
        S = self.covariances if self.spread is None else self.spread
        self.chol = self.tau * torch.linalg.cholesky(S)
        self.precisions = torch.cholesky_inverse(self.chol)
        self.logdet = 2 * torch.log(torch.diagonal(self.chol, dim1=1, dim2=2)).sum(1)

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).cpu() for k in _TARGET_KEYS if getattr(self, k) is not None}

    @classmethod
    def from_dict(cls, d, device, tau: float = 1.0) -> "Target":
        return cls(**{k: d[k].to(device) for k in _TARGET_KEYS if k in d}, tau=tau)

    def assignments(self, idx: torch.Tensor, assign: str, g: torch.Generator) -> torch.Tensor:
        """The clusters of the points ``idx`` in the clustering terms: k* ("hard"), or one
        draw k ~ p(k | z) per point ("soft")."""
        if assign == "hard":
            return self.labels[idx]
        u = torch.rand(len(idx), 1, generator=g, device=g.device).to(self.resp.device)
        return (self.resp[idx].cumsum(1) < u).sum(1).clamp_max(self.resp.shape[1] - 1)


def fit_target(Z_hat: torch.Tensor, cfg: DCANConfig, seed: int, previous: Target | None = None
               ) -> tuple[Target, str]:
    """theta* by EM on the codes (N, d): ``gmm_n_init`` k-means starts and one at the
    partition of k-means with ``gmm_kmeans_start`` restarts (:func:`fit_mixture`), or warm-started
    from ``previous`` for ``refresh_iter`` iterations (cluster k keeps its identity).

    A warm start that leaves a cluster without points falls back to a fresh fit; returns
    (target, what happened: "fit", "refresh" or "refit: cluster(s) [..] empty").
    """
    from .gmm import GaussianMixture, fit_mixture

    if not torch.isfinite(Z_hat).all():
        raise ValueError("the codes have non-finite values (NaN or inf): lower finetune_lr or weight")
    K = cfg.n_clusters
    Z64 = Z_hat.detach().double()
    common = dict(covariance_type=cfg.covariance_type, reg_covar=cfg.reg_covar,
                  random_state=seed, device=Z_hat.device)
    note, spread = "fit", None
    if previous is not None and cfg.target_spread == "fixed":
        spread = previous.covariances if previous.spread is None else previous.spread
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few warm-started iterations do not "converge"
        if previous is not None:
            cov = previous.covariances.double()
            if cfg.covariance_type == "diag":
                cov = torch.diagonal(cov, dim1=1, dim2=2)
            w = previous.weights.double().cpu().numpy()  # stored in float32: renormalise
            gm = GaussianMixture(K, max_iter=cfg.refresh_iter, tol=0.0, weights_init=w / w.sum(),
                                 means_init=previous.means.double().cpu().numpy(),
                                 covariances_init=cov.cpu().numpy(), **common).fit(Z64)
            sizes = np.bincount(gm.labels_, minlength=K)
            note = "refresh"
            if (sizes == 0).any():
                note = f"refit: cluster(s) {np.flatnonzero(sizes == 0).tolist()} empty"
                previous, spread = None, None
        if previous is None:
            gm = fit_mixture(Z64, K, n_init=cfg.gmm_n_init, kmeans_start=cfg.gmm_kmeans_start,
                             max_iter=300, **common)
    cov = torch.as_tensor(gm.covariances_, device=Z_hat.device)
    if cfg.covariance_type == "diag":
        cov = torch.diag_embed(cov)
    dev = Z_hat.device
    return Target(torch.as_tensor(gm.weights_, device=dev).float(),
                  torch.as_tensor(gm.means_, device=dev).float(), cov.float(),
                  torch.as_tensor(gm.labels_, device=dev).long(),
                  torch.as_tensor(gm.predict_proba(Z64), device=dev).float(), cfg.tau,
                  spread), note


def sample_target(target: Target, k: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """z+ ~ N(mu_k, tau^2 Sigma0_k), the target of cluster k, for each entry of k (B,):
    mu_k + ``target.chol[k]`` eps, eps ~ N(0, I)."""
    eps = torch.randn(len(k), target.means.shape[1], generator=g, device=g.device).to(k.device)
    return target.means[k] + torch.einsum("bij,bj->bi", target.chol[k], eps)  # (B, d)


# ---------------------------------------------------------------------------
# The clustering terms
# ---------------------------------------------------------------------------

def abc_loss(z_hat: torch.Tensor, k: torch.Tensor, target: Target) -> torch.Tensor:
    """(1/d) ||z_hat - mu_{k*}||^2, averaged over the batch (the Euclidean ABC loss)."""
    return ((z_hat - target.means[k]) ** 2).mean()


def kl_to_target(m: torch.Tensor, logvar: torch.Tensor, k: torch.Tensor, target: Target
                 ) -> torch.Tensor:
    """(1/d) KL(N(m, diag e^logvar) || N(mu_k, Sigma_k)) per row (B,), closed form:
    1/2 [tr(P_k S) + (mu_k - m)^T P_k (mu_k - m) - d + log|Sigma_k| - sum logvar]."""
    d = m.shape[1]
    P = target.precisions[k]                                    # (B, d, d)
    delta = target.means[k] - m                                 # (B, d)
    trace = (torch.diagonal(P, dim1=1, dim2=2) * logvar.exp()).sum(1)
    maha = torch.einsum("bi,bij,bj->b", delta, P, delta)
    return 0.5 * (trace + maha - d + target.logdet[k] - logvar.sum(1)) / d


# ---------------------------------------------------------------------------
# The two players' steps
# ---------------------------------------------------------------------------

def _real(nets: DCANNets, k: torch.Tensor, target: Target, cfg: DCANConfig, g: torch.Generator):
    """Real samples for D: z+ from the target of k* (DCAN) or from N(0, I) (AAE)."""
    if cfg.loss == "aae":
        return torch.randn(len(k), target.means.shape[1], generator=g, device=g.device).to(k.device)
    return sample_target(target, k, g)


def update_discriminator(nets: DCANNets, opt_d: torch.optim.Optimizer, x: torch.Tensor,
                         k: torch.Tensor, target: Target, cfg: DCANConfig, g: torch.Generator
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One ascent step of V(D) = E_p log D(z+, k*) + E_q log(1 - D(z_hat, k*)) (i.e. a
    descent step of the cross-entropy with T = 1 for z+ and T = 0 for z_hat = E(x)).
    Returns (V, D's accuracy on the batch), detached."""
    with torch.no_grad():
        z_fake = nets.code(x)
    z_real = _real(nets, k, target, cfg, g)
    kk = k if nets.conditional else None
    logit_real, logit_fake = nets.D(z_real, kk), nets.D(z_fake, kk)
    loss = discriminator_loss(logit_real, logit_fake)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    acc = ((logit_real > 0).float().mean() + (logit_fake < 0).float().mean()) / 2
    return -loss.detach(), acc.detach()


def update_autoencoder(nets: DCANNets, opt: torch.optim.Optimizer, x: torch.Tensor,
                       k: torch.Tensor, target: Target, cfg: DCANConfig,
                       g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of recon_weight * R(x, dec(z)) + weight * L_cluster on the encoder and
    decoder (D is not updated); R is the reconstruction error the autoencoder was trained
    with (``cfg.ae_loss``: binary cross-entropy or squared error).  Returns
    (reconstruction, clustering term), detached."""
    if cfg.loss == "kl":  # the encoder's Gaussian, reparameterised: z = m + s * eps
        m, logvar = nets.code_logvar(x)
        eps = torch.randn(m.shape, generator=g, device=g.device).to(m.device)
        z_hat = m + (0.5 * logvar).exp() * eps
        cluster = kl_to_target(m, logvar, k, target).mean()
    else:
        z_hat = nets.code(x)
        if cfg.loss == "abc":
            cluster = abc_loss(z_hat, k, target)
        else:  # dcan, aae: fool D, non-saturating
            cluster = nonsaturating_generator_loss(nets.D(z_hat, k if nets.conditional else None))
    recon = reconstruction_loss(nets.decode(z_hat), x.flatten(1), cfg.ae_loss)
    loss = cfg.recon_weight * recon + cfg.weight * cluster
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return recon.detach(), cluster.detach()


# ---------------------------------------------------------------------------
# Diagnostics: the Jensen-Shannon divergence between two Gaussians, by Monte Carlo
# ---------------------------------------------------------------------------

def _log_normal(z: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return torch.distributions.MultivariateNormal(mu, covariance_matrix=cov).log_prob(z)


def gaussian_jsd(mu_p, cov_p, mu_q, cov_q, n: int = 20000, seed: int = 0) -> float:
    """JSD(N(mu_p, cov_p) || N(mu_q, cov_q)) in nats, by Monte Carlo with n draws from
    each: 1/2 E_p log(2p / (p + q)) + 1/2 E_q log(2q / (p + q)).  No closed form exists
    (the mixture (p + q) / 2 is not Gaussian)."""
    g = torch.Generator().manual_seed(seed)
    mu_p, cov_p, mu_q, cov_q = (torch.as_tensor(t, dtype=torch.float64).cpu()
                                for t in (mu_p, cov_p, mu_q, cov_q))
    d = len(mu_p)
    total = 0.0
    for mu, cov in ((mu_p, cov_p), (mu_q, cov_q)):
        z = mu + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
        lp, lq = _log_normal(z, mu_p, cov_p), _log_normal(z, mu_q, cov_q)
        own = lp if mu is mu_p else lq
        total += 0.5 * float((math.log(2) + own - torch.logaddexp(lp, lq)).mean())
    return total


def codes_jsd(Z_hat: torch.Tensor, target: Target, n: int = 4000, seed: int = 0,
              min_points: int = 20) -> float:
    """sum_k pi^_k JSD(N(mu_k, tau^2 Sigma_k) || q_k): q_k the Gaussian fitted to the codes
    that k* assigns to k (an estimate: the codes are not exactly Gaussian), pi^_k the
    fraction of points assigned to k (clusters with fewer than ``min_points`` are left
    out).  The bound on a conditional D's value is 2 * this - 2 log 2."""
    Z = Z_hat.detach().double().cpu()
    labels = target.labels.cpu()
    out, total = 0.0, 0
    for k in range(len(target.weights)):
        Zk = Z[labels == k]
        if len(Zk) < min_points:
            continue
        cov_q = torch.cov(Zk.T) + 1e-6 * torch.eye(Z.shape[1], dtype=torch.float64)
        cov_p = target.chol[k] @ target.chol[k].T  # tau^2 Sigma_k, the target's Gaussian
        out += len(Zk) * gaussian_jsd(target.means[k], cov_p, Zk.mean(0), cov_q, n, seed + k)
        total += len(Zk)
    return out / max(total, 1)


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

_HINT = "lower finetune_lr, disc_lr or weight"


def _standardization(Z: torch.Tensor) -> tuple[torch.Tensor, float]:
    if not torch.isfinite(Z).all():
        raise ValueError("the pretrained codes have non-finite values (NaN or inf): check the "
                         "autoencoder")
    shift = Z.mean(0)
    scale = float((Z - shift).pow(2).mean().sqrt())
    if scale <= 1e-12:
        raise ValueError("the pretrained codes are constant: nothing to cluster")
    return shift, scale


def train_dcan(X: torch.Tensor, ae: MLPAutoencoder, cfg: DCANConfig, seed: int = 0,
               device="cpu", y: torch.Tensor | None = None, state: TrainState | None = None,
               verbose: bool = True, jsd_every: int = 0) -> tuple[DCANNets, Target, History]:
    """The clustering phase on images X (N, D) in [0, 1], from a pretrained autoencoder
    ``ae`` (copied, not modified).

    Each epoch: theta* refreshed when due; per minibatch one D step (adversarial losses)
    and one encoder/decoder step.  ``y`` only logs ACC / NMI / ARI of k*; ``jsd_every``
    (epochs, 0: never) logs ``codes_jsd`` (the Gaussian-fit estimate of the JSD that
    bounds D's value).  Returns (networks, theta* on the final codes, history).
    """
    from ..metrics import evaluate

    cfg.validate()
    device = torch.device(device)
    K = cfg.n_clusters
    X = X.reshape(len(X), -1).to(device, torch.float32)
    N = len(X)
    check_n_clusters(K, N)
    state = state or TrainState()
    g = seeded_generator(seed, device)
    torch.manual_seed(seed)
    sigmoid = isinstance(ae.decoder[-1], nn.Sigmoid)
    if sigmoid != (cfg.ae_loss == "bce"):
        raise ValueError(f"ae_loss={cfg.ae_loss!r} needs an autoencoder with a "
                         f"{'sigmoid' if cfg.ae_loss == 'bce' else 'linear'} output, and this "
                         f"one has a {'sigmoid' if sigmoid else 'linear'} one: fine-tune it "
                         "with the loss it was trained with")
    ae = copy.deepcopy(ae).to(device)
    Z0 = encode(ae, X)
    shift, scale = _standardization(Z0)
    nets = DCANNets(ae, K, shift, scale, cfg.disc_hidden, cfg.conditional and cfg.loss == "dcan",
                    cfg.loss == "kl", cfg.logvar_init).to(device)
    adversarial = cfg.loss in ("dcan", "aae")
    opt_d = make_adam(nets.disc.parameters(), cfg.disc_lr, device, betas=(0.5, 0.999))
    params = list(nets.ae.parameters()) + (list(nets.logvar.parameters()) if nets.logvar else [])
    opt = make_adam(params, cfg.finetune_lr, device)
    hist = History(y)
    for key in ("events", "sizes"):
        hist.series.setdefault(key, [])
    state.attach({"dcan": nets}, {"discriminator": opt_d, "autoencoder": opt}, {"draws": g}, hist)
    saved = state.restore()
    start = saved.get("epoch", 0)
    per_epoch = cfg.steps_per_epoch(N)
    if start:
        target = Target.from_dict({k[7:]: v for k, v in saved.items() if k.startswith("target_")},
                                  device, cfg.tau)
    else:
        target, _ = fit_target(nets.standardize(Z0), cfg, seed)

    def log(epoch: int, losses: dict) -> None:
        labels = target.labels.cpu()
        extra = {"sizes": torch.bincount(labels, minlength=K).tolist()}
        if y is not None:
            m = evaluate(y.cpu().numpy(), labels.numpy())
            extra.update({"nmi": m["nmi"], "ari": m["ari"]})
        if jsd_every and epoch % jsd_every == 0:
            extra["jsd"] = codes_jsd(encode_hat(nets, X), target, seed=seed)
        hist.log(epoch, labels, losses, **extra)
        if verbose:
            print(f"DCAN[{cfg.loss}] epoch {epoch}: ACC {hist.last('acc'):.4f}, sizes "
                  f"{min(extra['sizes'])}..{max(extra['sizes'])}, {hist.last('seconds'):.0f} s",
                  flush=True)

    if start == 0:
        if y is not None:  # theta* at the start: the Gaussian mixture on the pretrained codes
            hist.scalars["start"] = evaluate(y.cpu().numpy(), target.labels.cpu().numpy())
        log(0, {})
    step = start * per_epoch
    for epoch in progress(range(start + 1, cfg.finetune_epochs + 1), desc=f"DCAN[{cfg.loss}]",
                          verbose=verbose):
        window = LossWindow(unit="epoch")
        nets.train()
        for b in minibatches(N, cfg.finetune_batch, g):
            step += 1
            if cfg.refresh_steps and step % cfg.refresh_steps == 0:  # refresh theta* on the current codes
                target, note = fit_target(encode_hat(nets, X), cfg, seed, previous=target)
                if note.startswith("refit"):
                    hist.series["events"].append([step, note])
                    if verbose:
                        print(f"DCAN step {step}: {note}: theta* refitted from k-means starts",
                              flush=True)
            x, k = X[b], target.assignments(b, cfg.assign, g)
            if adversarial:
                value, acc = update_discriminator(nets, opt_d, x, k, target, cfg, g)
                window.add(epoch, weight=len(b), value=value, d_acc=acc)
            recon, cluster = update_autoencoder(nets, opt, x, k, target, cfg, g)
            window.add(epoch, weight=len(b), recon=recon, cluster=cluster)
        nets.eval()
        losses = window.means(epoch, hint=_HINT)
        if adversarial and losses["d_acc"] >= cfg.saturation:
            note = f"discriminator saturated (epoch accuracy {losses['d_acc']:.3f})"
            hist.series["events"].append([step, note])
            if verbose:
                print(f"DCAN step {step}: {note}", flush=True)
        log(epoch, losses)
        if state.checkpoint(epoch, final=epoch == cfg.finetune_epochs, epoch=epoch,
                            **{f"target_{k}": v for k, v in target.to_dict().items()}):
            break
    final, note = fit_target(encode_hat(nets, X), cfg, seed, previous=target)
    if note.startswith("refit"):
        hist.series["events"].append([step, note])
    hist.scalars["final_acc"] = hist.acc(final.labels.cpu())
    return nets, final, hist


def encode_hat(nets: DCANNets, X: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """The standardized codes z_hat of every row of X, (N, d)."""
    return batched(lambda x: nets.code(x.flatten(1)), X, batch_size, nets=(nets,))


# ---------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------

class DCAN(ConfiguredEstimator):
    """Deep clustering with an adversarial-net clustering loss, scikit-learn style.

    ``fit(X)`` on images (N, ...) in [0, 1] pretrains the autoencoder of the config (or
    starts from ``autoencoder=``, a pretrained :class:`MLPAutoencoder`, copied) and runs
    the clustering phase with ``config.loss``; ``labels_`` are k* on the final codes;
    ``predict(X)`` assigns new images to theta*'s clusters.
    """

    config_class = DCANConfig

    def fit(self, X, y=None, y_eval=None, autoencoder: MLPAutoencoder | None = None,
            state: TrainState | None = None, jsd_every: int = 0):
        cfg = self._cfg()
        cfg.validate()
        X = as_tensor(X, dtype=torch.float32, ndim=(2, 3, 4))
        X = X.reshape(len(X), -1)
        check_n_clusters(self.n_clusters, len(X))
        dev = self._device()
        if autoencoder is None:
            autoencoder, self.autoencoder_history_ = train_autoencoder(
                X, cfg.autoencoder(), self.random_state, dev, verbose=self.verbose)
        elif autoencoder.in_dim != X.shape[1]:
            raise ValueError(f"the autoencoder takes {autoencoder.in_dim} inputs, the data have "
                             f"{X.shape[1]} features")
        y = None if y_eval is None else torch.as_tensor(np.asarray(y_eval))
        self.nets_, self.target_, self.history_ = train_dcan(
            X, autoencoder, cfg, self.random_state, dev, y, state, self.verbose, jsd_every)
        self.config_, self.n_features_in_ = cfg, X.shape[1]
        self.labels_ = self.target_.labels.cpu().numpy()
        return self

    def transform(self, X) -> np.ndarray:
        """The standardized codes z_hat of X, (N, d)."""
        self._check_fitted("nets_")
        X = as_tensor(X, dtype=torch.float32, ndim=(2, 3, 4))
        X = X.reshape(len(X), -1)
        self._check_n_features(X)
        return encode_hat(self.nets_, X.to(self.nets_.shift.device)).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        from .gmm import _mixture_labels

        return _mixture_labels(self.target_.to_dict(), torch.as_tensor(self.transform(X)), "full")


# ---------------------------------------------------------------------------
# Runner entry
# ---------------------------------------------------------------------------

def _fit(data, cfg: DCANConfig, ctx: RunContext) -> FitResult:
    X = data.flat()
    # the shared autoencoder of this seed (trained once per machine, as gmm-ae's and DEC's;
    # a cache hit is the network a live training gives): its training seconds are recorded,
    # since a hit's wall time leaves them out
    ae, ae_hist = cached_autoencoder(X, cfg.autoencoder(), ctx.seed, ctx.device, ctx.verbose)
    est = DCAN(cfg.n_clusters, cfg, ctx.seed, ctx.device, ctx.verbose)
    est.fit(X, y_eval=data.y, autoencoder=ae, state=ctx.state, jsd_every=1)
    # the comparison on the same pretrained codes: theta* at the start, a Gaussian mixture
    extra = {f"gmm_{k}": v for k, v in est.history_.scalars["start"].items()}
    extra.update(cache_metrics(ae_hist))
    t = est.target_
    state = {"encoder": export_encoder(est.nets_.ae), "shift": est.nets_.shift.cpu(),
             "scale": est.nets_.scale.cpu(),
             **{k: v for k, v in t.to_dict().items() if k in ("weights", "means", "covariances")}}
    hist = {**est.history_.to_dict(), "ae_loss/recon": ae_hist.series.get("loss/recon", [])}
    return FitResult(est.labels_, state, hist, extra)


def _reload(ck, data, cfg: DCANConfig, device) -> np.ndarray:
    """Codes from the saved (half-precision) encoder, standardized, then k* under the saved
    theta* (the gmm-ae reload's mixture step)."""
    from .gmm import _mixture_labels

    Z = codes_from_checkpoint(ck["encoder"], data.flat(), cfg, device).double().cpu()
    return _mixture_labels(ck, (Z - ck["shift"].double()) / ck["scale"].double(), "full")


SPEC = MethodSpec(DCANConfig, _fit, "DCAN: an adversarial clustering loss on autoencoder codes",
                  target_acc=0.8565, reload=_reload)
