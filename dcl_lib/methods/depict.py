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
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import nmi
from ..train import check_finite, compact_state, progress
from .base import ClusterEstimator, FitResult, MethodSpec, as_tensor, check_n_clusters, seed_from
from .kmeans import KMeans

__all__ = [
    "depict_target",
    "depict_objective",
    "DepictNet",
    "DepictConfig",
    "DEPICT",
    "SPEC",
]

TARGETS = ("sqrt", "dec")


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


def depict_objective(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """KL(Q || P) + KL(f || u) with f_k = mean_i q_ik and u uniform (a scalar).

    0 log 0 = 0 (``xlogy``), so one-hot targets are allowed.
    """
    N, K = q.shape
    kl_qp = (torch.special.xlogy(q, q) - torch.special.xlogy(q, p)).sum() / N
    f = q.mean(0)
    kl_fu = torch.special.xlogy(f, f * K).sum()
    return kl_qp + kl_fu


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
class DepictConfig:
    n_clusters: int = 10
    channels: int = 50                    # official MNIST settings
    dropout: tuple[float, float, float] = (0.1, 0.1, 0.0)  # official code
    hidden_weight: float = 0.1            # official `hlayer_loss_param`
    recon_weight: float = 1.0             # official `reconstruct_hyperparam`
    detach_targets: bool = False          # as the official code; detaching collapsed the codes (chapter)
    target: str = "dec"                   # the official code's p^2/f; "sqrt" = the paper's p/sqrt(f)
                                          # (measured: "sqrt" never sharpens P, see the chapter)
    lr: float = 1e-4                      # Adam; the official code's learning rate
    batch_size: int = 100                 # official code
    pretrain_epochs: int = 100            # official: up to 4000 with patience 100
    warmup_epochs: int = 50               # official: up to 1000, patience 5 on NMI
    warmup_patience: int = 5
    epochs: int = 100                     # main loop (official: up to 4000)
    stop_tol: float = 1e-7                # MSE between consecutive Q (official)
    kmeans_n_init: int = 40               # official MNIST-full setting

    @classmethod
    def for_profile(cls, profile: str) -> "DepictConfig":
        if profile == "full":
            return dataclasses.replace(cls(), batch_size=256)
        # quick: 32 channels and lr 1e-3 (with gradients through the clean hidden targets the
        # codes did not saturate at this rate); about 80 s on 10,000 images on 2 CPU cores
        return dataclasses.replace(cls(), channels=32, lr=1e-3, batch_size=128, pretrain_epochs=20,
                                   warmup_epochs=5, warmup_patience=2, epochs=12, kmeans_n_init=10)


def _batches(n: int, batch_size: int, g: torch.Generator, device) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=g).to(device)
    return [perm[s:s + batch_size] for s in range(0, n, batch_size)]


