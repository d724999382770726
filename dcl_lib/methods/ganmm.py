"""GANMM (Yu & Zhou, IJCAI 2018): a mixture of K GANs trained by ε-EM.

Each cluster k has a generator G_k (its density p_{G_k} is implicit) and a critic D_k;
one classifier C, trained on generated samples labelled with their generator, stands in
for the posterior p(k | x) (the E step).  Hard EM would freeze: a flexible G_k fits its
own cluster exactly and the classifier then reproduces the same partition.  The ε-E step
adds to each cluster's training batches sigma_t points assigned elsewhere that C rates
likely for k, and sigma_t shrinks over the iterations (method card §2, book chapter 02).

The embedded variant clusters the codes of the GMM chapter's autoencoder with K small
MLP generators and critics run as *one* batched module (:class:`~dcl_lib.nets.BatchedMLP`:
one batched matmul per layer for all K).  Deviations from the official code, each
measured in the chapter: a WGAN with gradient penalty and Adam instead of weight clipping
and RMSProp (``lipschitz="clip"`` gives the official critic constraint), a classifier
with logits and ``F.cross_entropy`` instead of the official double softmax, an E step on
all the data every ``estep_every`` iterations instead of per streamed minibatch, and the
sigma_t out-of-cluster points drawn with replacement.

The raw variant (``variant="raw"``) clusters the images themselves: K convolutional
generators and critics (:class:`~dcl_lib.nets.PerComponent` gives them the same (K, B, ...)
interface, so the players' steps and the loop are shared) and a convolutional classifier.

Order: config -> networks -> the three players' steps -> the ε-E step -> the loop ->
estimator -> runner entry.
"""
from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..gan import gradient_penalty, sample_normal
from ..nets import BatchedMLP, ConvGenerator, ConvHead, PerComponent, mlp
from ..train import (CONV_EVAL_BATCH, INT8_MIN_NUMEL, History, LossWindow, TrainState, batched,
                     compact_state, load_compact_state, make_adam, on_device, progress,
                     seeded_generator)
from .autoencoder import (AutoencoderConfig, cache_metrics, cached_autoencoder,
                          codes_from_checkpoint, encode, export_encoder)
from .base import (ConfiguredEstimator, FitResult, MethodSpec, RunContext, as_tensor, check_n_clusters,
                   check_unit_range)

