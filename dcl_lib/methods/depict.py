"""DEPICT (Ghasedi Dizaji et al., ICCV 2017): a convolutional autoencoder
whose embedding feeds a softmax clustering layer, trained on its own
sharpened, frequency-balanced predictions.

Order: pure maths (targets, objective) -> modules (encoder/decoder with clean
and corrupted pathways) -> losses -> training phases -> estimator -> runner.

Objective (paper; DEPICT eq. 5-7 in our notation)::

    min  KL(Q || P) + KL(f || u),   f_k = (1/N) sum_i q_ik,  u_k = 1/K

whose minimiser in Q, for fixed P, is (approximately) the closed form
``q_ik ∝ p_ik / (sum_i' p_i'k)^(1/2)``; the network is then trained with the
cross-entropy -sum q log p~ of its *corrupted* pathway plus layer-wise
reconstruction losses.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig, retrain_requested
from ..metrics import nmi
from ..train import (History, LossWindow, TrainState, batched, compact_state, load_checkpoint,
                     load_compact_state, make_adam, minibatches, progress, seeded_generator)
from .base import (ClusterEstimator, FitResult, MethodSpec, RunContext, as_tensor, check_n_clusters,
                   check_unit_range, seed_from)
from .acpic import acpic
from .kmeans import KMeans

__all__ = [
    "depict_target",
    "depict_optimal_target",
    "depict_objective",
    "agglomerative_init",
    "acpic_init",
    "DepictNet",
    "DepictConfig",
    "cluster_pass",
    "update_network",
    "fit_depict",
    "DEPICT",
    "SPEC",
]

TARGETS = ("sqrt", "dec")
INITS = ("kmeans", "agglomerative", "acpic")


# ---------------------------------------------------------------------------
# Pure maths
# ---------------------------------------------------------------------------

def depict_target(p: torch.Tensor, kind: str = "sqrt") -> torch.Tensor:
    """The target distribution Q from the soft assignments P (N, K).

    ``sqrt`` (the paper): q_ik ∝ p_ik / (sum_i p_ik)^(1/2);
    ``dec`` (the official code, DEC's target): q_ik ∝ p_ik^2 / sum_i p_ik.
    Rows of the result sum to 1.
    """
    if kind not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {kind!r}")
    freq = p.sum(0, keepdim=True)  # (1, K): sum_i p_ik
    q = p / freq.sqrt() if kind == "sqrt" else p * p / freq
    return q / q.sum(1, keepdim=True)


def depict_optimal_target(p: torch.Tensor, tol: float = 1e-12, max_iter: int = 10_000,
                          damping: float = 0.5) -> torch.Tensor:
    """The exact minimiser of :func:`depict_objective` over Q for fixed P.

    The objective is strictly convex in Q (KL(Q || P) is, and f log(K f) is convex in f,
    which is linear in Q), so its stationary point is the unique minimum.  Stationarity
    with a multiplier per row gives q_ik ∝ p_ik / f_k with f_k = mean_i q_ik.  The plain
    fixed-point iteration f <- mean_i q, q <- rows of p / f normalised can oscillate: with
    every row of p equal to (0.7, 0.3) it alternates between p and the uniform rows for
    ever, while the minimiser is q ∝ sqrt(p).  So the update is damped in log space,
    log q <- (1 - damping) log q + damping (log p - log f), rows normalised.  Near the
    fixed point the plain step's eigenvalues lie in [-1, 0]; with the default damping 1/2
    they lie in [0, 1/2], so every deviation at least halves at each step, and one that
    the plain step reverses (eigenvalue -1) vanishes: the equal-rows case converges in
    one step.  ``damping=1`` is the plain iteration.  Stops when no entry of Q moves by more than ``tol``.
    """
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    log_p = torch.log(p)
    log_q = torch.log_softmax(log_p, 1)
    q = log_q.exp()
    for _ in range(max_iter):
        step = log_p - torch.log(q.mean(0, keepdim=True))
        log_q = torch.log_softmax((1 - damping) * log_q + damping * step, 1)
        new = log_q.exp()
        done = bool((new - q).abs().max() <= tol)
        q = new
        if done:
            return q
    raise RuntimeError(f"depict_optimal_target did not converge in {max_iter} iterations")


def depict_objective(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """KL(Q || P) + KL(f || u) with f_k = mean_i q_ik and u uniform (a scalar).

    0 log 0 = 0 (``xlogy``), so one-hot targets are allowed.
    """
    N, K = q.shape
    kl_qp = (torch.special.xlogy(q, q) - torch.special.xlogy(q, p)).sum() / N
    f = q.mean(0)
    kl_fu = torch.special.xlogy(f, f * K).sum()
    return kl_qp + kl_fu


def agglomerative_init(z: torch.Tensor, n_clusters: int, n_neighbors: int = 20
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """A partition of the codes z (N, d) by Ward linkage restricted to a k-NN graph, and
    its cluster means (K, d).

    Merging only neighbours lets clusters follow the data's manifold instead of the
    Euclidean balls of k-means.  The quick profile's start before AC-PIC
    (:func:`acpic_init`) was in the library; deterministic (no random restarts)."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.neighbors import kneighbors_graph

    n = z.shape[0]
    if not 0 < n_neighbors < n:
        raise ValueError(f"init_neighbors must be in [1, {n - 1}] for {n} points, got {n_neighbors}")
    zn = z.detach().cpu().double().numpy()
    graph = kneighbors_graph(zn, n_neighbors, include_self=False)
    labels = AgglomerativeClustering(n_clusters, linkage="ward", connectivity=graph).fit_predict(zn)
    return _with_means(torch.as_tensor(labels, device=z.device), z, n_clusters)


def acpic_init(z: torch.Tensor, n_clusters: int, n_neighbors: int = 20, a: float = 1.0,
               zeta: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """AC-PIC's partition of the codes z (N, d) (:func:`~dcl_lib.methods.acpic.acpic`, in
    float64) and its cluster means (K, d): the official code's start on its 10,000-image
    datasets."""
    labels = acpic(z.detach().cpu().double().numpy(), n_clusters, n_neighbors, a, zeta)
    return _with_means(torch.as_tensor(labels, device=z.device), z, n_clusters)


def _with_means(labels: torch.Tensor, z: torch.Tensor, n_clusters: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, the mean of z over each cluster (K, d))."""
    onehot = F.one_hot(labels, n_clusters).to(z.dtype)
    return labels, onehot.T @ z / onehot.sum(0)[:, None]


# ---------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------

def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


class DepictNet(nn.Module):
    """DEPICT's convolutional autoencoder with a softmax clustering head.

    MNIST settings of the official code: Conv(50, 4x4, s2, pad 0) -> LReLU(0.01)
    -> Conv(50, 5x5, s2, pad 2) -> LReLU -> Dense(K) tanh = z; head Dense(K -> K)
    softmax; decoder mirrors the encoder back to a tanh image in [-1, 1].
    Dropout before each encoder layer gives the corrupted pathway.
    """

    def __init__(self, image_shape: tuple[int, int, int], n_clusters: int, channels: int = 50,
                 dropout: tuple[float, float, float] = (0.1, 0.1, 0.0), negative_slope: float = 0.01):
        super().__init__()
        c, h, w = image_shape
        self.image_shape, self.dropout, self.slope = tuple(image_shape), tuple(dropout), negative_slope
        self.conv1 = nn.Conv2d(c, channels, 4, stride=2, padding=0)
        h1, w1 = _conv_out(h, 4, 2, 0), _conv_out(w, 4, 2, 0)
        self.conv2 = nn.Conv2d(channels, channels, 5, stride=2, padding=2)
        h2, w2 = _conv_out(h1, 5, 2, 2), _conv_out(w1, 5, 2, 2)
        self.shapes = [(c, h, w), (channels, h1, w1), (channels, h2, w2)]
        self.fc = nn.Linear(channels * h2 * w2, n_clusters)
        self.head = nn.Linear(n_clusters, n_clusters)  # the softmax clustering layer
        self.dec_fc = nn.Linear(n_clusters, channels * h2 * w2)
        self.deconv2 = nn.ConvTranspose2d(channels, channels, 5, stride=2, padding=2)
        self.deconv1 = nn.ConvTranspose2d(channels, c, 4, stride=2, padding=0)
        # Lasagne's defaults, which the official code uses: Glorot-uniform weights, zero biases
        for m in (self.conv1, self.conv2, self.fc, self.dec_fc, self.deconv2, self.deconv1):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def encode(self, x: torch.Tensor, corrupt: bool = False) -> list[torch.Tensor]:
        """Activations [x (or its corrupted copy), h1, h2, z] of one pathway."""
        drop = (lambda t, p: F.dropout(t, p, training=True)) if corrupt else (lambda t, p: t)
        x0 = drop(x, self.dropout[0])
        h1 = F.leaky_relu(self.conv1(x0), self.slope)  # (B, C, h1, w1)
        h2 = F.leaky_relu(self.conv2(drop(h1, self.dropout[1])), self.slope)  # (B, C, h2, w2)
        z = torch.tanh(self.fc(drop(h2, self.dropout[2]).flatten(1)))  # (B, K)
        return [x, h1, h2, z]

    def decode(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Reconstructions [x_hat, h1_hat, h2_hat] of the encoder's layers from z."""
        h2 = F.leaky_relu(self.dec_fc(z), self.slope).view(-1, *self.shapes[2])
        h1 = F.leaky_relu(self.deconv2(h2, output_size=self.shapes[1][1:]), self.slope)
        x = torch.tanh(self.deconv1(h1, output_size=self.shapes[0][1:]))
        return [x, h1, h2]

    def cluster_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)  # (B, K)

    @torch.no_grad()
    def init_head(self, centroids: torch.Tensor) -> None:
        """W = unit-normalised centroids (one row per cluster), b = 0 (official code)."""
        self.head.weight.copy_(centroids / centroids.norm(dim=1, keepdim=True).clamp_min(1e-12))
        self.head.bias.zero_()


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------

def reconstruction_loss(clean: list[torch.Tensor], recon: list[torch.Tensor],
                        hidden_weight: float = 0.1, detach_targets: bool = True) -> torch.Tensor:
    """sum_l w_l ||z^l - z_hat^l||^2 / |z^l|, averaged over the batch.

    w_0 = 1 for the input layer and ``hidden_weight`` for the hidden layers
    (the official code's ``hlayer_loss_param``).  Hidden targets come from
    the clean pathway; ``detach_targets`` stops gradients through them.
    """
    total = 0.0
    for l, (target, rec) in enumerate(zip(clean[:3], recon)):
        target = target.detach() if (detach_targets and l > 0) else target
        w = 1.0 if l == 0 else hidden_weight
        total = total + w * F.mse_loss(rec, target)  # mean over the |z^l| entries and the batch
    return total


# ---------------------------------------------------------------------------
# Training phases
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DepictConfig(MethodConfig):
    n_clusters: int = 10
    channels: int = 50                    # official MNIST settings
    dropout: tuple[float, float, float] = (0.1, 0.1, 0.0)  # official code
    hidden_weight: float = 0.1            # official `hlayer_loss_param`
    recon_weight: float = 1.0             # official `reconstruct_hyperparam`
    detach_targets: bool = False          # as the official code; detaching collapsed the codes (chapter)
    target: str = "dec"                   # the official code's p^2/f; "sqrt" = the paper's p/sqrt(f)
                                          # (compared in the chapter)
    lr: float = 1e-4                      # Adam; the official code's learning rate
    batch_size: int = 100                 # official code
    pretrain_epochs: int = 100            # official: up to 4000 with patience 100
    warmup_epochs: int = 50               # official: up to 1000, patience 5 on NMI
    warmup_patience: int = 5
    epochs: int = 100                     # main loop (official: up to 4000)
    stop_tol: float = 1e-7                # MSE between consecutive Q (official)
    kmeans_n_init: int = 40               # official MNIST-full setting
    init: str = "kmeans"                  # the partition that initialises the head: k-means++
                                          # (official, MNIST-full), "acpic" (official,
                                          # MNIST-test and USPS: dcl_lib.methods.acpic) or
                                          # "agglomerative" (Ward linkage on the k-NN graph,
                                          # the stand-in of earlier runs)
    init_neighbors: int = 20              # k of that graph (AC-PIC's K = 20 in the official code)
    acpic_a: float = 1.0                  # AC-PIC's scale factor a (official: 1; 100 for USPS
                                          # in a comment of its MATLAB wrapper)
    acpic_z: float = 0.01                 # AC-PIC's z in (I - zP) (official: 0.01)
    holdout: float = 0.0                  # the fraction of the images held out for the two
                                          # early stops (official: 10 %, stratified by the true
                                          # labels; here a seeded random split, label-free).
                                          # > 0: pretraining and warm-up train on the rest, the
                                          # warm-up stops on the held-out NMI against the start
                                          # and restores its best weights (as the official code)
    pretrain_patience: int = 0            # > 0: pretraining stops once the held-out clean
                                          # reconstruction loss has not improved for more than
                                          # this many epochs and restores the best weights
                                          # (official: 100, at most 4000 epochs); 0: it runs
                                          # its pretrain_epochs and keeps the last weights
    fresh_optimizer: bool = False         # a new Adam for each phase (official) instead of
                                          # one Adam throughout
    pretrained: str | None = None         # a runner export of the pretrained network ("{data}"
                                          # = dataset-split, e.g. mnist-test; "{seed}" = the
                                          # run seed): replaces pretraining unless
                                          # DCL_RETRAIN=1 (see pretrained_path)

    profiles = {
        # quick: 32 channels and lr 1e-3 (with gradients through the clean hidden targets
        # the codes did not saturate at this rate) on 10,000 images, 2 CPU cores; the
        # network pretrained for 100 epochs is a committed export (PRETRAIN_COMMAND makes
        # it, DCL_RETRAIN=1 pretrains live), the clustering phases run live: 3 warm-up and
        # 6 main-loop epochs, inside the chapter's few minutes on a 2-core CPU (the lesson
        # prints what they reach; its committed runs: results/depict/mnist-*-quick-*.json)
        # 10,000 images: initialised as the official code does its 10,000-image MNIST-test
        # (AC-PIC), not as MNIST-full (k-means)
        "quick": {"channels": 32, "lr": 1e-3, "batch_size": 128, "pretrain_epochs": 100,
                  "warmup_epochs": 3, "warmup_patience": 2, "epochs": 6, "kmeans_n_init": 10,
                  "init": "acpic",
                  "pretrained": "results/depict/{data}-quick-seed{seed}-pretrained.pt"},
        "full": {"batch_size": 256},
        # the official code's schedule on its 10,000-image datasets (MNIST-test, USPS): 50
        # channels, Adam 1e-4 at batch 100; pretraining up to 4000 epochs to the held-out
        # early stop; the AC-PIC start; warm-up up to 1000 epochs, stopped when the held-out
        # NMI has not risen for 6 epochs (the code's `last_update > 5`); the main loop up to
        # 4000 epochs, to the targets' tolerance; a fresh Adam per phase
        "paper": {"pretrain_epochs": 4000, "pretrain_patience": 100, "holdout": 0.1,
                  "warmup_epochs": 1000, "warmup_patience": 6, "epochs": 4000,
                  "init": "acpic", "fresh_optimizer": True},
    }

    def validate(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not 0.0 <= self.holdout < 0.5:
            raise ValueError(f"holdout must be in [0, 0.5), got {self.holdout!r}")
        if self.pretrain_patience < 0:
            raise ValueError(f"pretrain_patience must be >= 0, got {self.pretrain_patience!r}")
        if self.pretrain_patience and not self.holdout:
            raise ValueError("pretrain_patience needs held-out images to stop on: set holdout > 0")


def cluster_pass(net: DepictNet, X: torch.Tensor, batch_size: int = 2048
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean embeddings z (N, K) and soft assignments p (N, K) of every image (no grad)."""
    def f(x):
        z = net.encode(x)[-1]
        return z, torch.softmax(net.cluster_logits(z), 1)
    return batched(f, X, batch_size, nets=(net,))


def update_network(net: DepictNet, opt: torch.optim.Optimizer, x: torch.Tensor, cfg: DepictConfig,
                   target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One minibatch step of DEPICT's network; ``target`` is soft (B, K), hard (B,) or
    None (pretraining: reconstruction only).  Returns the detached (reconstruction, CE).

    minimise  -(1/B) sum_i sum_k q_ik log p~_ik  +  recon_weight * sum_l w_l ||z^l - z_hat^l||^2
    with p~ the *corrupted* pathway's softmax and z_hat decoded from the corrupted code."""
    net.train()
    clean = net.encode(x) if cfg.hidden_weight > 0 else [x]
    noisy = net.encode(x, corrupt=True)
    recon = net.decode(noisy[-1])
    rec = reconstruction_loss(clean, recon, cfg.hidden_weight, cfg.detach_targets)
    loss = cfg.recon_weight * rec
    ce = torch.zeros((), device=x.device)
    if target is not None:
        logp = torch.log_softmax(net.cluster_logits(noisy[-1]), 1)
        ce = F.nll_loss(logp, target) if target.dim() == 1 else -(target * logp).sum(1).mean()
        loss = loss + ce
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return rec.detach(), ce.detach()


def heldout_reconstruction(net: DepictNet, X: torch.Tensor, cfg: DepictConfig,
                           batch_size: int = 1000) -> float:
    """The clean pathway's reconstruction loss on images X (no dropout, no gradient): the
    quantity the official pretraining stops on, averaged over the images."""
    net.eval()
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(X), batch_size):
            clean = net.encode(X[s:s + batch_size])
            rec = reconstruction_loss(clean, net.decode(clean[-1]), cfg.hidden_weight)
            total += float(rec) * len(clean[0])
    return total / len(X)


def _weights(net: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the network's weights, to restore the best ones after an early stop."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, held-out rows) of ``n`` images: a random ``fraction`` held out, drawn
    from the seed alone (the same split for pretraining and warm-up, and on resume)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_007 + seed))
    n_out = int(round(fraction * n))
    return perm[n_out:].sort().values, perm[:n_out].sort().values


_ROOT = Path(__file__).resolve().parents[2]
PRETRAIN_COMMAND = ("python -m dcl_lib run depict --dataset {dataset} --split {split} --profile quick "
                    "--seed {seed} --set pretrained=None --set warmup_epochs=0 "
                    "--set epochs=0 --tag pretrained")


def pretrained_path(cfg: DepictConfig, seed: int, data: str = "mnist-train") -> Path | None:
    """The pretrained network to start from, or None (pretrain live).

    ``cfg.pretrained`` names a runner export (relative to the repository), with ``{data}``
    the images' ``dataset-split`` (``mnist-train``, ``mnist-test``, ``usps-all``) and
    ``{seed}`` the run seed; ``$DCL_RETRAIN=1`` ignores it and pretrains live.  A missing
    file is an error that says how to make it.
    """
    if cfg.pretrained is None or retrain_requested():
        return None
    dataset, _, split = data.rpartition("-")
    if not dataset or not split:
        raise ValueError(f"data must be 'dataset-split' (e.g. 'mnist-test'), got {data!r}")
    path = Path(cfg.pretrained.format(seed=seed, data=data))
    path = path if path.is_absolute() else _ROOT / path
    if not path.exists():
        raise FileNotFoundError(
            f"the pretrained DEPICT network {path} is missing: make it with\n  "
            f"{PRETRAIN_COMMAND.format(seed=seed, dataset=dataset, split=split)}\n"
            f"or set DCL_RETRAIN=1 to pretrain live")
    return path


_HINT = "lower the learning rate (tanh codes saturate at high rates) or check that images are in [-1, 1]"


def fit_depict(X: torch.Tensor, cfg: DepictConfig, seed: int, device, y: torch.Tensor | None = None,
               state: TrainState | None = None, verbose: bool = True, data: str = "mnist-train"
               ) -> tuple[DepictNet, History]:
    """All of DEPICT's phases on images X (N, C, H, W) in [-1, 1].

    (1) pretraining on reconstruction (with ``pretrain_patience``: to the held-out early
    stop, best weights restored); (2) a partition of the clean embedding (k-means, AC-PIC
    or Ward) initialises the head on its cluster means; (3) warm-up on that partition's
    hard labels, stopped on NMI (with ``holdout``: on the held-out images, best weights
    restored); (4) the main loop: targets Q once per epoch from the clean pathway, the
    network per minibatch, until Q changes by less than ``stop_tol``.  With ``holdout``,
    phases (1) and (3) train on the other images; ``fresh_optimizer`` resets Adam's
    moments at each phase.
    ``y`` (optional) only logs ACC per epoch; ``state`` saves/resumes the run at epoch
    boundaries; ``data`` (dataset-split) names the pretrained export, if the config has one
    (:func:`pretrained_path`).  Returns (network, history).
    """
    cfg.validate()
    device = torch.device(device)
    state = state or TrainState()
    g = seeded_generator(seed, device)
    torch.manual_seed(seed)
    X = X.to(device, torch.float32)
    net = DepictNet(tuple(X.shape[1:]), cfg.n_clusters, cfg.channels, cfg.dropout).to(device)
    opt = make_adam(net.parameters(), cfg.lr, device)
    hist = History(y)
    state.attach({"net": net}, {"adam": opt}, {"batches": g}, hist)
    prog = state.restore()  # {} for a fresh run
    phase, done, step = prog.get("phase", "pretrain"), prog.get("epoch", 0), prog.get("step", 0)
    source = pretrained_path(cfg, seed, data)
    if source is not None and phase == "pretrain":  # (1) replaced by the committed network
        try:
            load_compact_state(net, load_checkpoint(source)["net"])
        except (RuntimeError, KeyError) as exc:
            raise ValueError(
                f"the pretrained export {source} does not fit this network ({str(exc)[:200]}); "
                f"it was made for other images or another network: set pretrained=None (or "
                f"DCL_RETRAIN=1) to pretrain on these data") from exc
        done = cfg.pretrain_epochs
        hist.scalars["pretrained_from"] = str(source.relative_to(_ROOT) if source.is_relative_to(_ROOT)
                                              else source)

    # the held-out images of the official early stops (none: every phase sees all images)
    rows, held = holdout_split(len(X), cfg.holdout, seed) if cfg.holdout else (None, None)
    if held is not None:
        rows, held = rows.to(device), held.to(device)

    def run_epoch(target: torch.Tensor | None, name: str, on=None) -> dict[str, float]:
        """One pass over the images (``on``: only these rows), one step per minibatch."""
        window = LossWindow(unit="epoch")
        for b in minibatches(len(X) if on is None else len(on), cfg.batch_size, g):
            b = b if on is None else on[b]
            rec, ce = update_network(net, opt, X[b], cfg, None if target is None else target[b])
            window.add(step, recon=rec, ce=ce)
        return window.means(step, hint=f"{name}: {_HINT}")

    def new_phase() -> None:
        """The official code builds a new Adam for each phase: its moments start at zero."""
        if cfg.fresh_optimizer:
            opt.state.clear()

    def log(name: str, losses: dict[str, float], p: torch.Tensor, q_change: float = float("nan"),
            heldout_recon: float = float("nan")):
        hist.log(step, p.argmax(1), losses, phase=name, q_change=q_change,
                 heldout_recon=heldout_recon,
                 objective=float(depict_objective(depict_target(p, cfg.target), p)))

    # (1) pretraining: reconstruction only; with a patience, stopped on the held-out clean
    # reconstruction loss and the best weights restored (the official early stop)
    if phase == "pretrain":
        best_rec, bad = prog.get("best_rec", float("inf")), prog.get("bad", 0)
        best_net = prog.get("best_net")
        for ep in progress(range(done + 1, cfg.pretrain_epochs + 1), desc="DEPICT pretrain",
                           verbose=verbose):
            if cfg.pretrain_patience and bad > cfg.pretrain_patience:
                break
            step += 1
            losses = run_epoch(None, "pretraining", rows)
            held_rec = float("nan")
            if held is not None:
                held_rec = heldout_reconstruction(net, X[held], cfg)
                if held_rec < best_rec:
                    best_rec, bad = held_rec, 0
                    best_net = _weights(net)
                else:
                    bad += 1
            log("pretrain", losses, cluster_pass(net, X)[1], heldout_recon=held_rec)
            if state.checkpoint(step, phase="pretrain", epoch=ep, step=step, best_rec=best_rec,
                                bad=bad, best_net=best_net):
                return net.eval(), hist
        if cfg.pretrain_patience and best_net is not None:
            net.load_state_dict(best_net)
            hist.scalars["pretrain_best_heldout_recon"] = best_rec
        hist.scalars["pretrain_epochs_run"] = hist.series.get("phase", []).count("pretrain")
        # (2) the initial partition of the clean embedding -> head on its cluster means
        # (k-means is also the reference every init is compared with: always computed)
        z = cluster_pass(net, X)[0]
        km = KMeans(cfg.n_clusters, n_init=cfg.kmeans_n_init, random_state=seed, device=device,
                    dtype=torch.float32).fit(z)
        hist.scalars["kmeans_acc"] = hist.acc(km.labels_)
        if cfg.init == "agglomerative":
            init_labels, centres = agglomerative_init(z, cfg.n_clusters, cfg.init_neighbors)
        elif cfg.init == "acpic":  # the official code's start on its 10,000-image datasets
            init_labels, centres = acpic_init(z, cfg.n_clusters, cfg.init_neighbors,
                                              cfg.acpic_a, cfg.acpic_z)
        else:
            init_labels = torch.as_tensor(km.labels_, device=device)
            centres = torch.as_tensor(km.cluster_centers_, device=device, dtype=torch.float32)
        net.init_head(centres)
        hist.scalars["init_acc"] = hist.acc(init_labels.cpu().numpy())
        phase, done, best, bad, best_net = "warmup", 0, -1.0, 0, None
        new_phase()
        if held is not None:  # the official warm-up measures the start first and keeps it
            best = nmi(init_labels[held].cpu(), cluster_pass(net, X[held])[1].argmax(1).cpu())
            best_net = _weights(net)
    else:
        init_labels, best, bad = prog["init_labels"], prog["best"], prog["bad"]
        best_net = prog.get("best_net")

    def warmup_score(p: torch.Tensor) -> float:
        """NMI between the predictions and the start (on the held-out images if any)."""
        on = slice(None) if held is None else held
        return nmi(init_labels[on].cpu(), p[on].argmax(1).cpu())

    # (3) warm-up on the start's hard labels, early stopping on NMI(pred, start labels)
    if phase == "warmup":
        for ep in progress(range(done + 1, cfg.warmup_epochs + 1), desc="DEPICT warm-up",
                           verbose=verbose):
            if bad >= cfg.warmup_patience:
                break
            step += 1
            losses = run_epoch(init_labels, "warm-up", rows)
            p = cluster_pass(net, X)[1]
            log("warmup", losses, p)
            score = warmup_score(p)
            if score > best:
                best, bad = score, 0
                if held is not None:
                    best_net = _weights(net)
            else:
                bad += 1
            if state.checkpoint(step, phase="warmup", epoch=ep, step=step, init_labels=init_labels,
                                best=best, bad=bad, best_net=best_net):
                return net.eval(), hist
        if held is not None and best_net is not None:
            net.load_state_dict(best_net)
        phase, done, change = "cluster", 0, float("inf")
        new_phase()
        q = depict_target(cluster_pass(net, X)[1], cfg.target)
    else:
        q, change = prog["q"], prog["change"]
    # (4) main loop: targets per epoch, network per minibatch, stop when Q settles
    for ep in progress(range(done + 1, cfg.epochs + 1), desc="DEPICT", verbose=verbose):
        if change < cfg.stop_tol:
            break
        step += 1
        losses = run_epoch(q, "clustering")
        p = cluster_pass(net, X)[1]
        q_new = depict_target(p, cfg.target)
        change = float(((q_new - q) ** 2).mean())
        q = q_new
        log("cluster", losses, p, change)
        if state.checkpoint(step, final=ep == cfg.epochs or change < cfg.stop_tol, phase="cluster", epoch=ep, step=step,
                            q=q, change=change, init_labels=init_labels, best=best, bad=bad):
            break
    return net.eval(), hist


# ---------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------

def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> [-1, 1], the official scaling (x - 127.5) / 127.5."""
    return x * 2.0 - 1.0


class DEPICT(ClusterEstimator):
    """DEPICT with scikit-learn's contract.

    ``fit(X)`` takes images (N, C, H, W) in [0, 1]; ``labels_`` is the argmax
    of the clean pathway's softmax.  ``config`` is a :class:`DepictConfig`
    (default: the quick profile).
    """

    def __init__(self, n_clusters: int = 10, config: DepictConfig | None = None, random_state=None,
                 device=None, verbose: bool = False):
        self.n_clusters = n_clusters
        self.config = config
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _cfg(self) -> DepictConfig:
        cfg = self.config or DepictConfig.for_profile("quick")
        return dataclasses.replace(cfg, n_clusters=self.n_clusters)

    def fit(self, X, y=None, y_eval=None, state: TrainState | None = None,
            data: str = "mnist-train"):
        """Train on images X; ``y`` is ignored, ``y_eval`` only logs ACC per epoch,
        ``state`` saves/resumes the training (the runner's ``--resume``), ``data`` (the
        images' dataset-split) names the config's pretrained export, if it has one."""
        X = as_tensor(X, dtype=torch.float32, ndim=(4,))
        check_n_clusters(self.n_clusters, X.shape[0])
        check_unit_range(X, "DEPICT")
        if min(X.shape[2:]) < 8:
            raise ValueError(f"images must be at least 8x8 for DEPICT's two stride-2 convolutions, "
                             f"got {tuple(X.shape[2:])}")
        device = self._device()
        self.net_, self.history_ = fit_depict(to_signed(X), self._cfg(), seed_from(self.random_state),
                                              device, y_eval, state, self.verbose, data)
        self.labels_ = cluster_pass(self.net_, to_signed(X).to(device))[1].argmax(1).cpu().numpy()
        self.n_features_in_ = int(np.prod(X.shape[1:]))
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Clean-pathway soft assignments p (N, K)."""
        X = self._images_for(X, "net_")
        return cluster_pass(self.net_, to_signed(X))[1].cpu().numpy()

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(1)

    def transform(self, X) -> np.ndarray:
        """The clean embedding z (N, K)."""
        X = self._images_for(X, "net_")
        return cluster_pass(self.net_, to_signed(X))[0].cpu().numpy()


# ---------------------------------------------------------------------------
# Runner entry
# ---------------------------------------------------------------------------

def _fit(data, cfg: DepictConfig, ctx: RunContext) -> FitResult:
    est = DEPICT(cfg.n_clusters, cfg, random_state=ctx.seed, device=ctx.device, verbose=ctx.verbose)
    est.fit(data.x, y_eval=data.y, state=ctx.state, data=f"{data.name}-{data.split}")
    h = est.history_
    extra = {"kmeans_init_acc": h.scalars.get("kmeans_acc", float("nan")),
             "init_acc": h.scalars.get("init_acc", float("nan")), "epochs_run": len(h["step"])}
    return FitResult(est.labels_, {"net": compact_state(est.net_)}, h, extra)


def _reload(ck, data, cfg: DepictConfig, device) -> np.ndarray:
    from ..train import load_compact_state

    net = DepictNet(tuple(data.x.shape[1:]), cfg.n_clusters, cfg.channels, cfg.dropout)
    load_compact_state(net, ck["net"])
    return cluster_pass(net.to(device), to_signed(data.x).to(device))[1].argmax(1).cpu().numpy()


SPEC = MethodSpec(DepictConfig, _fit, "DEPICT: conv autoencoder + relative-entropy clustering",
                  target_acc=0.965, reload=_reload)  # the paper's MNIST ACC (method card 4.5)