@torch.no_grad()
def clean_pass(net: DepictNet, X: torch.Tensor, batch_size: int = 2048
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean embeddings z (N, K) and soft assignments p (N, K) of every image."""
    net.eval()
    zs, ps = [], []
    for s in range(0, len(X), batch_size):
        z = net.encode(X[s:s + batch_size])[-1]
        zs.append(z)
        ps.append(torch.softmax(net.cluster_logits(z), 1))
    return torch.cat(zs), torch.cat(ps)


def _step(net, opt, x, cfg: DepictConfig, target: torch.Tensor | None) -> torch.Tensor:
    """One minibatch update; ``target`` is soft (B, K), hard (B,), or None (pure AE).

    Returns the detached (reconstruction, CE) as one tensor: no device sync per
    minibatch; :func:`_epoch_means` checks them for NaN/inf once per epoch."""
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
    return torch.stack([rec.detach(), ce.detach()])


def _epoch_means(out: list[torch.Tensor], phase: str, epoch: int) -> tuple[float, float]:
    """Mean (reconstruction, CE) over an epoch's minibatches; one sync, NaN/inf stop here."""
    rec, ce = torch.stack(out).double().mean(0).tolist()
    check_finite(rec + ce, f"{phase} (epoch mean)", epoch,
                 hint="lower the learning rate (tanh codes saturate at high rates) or check that "
                      "images are in [-1, 1]")
    return rec, ce


def fit_depict(X: torch.Tensor, cfg: DepictConfig, seed: int, device, y: torch.Tensor | None = None,
               verbose: bool = True) -> tuple[DepictNet, dict]:
    """All of DEPICT's phases on images X (N, C, H, W) in [-1, 1].

    ``y`` (optional) is used only to log ACC per epoch for the learning curves.
    Returns (network, history).
    """
    from ..metrics import cluster_acc

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    X = X.to(device, torch.float32)
    net = DepictNet(tuple(X.shape[1:]), cfg.n_clusters, cfg.channels, cfg.dropout).to(device)
    fused = {"fused": True} if torch.device(device).type == "cuda" else {}  # fewer launches per step
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, **fused)
    hist = {k: [] for k in ("phase", "recon", "ce", "q_change", "acc", "objective", "seconds")}
    t0 = time.perf_counter()

    def log(phase, rec, ce, q_change, p):
        hist["phase"].append(phase)
        hist["recon"].append(rec)
        hist["ce"].append(ce)
        hist["q_change"].append(q_change)
        hist["acc"].append(cluster_acc(y, p.argmax(1).cpu()) if y is not None else float("nan"))
        hist["objective"].append(float(depict_objective(depict_target(p, cfg.target), p)))
        hist["seconds"].append(time.perf_counter() - t0)

    # (1) pretraining: reconstruction only
    for ep in progress(range(cfg.pretrain_epochs), desc="DEPICT pretrain", disable=not verbose or None):
        out = [_step(net, opt, X[b], cfg, None) for b in _batches(len(X), cfg.batch_size, g, device)]
        rec, _ = _epoch_means(out, "reconstruction", ep + 1)
        log("pretrain", rec, float("nan"), float("nan"), clean_pass(net, X)[1])
    # (2) k-means++ on the clean embedding -> head initialised on the centroids
    z, _ = clean_pass(net, X)
    km = KMeans(cfg.n_clusters, n_init=cfg.kmeans_n_init, random_state=seed, device=device,
                dtype=torch.float32).fit(z)
    net.init_head(torch.as_tensor(km.cluster_centers_, device=device, dtype=torch.float32))
    init_labels = torch.as_tensor(km.labels_, device=device)
    hist["kmeans_acc"] = cluster_acc(y, km.labels_) if y is not None else float("nan")
    # (3) warm-up on the hard k-means labels, early stopping on NMI(pred, init labels)
    best, bad = -1.0, 0
    for ep in progress(range(cfg.warmup_epochs), desc="DEPICT warm-up", disable=not verbose or None):
        out = [_step(net, opt, X[b], cfg, init_labels[b]) for b in _batches(len(X), cfg.batch_size, g, device)]
        p = clean_pass(net, X)[1]
        log("warmup", *_epoch_means(out, "warm-up", ep + 1), float("nan"), p)
        score = nmi(init_labels.cpu(), p.argmax(1).cpu())
        best, bad = (score, 0) if score > best else (best, bad + 1)
        if bad >= cfg.warmup_patience:
            break
    # (4) main loop: targets per epoch, network per minibatch, stop when Q settles
    q = depict_target(clean_pass(net, X)[1], cfg.target)
    for ep in progress(range(cfg.epochs), desc="DEPICT", disable=not verbose or None):
        out = [_step(net, opt, X[b], cfg, q[b]) for b in _batches(len(X), cfg.batch_size, g, device)]
        p = clean_pass(net, X)[1]
        q_new = depict_target(p, cfg.target)
        change = float(((q_new - q) ** 2).mean())
        q = q_new
        log("cluster", *_epoch_means(out, "clustering", ep + 1), change, p)
        if change < cfg.stop_tol:
            break
    net.eval()
    return net, hist


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

    def fit(self, X, y=None, y_eval=None):
        """Train on images X; ``y`` is ignored, ``y_eval`` only logs ACC per epoch."""
        X = as_tensor(X, dtype=torch.float32, ndim=(4,))
        check_n_clusters(self.n_clusters, X.shape[0])
        if float(X.min()) < 0 or float(X.max()) > 1:
            raise ValueError("DEPICT expects images scaled to [0, 1]; got values in "
                             f"[{float(X.min()):.3g}, {float(X.max()):.3g}]")
        if min(X.shape[2:]) < 8:
            raise ValueError(f"images must be at least 8x8 for DEPICT's two stride-2 convolutions, "
                             f"got {tuple(X.shape[2:])}")
        device = self._device()
        self.net_, self.history_ = fit_depict(to_signed(X), self._cfg(), seed_from(self.random_state),
                                              device, y_eval, self.verbose)
        self.labels_ = clean_pass(self.net_, to_signed(X).to(device))[1].argmax(1).cpu().numpy()
        self.n_features_in_ = int(np.prod(X.shape[1:]))
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Clean-pathway soft assignments p (N, K)."""
        X = self._images_for(X, "net_")
        return clean_pass(self.net_, to_signed(X))[1].cpu().numpy()

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(1)

    def transform(self, X) -> np.ndarray:
        """The clean embedding z (N, K)."""
        X = self._images_for(X, "net_")
        return clean_pass(self.net_, to_signed(X))[0].cpu().numpy()


# ---------------------------------------------------------------------------
# Runner entry
# ---------------------------------------------------------------------------

def _fit(data, cfg: DepictConfig, seed: int, device) -> FitResult:
    est = DEPICT(cfg.n_clusters, cfg, random_state=seed, device=device, verbose=True)
    est.fit(data.x, y_eval=data.y)
    state = {"net": compact_state(est.net_)}
    h = est.history_
    extra = {"kmeans_init_acc": h["kmeans_acc"], "epochs_run": len(h["phase"])}
    hits = [t for t, a in zip(h["seconds"], h["acc"]) if a >= 0.965]
    extra["seconds_to_acc_0.965"] = hits[0] if hits else float("nan")
    return FitResult(est.labels_, state, h, extra)


SPEC = MethodSpec(DepictConfig, _fit, "DEPICT: conv autoencoder + relative-entropy clustering")