__all__ = ["GANMMConfig", "ComponentNets", "GANMMNets", "RawGANMMNets", "build_nets",
           "update_critics", "update_generators", "update_classifier", "pretrain_step",
           "sigma_at", "EStep",
           "initial_labels", "train_ganmm", "GANMM", "standardize", "MOONS_CONFIG",
           "MOONS_EPS_CONFIG"]


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GANMMConfig(AutoencoderConfig):
    """Every field of the autoencoder (:class:`AutoencoderConfig`: the embedding), then
    the mixture of GANs', then the Gaussian mixture fitted on the same embedding."""

    n_clusters: int = 10
    variant: str = "embedded"      # "embedded": the autoencoder's codes; "raw": the pixels
    z_dim: int = 64                # official (SAE nets); the raw variant uses raw_z_dim
    gan_hidden: int = 32           # official SAE nets: G 64-32-d, D d-32-1, C d-32-K
    gan_depth: int = 1             # hidden layers of G, D and C (official: 1)
    gan_batch: int = 50            # per component, official
    n_critic: int = 5              # critic steps per generator step, official
    gan_lr: float = 1e-3           # Adam (official: RMSProp 5e-5 with clipping); 1e-4, the
                                   # WGAN-GP default, measured: purity 0.57 against 0.71 after
                                   # 1,000 quick iterations (the chapter's study)
    betas: tuple[float, float] = (0.5, 0.9)
    lipschitz: str = "gp"          # "gp": gradient penalty; "clip": official weight clipping
    gp_weight: float = 10.0
    clip: float = 0.01             # official clipping range, with lipschitz="clip"
    classifier_lr: float = 1e-3    # Adam
    init: str = "kmeans"           # initial partition: "kmeans" on the codes, or "random" (official)
    pretrain_iters: int = 500      # per-cluster WGAN training before the ε-EM loop, official
    iterations: int = 20000        # ε-EM iterations (official 200,000)
    sigma: tuple[int, ...] = (25, 10, 5, 2)          # out-of-cluster points per batch of 50 ...
    sigma_steps: tuple[int, ...] = (500, 1000, 2000)  # ... from these iterations on (official)
    sigma_zero_at: int = 0         # from this iteration on sigma_t = 0 (0: never, as the official code)
    eps_mode: str = "sample"       # "sample": drawn in proportion to C_k(x) (official); "top": the highest
    estep_every: int = 10          # iterations between E steps on all the data
    min_cluster: float = 0.1       # a cluster below this fraction of N / K is starving: reseeded
    hold_iters: int = 200          # after a reseed, the partition is held this long
    eval_every: int = 500
    gmm_n_init: int = 5            # the Gaussian mixture on the same embedding (the comparison) ...
    gmm_kmeans_start: int = 0      # ... plus (> 0) one EM start at the partition of k-means
                                   # on the same codes with this many restarts (both
                                   # profiles: 10; GANMM's own start is k-means on the
                                   # standardized codes)
    # the raw variant: K convolutional generators and critics and a convolutional classifier
    # on the images (the library's ClusterGAN-sized nets, 4x4 kernels; official: DCGAN-like
    # 5x5 nets with z in R^128).  No autoencoder and no Gaussian-mixture comparison.
    raw_z_dim: int = 128           # official raw MNIST
    raw_hidden: int = 1024
    raw_channels: tuple[int, int] = (64, 128)

    profiles = {
        # quick: the GMM chapter's quick autoencoder on 10,000 images, a shorter loop
        "quick": {**AutoencoderConfig.profiles["quick"], "iterations": 2000, "eval_every": 250,
                  "gmm_n_init": 2, "gmm_kmeans_start": 10},
        "full": {**AutoencoderConfig.profiles["full"], "gmm_kmeans_start": 10},
    }

    def validate(self) -> None:
        if self.variant not in ("embedded", "raw"):
            raise ValueError(f"variant must be 'embedded' or 'raw', got {self.variant!r}")
        if self.lipschitz not in ("gp", "clip"):
            raise ValueError(f"lipschitz must be 'gp' or 'clip', got {self.lipschitz!r}")
        if self.init not in ("kmeans", "random"):
            raise ValueError(f"init must be 'kmeans' or 'random', got {self.init!r}")
        if self.eps_mode not in ("sample", "top"):
            raise ValueError(f"eps_mode must be 'sample' or 'top', got {self.eps_mode!r}")
        if len(self.sigma) != len(self.sigma_steps) + 1:
            raise ValueError(f"sigma needs one value more than sigma_steps, got {self.sigma} and "
                             f"{self.sigma_steps}")
        if any(not 0 <= s < self.gan_batch for s in self.sigma):
            raise ValueError(f"every sigma must lie in [0, gan_batch={self.gan_batch}), got {self.sigma}")


# The chapter's "where Gaussians fail" toy (two moons, 2,000 points): small GANs that can
# draw a moon after 3,000 pre-training iterations (the chapter's first, 150-iteration run
# cannot), trained by hard EM (sigma_t = 0) so that a start is kept unless the
# components' fit moves it; MOONS_EPS_CONFIG borrows points at the official fractions of
# a batch (25, 10, 5 and 2 of 50).  About 50 s per run on 2 CPU cores.
MOONS_CONFIG = GANMMConfig(n_clusters=2, z_dim=8, gan_hidden=64, gan_depth=2, gan_batch=100,
                           pretrain_iters=3000, iterations=1000, eval_every=250,
                           sigma=(0, 0, 0, 0), sigma_steps=(250, 500, 750))
MOONS_EPS_CONFIG = dataclasses.replace(MOONS_CONFIG, sigma=(50, 20, 10, 4))


def sigma_at(t: int, cfg: GANMMConfig) -> int:
    """sigma_t: the number of out-of-cluster points in each batch of ``gan_batch`` at
    ε-EM iteration t (the official step schedule, then 0 from ``sigma_zero_at`` if set)."""
    if cfg.sigma_zero_at and t >= cfg.sigma_zero_at:
        return 0
    return cfg.sigma[sum(t >= s for s in cfg.sigma_steps)]


def standardize(Z: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Z - mean) / std per dimension (the official code divides by the range); checks
    that the codes are finite and not constant."""
    if not torch.isfinite(Z).all():
        raise ValueError("the embedding has non-finite values (NaN or inf): check the autoencoder")
    if mean is None:
        mean, std = Z.mean(0), Z.std(0)
        if (std <= 1e-12).any():
            raise ValueError(f"embedding dimensions {torch.nonzero(std <= 1e-12).flatten().tolist()} "
                             f"are constant: nothing to cluster along them")
    return (Z - mean) / std, mean, std


# ---------------------------------------------------------------------------
# Networks: K generators and K critics as batched modules, one classifier
# ---------------------------------------------------------------------------

class ComponentNets(nn.Module):
    """K generators, K critics and one classifier behind one interface:
    G: (K, B, z_dim) -> (K, B, ...); D: (K, B, ...) -> (K, B, 1); C: (B, ...) -> (B, K) logits.
    What the players' steps and the loop use; the variants only build different players."""

    def __init__(self, n_clusters: int, dim, z_dim: int, G: nn.Module, D: nn.Module,
                 C: nn.Module):
        super().__init__()
        self.n_clusters, self.dim, self.z_dim = n_clusters, dim, z_dim
        self.G, self.D, self.C = G, D, C

    def sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        """n samples from every generator: (K, n, d) (images: (K, n, C, H, W))."""
        dev = next(self.G.parameters()).device
        z = sample_normal(self.n_clusters * n, self.z_dim, g, device=dev)
        return self.G(z.view(self.n_clusters, n, self.z_dim))

    def posterior(self, Z: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
        """C(x) = softmax of the classifier's logits for every row of Z: (N, K)."""
        return torch.softmax(batched(self.C, Z, batch_size, nets=(self.C,)), 1)


class GANMMNets(ComponentNets):
    """The embedded variant: K small MLP generators and critics as batched modules
    (:class:`~dcl_lib.nets.BatchedMLP`: one batched matmul per layer) and an MLP classifier."""

    def __init__(self, n_clusters: int, dim: int, z_dim: int = 64, hidden: int = 32, depth: int = 1):
        h = [hidden] * depth
        super().__init__(n_clusters, dim, z_dim, BatchedMLP(n_clusters, [z_dim, *h, dim]),
                         BatchedMLP(n_clusters, [dim, *h, 1]), mlp([dim, *h, n_clusters]))


class RawGANMMNets(ComponentNets):
    """The raw variant: G_k z -> image, D_k image -> score, C image -> K logits, with the
    library's convolutional nets (:class:`~dcl_lib.nets.ConvGenerator`, ``ConvHead``).
    The K generators and critics sit behind the same (K, B, ...) interface as the
    embedded variant's batched MLPs (:class:`~dcl_lib.nets.PerComponent`), so the
    players' steps and the loop are shared."""

    def __init__(self, n_clusters: int, image_shape: tuple[int, ...], z_dim: int = 128,
                 hidden: int = 1024, channels: tuple[int, int] = (64, 128)):
        if len(image_shape) != 3:
            raise ValueError(f"the raw variant needs images (C, H, W), got samples of shape "
                             f"{tuple(image_shape)}")
        shape, K = tuple(image_shape), n_clusters
        super().__init__(K, shape, z_dim,
                         PerComponent([ConvGenerator(z_dim, shape, hidden, channels) for _ in range(K)]),
                         PerComponent([ConvHead(shape, 1, hidden, channels) for _ in range(K)]),
                         ConvHead(shape, K, hidden, channels))


def build_nets(cfg: "GANMMConfig", sample_shape: tuple[int, ...]) -> ComponentNets:
    """The variant's networks for data whose samples have shape ``sample_shape``."""
    if cfg.variant == "raw":
        return RawGANMMNets(cfg.n_clusters, tuple(sample_shape), cfg.raw_z_dim, cfg.raw_hidden,
                            cfg.raw_channels)
    if len(sample_shape) != 1:
        raise ValueError(f"the embedded variant clusters codes (N, d), got samples of shape "
                         f"{tuple(sample_shape)}")
    return GANMMNets(cfg.n_clusters, sample_shape[0], cfg.z_dim, cfg.gan_hidden, cfg.gan_depth)


# ---------------------------------------------------------------------------
# The three players' steps
# ---------------------------------------------------------------------------

def update_critics(nets: ComponentNets, opt_d, real: torch.Tensor, cfg: GANMMConfig,
                   g: torch.Generator) -> torch.Tensor:
    """One step of all K critics on real batches ``real`` (K, B, d).

    L_D = sum_k [ mean D_k(G_k(z)) - mean D_k(x in S_k) + lam GP_k ]: the sum over k
    gives each critic exactly the gradient it would get alone.  With
    ``lipschitz="clip"`` no penalty, and the weights are clipped after the step.
    Returns the detached per-component losses (K,)."""
    K, B = real.shape[:2]
    with torch.no_grad():
        fake = nets.sample(B, g)  # no gradient to the generators in the critics' step
    d_real, d_fake = nets.D(real).squeeze(-1), nets.D(fake).squeeze(-1)  # (K, B)
    per_k = d_fake.mean(1) - d_real.mean(1)
    if cfg.lipschitz == "gp":
        # gradient_penalty averages over all K*B samples; times K: a sum of per-critic means
        gp = gradient_penalty(nets.D, real, fake, g, batch_dims=2)
        loss = per_k.sum() + cfg.gp_weight * K * gp
    else:
        loss = per_k.sum()
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    if cfg.lipschitz == "clip":
        with torch.no_grad():
            for p in nets.D.parameters():
                p.clamp_(-cfg.clip, cfg.clip)
    return per_k.detach()


def update_generators(nets: ComponentNets, opt_g, cfg: GANMMConfig, g: torch.Generator) -> torch.Tensor:
    """One step of all K generators: L_G = -sum_k mean D_k(G_k(z)); returns (K,)."""
    per_k = -nets.D(nets.sample(cfg.gan_batch, g)).squeeze(-1).mean(1)
    opt_g.zero_grad(set_to_none=True)  # (the critics' gradients from this step are left on D;
    # update_critics zeroes them before it uses them)
    per_k.sum().backward()
    opt_g.step()
    return per_k.detach()


def update_classifier(nets: ComponentNets, opt_c, cfg: GANMMConfig, g: torch.Generator) -> torch.Tensor:
    """One step of the classifier on gan_batch fakes from each generator, labelled with
    their generator: L_C = mean cross-entropy(C(G_k(z)), k).  At its optimum (equal
    counts per generator) C_k(x) = p_{G_k}(x) / sum_j p_{G_j}(x): the E-step posterior
    under uniform mixing weights."""
    with torch.no_grad():
        fake = nets.sample(cfg.gan_batch, g)  # (K, B, d)
    K, B = fake.shape[:2]
    k = torch.arange(K, device=fake.device).repeat_interleave(B)
    loss = F.cross_entropy(nets.C(fake.flatten(0, 1)), k)  # (K B, ...) -> logits
    opt_c.zero_grad(set_to_none=True)
    loss.backward()
    opt_c.step()
    return loss.detach()


# ---------------------------------------------------------------------------
# The ε-E step: each cluster's real batches
# ---------------------------------------------------------------------------

class EStep:
    """The partition given by the classifier, and each cluster's batch sampler.

    ``labels`` = argmax_k C_k(x) over all the data.  :meth:`batch` draws, for every k,
    ``B - sigma`` points of S_k = {x : label k} (uniformly, with replacement) and
    ``sigma`` points with another label: in proportion to C_k(x) (``mode="sample"``, the
    official code) or uniformly among the ``ceil(sigma / B * |S_k|)`` of them with the
    highest C_k(x) (``"top"``: the same fraction of the cluster as in the batch).  An
    empty cluster is a ``ValueError`` (it would index past the data, or silently borrow
    the next cluster's points).
    """

    def __init__(self, posterior: torch.Tensor, mode: str = "sample", sigma: int = 0,
                 batch: int = 50, labels: torch.Tensor | None = None):
        self.posterior = posterior
        self.labels = posterior.argmax(1) if labels is None else labels
        K = posterior.shape[1]
        self.sizes = torch.bincount(self.labels, minlength=K)
        self.order = torch.argsort(self.labels, stable=True)  # indices grouped by cluster
        self.start = torch.cumsum(self.sizes, 0) - self.sizes
        self.mode, self.sigma, self.B = mode, int(sigma), int(batch)
        empty = torch.nonzero(self.sizes == 0).flatten().tolist()
        if empty and self.B > self.sigma:  # own points to draw, and none to draw them from
            raise ValueError(f"cluster(s) {empty} have no points, so their batches cannot hold "
                             f"their own points (B - sigma = {self.B - self.sigma}); train_ganmm "
                             f"reseeds a starving cluster before its E-step")
        if self.sigma and mode == "top":
            w = posterior.T.clone()  # (K, N): C_k(x), own points excluded
            w[self.labels, torch.arange(len(self.labels), device=w.device)] = -1.0
            m = max(1, min(int(math.ceil(self.sigma / self.B * int(self.sizes.max()))),
                           len(self.labels) - int(self.sizes.min())))
            self.top = torch.topk(w, m, dim=1).indices  # (K, m)
            self.n_top = torch.clamp(torch.ceil(self.sigma / self.B * self.sizes), 1, m).long()
        elif self.sigma:
            w = posterior.T.clone()
            w[self.labels, torch.arange(len(self.labels), device=w.device)] = 0.0
            self.weights = w + 1e-12  # (K, N)

    def batch(self, Z: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Real batches (K, B, d) for the K critics."""
        K, dev = len(self.sizes), Z.device
        n_own = self.B - self.sigma
        u = torch.rand(K, n_own, generator=g, device=g.device).to(dev)
        own = self.order[self.start[:, None] + (u * self.sizes[:, None]).long().clamp_max(
            (self.sizes[:, None] - 1).clamp_min(0))]
        if not self.sigma:
            return Z[own]
        if self.mode == "top":
            v = torch.rand(K, self.sigma, generator=g, device=g.device).to(dev)
            extra = self.top.gather(1, (v * self.n_top[:, None]).long())
        else:
            extra = torch.multinomial(self.weights, self.sigma, replacement=True, generator=g)
        return Z[torch.cat([own, extra], 1)]


def pretrain_step(nets: ComponentNets, opts, est: "EStep", Z: torch.Tensor, cfg: GANMMConfig,
                  g: torch.Generator) -> None:
    """One pre-training iteration on the partition of ``est`` (sigma = 0): the generators,
    ``n_critic`` critic steps, the classifier.  ``opts`` = (generators', critics',
    classifier's optimiser)."""
    opt_g, opt_d, opt_c = opts
    update_generators(nets, opt_g, cfg, g)
    for _ in range(cfg.n_critic):
        update_critics(nets, opt_d, est.batch(Z, g), cfg, g)
    update_classifier(nets, opt_c, cfg, g)


def initial_labels(Z: torch.Tensor, K: int, how: str, seed: int) -> torch.Tensor:
    """The initial partition: ``"random"`` equal chunks of a shuffle (official) or
    ``"kmeans"`` (k-means++ with 10 restarts) on the codes."""
    if how == "random":
        perm = torch.randperm(len(Z), generator=seeded_generator(seed))
        labels = torch.empty(len(Z), dtype=torch.long)
        labels[perm] = torch.arange(len(Z)) % K
        return labels.to(Z.device)
    from .kmeans import KMeans

    km = KMeans(K, n_init=10, random_state=seed, device=Z.device).fit(Z.flatten(1).double())
    return torch.as_tensor(km.labels_, device=Z.device).long()


def _one_hot_posterior(labels: torch.Tensor, K: int) -> torch.Tensor:
    return F.one_hot(labels, K).float()


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

_HINT = "lower gan_lr, or check the embedding's scale (it is standardized per dimension)"
# the metrics of the initial partition a run records (history and metrics: start_<name>)
START_METRICS = ("acc", "nmi", "ari", "purity")


def _reseed(labels: torch.Tensor, Z: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, int]:
    """Give starving cluster k half of the largest cluster j (split by 2-means on the
    codes); returns (new labels, j)."""
    from .kmeans import KMeans

    sizes = torch.bincount(labels, minlength=max(int(labels.max()) + 1, k + 1))
    j = int(sizes.argmax())
    idx = torch.nonzero(labels == j).flatten()
    halves = KMeans(2, n_init=3, random_state=seed, device=Z.device).fit(
        Z[idx].flatten(1).double()).labels_
    labels = labels.clone()
    labels[idx[torch.as_tensor(halves, device=Z.device) == 1]] = k
    return labels, j


def train_ganmm(Z: torch.Tensor, cfg: GANMMConfig, seed: int = 0, device="cpu",
                y: torch.Tensor | None = None, state: TrainState | None = None,
                verbose: bool = True, init_labels: torch.Tensor | None = None
                ) -> tuple[ComponentNets, History]:
    """GANMM on standardized codes Z (N, d), or on images (N, C, H, W) in [0, 1] for the
    raw variant: initial partition, pre-training, ε-EM.

    ``y`` only logs ACC / purity / NMI / ARI and the cluster sizes at each evaluation;
    ``init_labels`` (N,) replaces the initial partition of ``cfg.init``.
    Returns (networks, history); the clusters are ``nets.posterior(Z).argmax(1)``.
    """
    from ..metrics import evaluate

    cfg.validate()
    device = torch.device(device)
    K, N = cfg.n_clusters, len(Z)
    check_n_clusters(K, N)
    Z = Z.to(device, torch.float32)
    state = state or TrainState()
    g = seeded_generator(seed, device)
    torch.manual_seed(seed)
    nets = build_nets(cfg, tuple(Z.shape[1:])).to(device)
    # foreach: one kernel per step for all of a player's tensors, on the CPU too (the
    # players are small: per-tensor Adam would dominate their steps)
    multi = {"foreach": True} if device.type == "cpu" else {}  # CUDA: make_adam's fused kernel
    if cfg.lipschitz == "gp":
        opt_d = make_adam(nets.D.parameters(), cfg.gan_lr, device, betas=cfg.betas, **multi)
        opt_g = make_adam(nets.G.parameters(), cfg.gan_lr, device, betas=cfg.betas, **multi)
    else:  # the official pairing: RMSProp with clipping
        opt_d = torch.optim.RMSprop(nets.D.parameters(), lr=cfg.gan_lr, **multi)
        opt_g = torch.optim.RMSprop(nets.G.parameters(), lr=cfg.gan_lr, **multi)
    opt_c = make_adam(nets.C.parameters(), cfg.classifier_lr, device, **multi)
    hist = History(y)
    hist.series.setdefault("reseeds", [])
    state.attach({"ganmm": nets}, {"critics": opt_d, "generators": opt_g, "classifier": opt_c},
                 {"draws": g}, hist)
    saved = state.restore()
    start = saved.get("step", 0)

    if init_labels is not None:
        labels = torch.as_tensor(init_labels, device=device).long()
        if labels.shape != (N,) or int(labels.min()) < 0 or int(labels.max()) >= K:
            raise ValueError(f"init_labels must be {N} cluster indices in [0, {K}), got shape "
                             f"{tuple(labels.shape)}")
    else:
        labels = initial_labels(Z, K, cfg.init, seed)
    if start == 0:  # pre-training: each GAN on its initial chunk, sigma = 0
        if y is not None:  # first, the start the method is credited against
            m0 = evaluate(y.cpu().numpy(), labels.cpu().numpy())
            hist.scalars.update({f"start_{k}": m0[k] for k in START_METRICS})
        est = EStep(_one_hot_posterior(labels, K), sigma=0, batch=cfg.gan_batch, labels=labels)
        for _ in progress(range(cfg.pretrain_iters), desc="GANMM pretraining", verbose=verbose):
            pretrain_step(nets, (opt_g, opt_d, opt_c), est, Z, cfg, g)
    hold_until, window, last_pred, est = 0, LossWindow(), None, None
    if start:  # resumed: the partition and batch sampler the interrupted run was using
        hold_until, last_pred = saved["hold_until"], saved["last_pred"]
        est = EStep(saved["posterior"].to(device), cfg.eps_mode, saved["sigma"], cfg.gan_batch,
                    labels=saved["labels"].to(device))
    for it in progress(range(start + 1, cfg.iterations + 1), desc="GANMM ε-EM", verbose=verbose):
        window.add(it, classifier=update_classifier(nets, opt_c, cfg, g))
        sigma = sigma_at(it, cfg)
        if est is None or (it % cfg.estep_every == 0 and it > hold_until):  # the ε-E step
            post = nets.posterior(Z)
            labels = post.argmax(1)
            sizes = torch.bincount(labels, minlength=K)
            for k in torch.nonzero(sizes < max(cfg.min_cluster * N / K, 1)).flatten().tolist():
                labels, j = _reseed(labels, Z, k, seed + it)  # a starving cluster: recovery
                hist.series["reseeds"].append([it, k, j])
                hold_until = it + cfg.hold_iters
                if verbose:
                    print(f"GANMM iteration {it}: cluster {k} starving ({int(sizes[k])} points): "
                          f"reseeded with half of cluster {j}", flush=True)
            est = EStep(post, cfg.eps_mode, sigma, cfg.gan_batch, labels=labels)
        elif est.sigma != sigma:  # the schedule moved on: same partition, new sigma
            est = EStep(est.posterior, cfg.eps_mode, sigma, cfg.gan_batch, labels=est.labels)
        window.add(it, generators=update_generators(nets, opt_g, cfg, g).sum())
        for _ in range(cfg.n_critic):
            window.add(it, critics=update_critics(nets, opt_d, est.batch(Z, g), cfg, g).sum())
        last = it == cfg.iterations
        evaluate_now = it % cfg.eval_every == 0 or last
        if not (evaluate_now or (it % 50 == 0 and state.out_of_time())):
            continue
        if evaluate_now:  # (a stop between evaluations logs nothing: resumed histories match)
            losses = window.means(it, hint=_HINT)
            pred = nets.posterior(Z).argmax(1).cpu()
            extra = {"sizes": torch.bincount(pred, minlength=K).tolist(), "sigma": sigma,
                     "moved": int((pred != last_pred).sum()) if last_pred is not None else None}
            if y is not None:
                m = evaluate(y.cpu().numpy(), pred.numpy())
                extra.update({"purity": m["purity"], "nmi": m["nmi"], "ari": m["ari"]})
            last_pred = pred
            hist.log(it, pred, losses, **extra)
            if verbose:
                sz = extra["sizes"]
                print(f"GANMM iteration {it}: ACC {hist.last('acc'):.4f}, sizes {min(sz)}..{max(sz)}, "
                      f"sigma {sigma}, {hist.last('seconds'):.0f} s", flush=True)
        # a safe point: with the E step's partition, the run resumes exactly
        if state.checkpoint(it, final=last, step=it, hold_until=hold_until, last_pred=last_pred,
                            sigma=est.sigma, posterior=est.posterior.cpu(), labels=est.labels.cpu()):
            break
    nets.eval()
    return nets, hist


# ---------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------

class GANMM(ConfiguredEstimator):
    """Mixture of GANs trained by ε-EM, scikit-learn style.

    ``fit(X)`` on images (N, ...) in [0, 1] trains the autoencoder of the config, then
    GANMM on its standardized codes; ``fit_embedding(Z, decoder)`` starts from given
    codes (``decoder``, optional, maps codes back to images for :meth:`sample_images`).
    ``predict(X)`` encodes and classifies; ``labels_`` are the training data's clusters.
    """

    config_class = GANMMConfig

    def fit(self, X, y=None, y_eval=None, state: TrainState | None = None):
        cfg = self._cfg()
        cfg.validate()
        X = as_tensor(X, dtype=torch.float32, ndim=(2, 3, 4))  # flat rows or images
        check_n_clusters(self.n_clusters, len(X))
        dev = self._device()
        if cfg.variant == "raw":
            return self._fit_raw(X, cfg, dev, y_eval, state)
        # the shared autoencoder of this seed, trained once per machine (as gmm-ae's, DEC's
        # and DCAN's; a cache hit is the network a live training gives)
        ae, self.autoencoder_history_ = cached_autoencoder(X.reshape(len(X), -1), cfg.autoencoder(),
                                                           self.random_state, dev, self.verbose)
        self.autoencoder_ = ae
        return self.fit_embedding(encode(ae, X.reshape(len(X), -1)), ae.decoder, y_eval=y_eval,
                                  state=state)

    def _fit_raw(self, X, cfg, dev, y_eval, state):
        """The raw variant: GANMM on the images themselves (N, C, H, W) in [0, 1]."""
        if X.dim() != 4:
            raise ValueError(f"the raw variant needs images (N, C, H, W), got shape {tuple(X.shape)}")
        check_unit_range(X, "GANMM's raw variant (its generators end in a sigmoid)")
        y = None if y_eval is None else torch.as_tensor(np.asarray(y_eval))
        self.nets_, self.history_ = train_ganmm(X, cfg, self.random_state, dev, y, state,
                                                self.verbose)
        self.config_, self.n_features_in_ = cfg, int(np.prod(X.shape[1:]))
        self.autoencoder_ = self.decoder_ = None
        self.labels_ = self.nets_.posterior(X.to(dev)).argmax(1).cpu().numpy()
        return self

    def fit_embedding(self, Z, decoder: nn.Module | None = None, y_eval=None,
                      state: TrainState | None = None):
        cfg = self._cfg()
        if cfg.variant == "raw":
            raise ValueError("fit_embedding clusters codes; the raw variant clusters images: "
                             "use fit(X) with images (N, C, H, W)")
        Z = as_tensor(Z, dtype=torch.float32, ndim=(2,))
        check_n_clusters(self.n_clusters, len(Z))
        if decoder is not None:
            first = next((m for m in decoder.modules() if isinstance(m, nn.Linear)), None)
            if first is None or first.in_features != Z.shape[1]:
                raise ValueError(f"the decoder does not match the embedding: it takes "
                                 f"{getattr(first, 'in_features', '?')} inputs, the codes have "
                                 f"{Z.shape[1]} dimensions")
        Zs, self.mean_, self.std_ = standardize(Z)
        self.embedding_ = Z  # the codes clustered (before standardisation)
        y = None if y_eval is None else torch.as_tensor(np.asarray(y_eval))
        self.nets_, self.history_ = train_ganmm(Zs, cfg, self.random_state, self._device(), y, state,
                                                self.verbose)
        self.decoder_, self.config_, self.n_features_in_ = decoder, cfg, Z.shape[1]
        self.labels_ = self.nets_.posterior(Zs.to(self._device())).argmax(1).cpu().numpy()
        return self

    def predict_embedding(self, Z) -> np.ndarray:
        self._check_fitted("nets_")
        Z = as_tensor(Z, dtype=torch.float32, ndim=(2,))
        self._check_n_features(Z)
        dev = next(self.nets_.parameters()).device
        Zs = standardize(Z.to(dev), self.mean_.to(dev), self.std_.to(dev))[0]
        return self.nets_.posterior(Zs).argmax(1).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        self._check_fitted("nets_")
        X = as_tensor(X, dtype=torch.float32, ndim=(2, 3, 4))
        if self.config_.variant == "raw":
            if tuple(X.shape[1:]) != self.nets_.dim:
                raise ValueError(f"expected images of shape {self.nets_.dim}, got {tuple(X.shape[1:])}")
            dev = next(self.nets_.parameters()).device
            return self.nets_.posterior(X.to(dev)).argmax(1).cpu().numpy()
        self._check_fitted("autoencoder_")
        return self.predict_embedding(encode(self.autoencoder_, X.reshape(len(X), -1)))

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """n codes from each component, in the embedding's units: (K, n, d)."""
        self._check_fitted("nets_")
        dev = next(self.nets_.parameters()).device
        z = self.nets_.sample(n, seeded_generator(seed, dev))
        return z * self.std_.to(dev) + self.mean_.to(dev)

    @torch.no_grad()
    def sample_images(self, n: int, seed: int = 0) -> torch.Tensor:
        """n decoded samples from each component: (K, n, D) through the decoder."""
        if getattr(self, "decoder_", None) is None:
            raise ValueError("no decoder: fit(X) on images, or fit_embedding(Z, decoder)")
        codes = self.sample(n, seed)
        dev = next(self.decoder_.parameters()).device
        with torch.no_grad():
            return self.decoder_(codes.reshape(-1, codes.shape[-1]).to(dev)).view(
                codes.shape[0], n, -1).cpu()


# ---------------------------------------------------------------------------
# Runner entry
# ---------------------------------------------------------------------------

def _fit(data, cfg: GANMMConfig, ctx: RunContext) -> FitResult:
    from ..metrics import evaluate
    from .gmm import fit_mixture

    est = GANMM(cfg.n_clusters, cfg, ctx.seed, ctx.device, ctx.verbose)
    if cfg.variant == "raw":  # no autoencoder, no Gaussian mixture on 784 pixels
        est.fit(data.x, y_eval=data.y, state=ctx.state)
        # the checkpoint keeps the classifier, which assigns the clusters (int8 rows for its
        # large matrices); the 2K generators and critics would be ~100x larger
        state = {"classifier": compact_state(est.nets_.C, int8_min_numel=INT8_MIN_NUMEL)}
        return FitResult(est.labels_, state, est.history_.to_dict(), {})
    est.fit(data.flat(), y_eval=data.y, state=ctx.state)
    # the comparison the chapter makes: a Gaussian mixture on the same codes, same run
    gm = fit_mixture(est.embedding_.double(), cfg.n_clusters, covariance_type="full",
                     n_init=cfg.gmm_n_init, kmeans_start=cfg.gmm_kmeans_start,
                     random_state=ctx.seed, device=ctx.device)
    extra = {f"gmm_{k}": v for k, v in evaluate(data.y, gm.labels_).items()}
    # GANMM's own start (the initial partition), measured before its pre-training
    extra.update({f"start_{k}": est.history_.scalars[f"start_{k}"] for k in START_METRICS
                  if f"start_{k}" in est.history_.scalars})
    extra.update(cache_metrics(est.autoencoder_history_))
    # the encoder in half precision (as gmm-ae); the small GAN mixture in full precision
    state = {"encoder": export_encoder(est.autoencoder_),
             "ganmm": {k: v.detach().cpu() for k, v in est.nets_.state_dict().items()},
             "mean": est.mean_.cpu(), "std": est.std_.cpu()}
    hist = {**est.history_.to_dict(),
            "ae_loss/recon": est.autoencoder_history_.series.get("loss/recon", [])}
    return FitResult(est.labels_, state, hist, extra)


def _reload(ck, data, cfg: GANMMConfig, device) -> np.ndarray:
    if cfg.variant == "raw":
        C = ConvHead(tuple(data.x.shape[1:]), cfg.n_clusters, cfg.raw_hidden, cfg.raw_channels)
        load_compact_state(C, ck["classifier"])
        C = on_device(C, device)
        logits = batched(C, data.x.to(device), CONV_EVAL_BATCH, nets=(C,))
        return logits.argmax(1).cpu().numpy()
    nets = GANMMNets(cfg.n_clusters, cfg.latent_dim, cfg.z_dim, cfg.gan_hidden, cfg.gan_depth)
    nets.load_state_dict(ck["ganmm"])
    Z = codes_from_checkpoint(ck["encoder"], data.flat(), cfg, device)
    Zs = standardize(Z, ck["mean"].to(Z.device), ck["std"].to(Z.device))[0]
    return nets.to(device).posterior(Zs).argmax(1).cpu().numpy()


SPEC = MethodSpec(GANMMConfig, _fit, "GANMM: a mixture of K WGANs trained by ε-EM on autoencoder codes",
                  reload=_reload)
