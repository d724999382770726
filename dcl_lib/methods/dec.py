"""DEC (Xie, Girshick and Farhadi, ICML 2016): deep embedded clustering.

The shared autoencoder's encoder f gives codes z_i = f(x_i); k-means on them gives the
initial centres mu_j.  A cluster layer then assigns softly with a Student-t kernel

    q_ij = (1 + ||z_i - mu_j||^2 / alpha)^(-(alpha + 1) / 2) / sum_j' (same),

and the encoder and the centres are trained to minimise KL(P || Q) towards the sharpened,
re-balanced target

    p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j'),   f_j = sum_i q_ij,

recomputed on all the data every ``update_interval`` minibatch steps and held fixed in
between; the loop stops when fewer than ``tol`` of the points changed cluster between two
such updates.  The defaults follow the paper and DEC-keras (read for facts): alpha = 1,
SGD with learning rate 0.01 and momentum 0.9, batches of 256, an update every 140 steps
on MNIST, tol = 0.1 %, at most 20,000 steps.

Order: config -> the maths (soft assignment, target, loss) -> the step -> the loop ->
estimator -> runner entry.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..train import History, LossWindow, TrainState, batched, progress, seeded_generator
from .autoencoder import AutoencoderConfig, cache_metrics, cached_autoencoder, encode
from .base import ConfiguredEstimator, FitResult, MethodSpec, RunContext, as_tensor, check_n_clusters
from .kmeans import KMeans

__all__ = ["DECConfig", "soft_assign", "target_distribution", "dec_loss", "ClusterLayer",
           "update_dec", "assignments", "train_dec", "DEC", "SPEC"]


@dataclass(frozen=True)
class DECConfig(AutoencoderConfig):
    """Every field of the shared autoencoder, then DEC's own."""

    n_clusters: int = 10
    alpha: float = 1.0            # the Student-t's degrees of freedom (paper: 1)
    dec_lr: float = 0.01          # SGD (DEC-keras)
    dec_momentum: float = 0.9     # DEC-keras
    dec_batch: int = 256          # paper, DEC-keras
    update_interval: int = 140    # steps between target updates (DEC-keras, MNIST)
    tol: float = 0.001            # stop when fewer points than this changed cluster
    max_steps: int = 20000        # DEC-keras' maxiter
    kmeans_n_init: int = 20       # the initial centres (paper: 20 restarts)

    profiles = {"quick": {**AutoencoderConfig.profiles["quick"], "max_steps": 2000},
                "full": dict(AutoencoderConfig.profiles["full"])}


# ---------------------------------------------------------------------------
# The maths
# ---------------------------------------------------------------------------

def soft_assign(z: torch.Tensor, mu: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """q_ij of the Student-t kernel: z (N, d), mu (K, d) -> (N, K), rows summing to 1."""
    d2 = torch.cdist(z, mu) ** 2  # (N, K)
    logits = -(alpha + 1) / 2 * torch.log1p(d2 / alpha)
    return torch.softmax(logits, 1)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j'), f_j = sum_i q_ij (DEC's Eq. 3)."""
    w = q * q / q.sum(0, keepdim=True)
    return w / w.sum(1, keepdim=True)


def dec_loss(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) = sum_i sum_j p_ij log(p_ij / q_ij), averaged over the rows."""
    return (p * (torch.log(p.clamp_min(1e-30)) - torch.log(q.clamp_min(1e-30)))).sum(1).mean()


# ---------------------------------------------------------------------------
# The cluster layer
# ---------------------------------------------------------------------------

class ClusterLayer(nn.Module):
    """The centres mu (K, d) as parameters, and q = :func:`soft_assign` of a batch of codes."""

    def __init__(self, centres: torch.Tensor, alpha: float = 1.0):
        super().__init__()
        self.mu = nn.Parameter(torch.as_tensor(centres, dtype=torch.float32).clone())
        self.alpha = float(alpha)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return soft_assign(z, self.mu, self.alpha)  # (B, K)


# ---------------------------------------------------------------------------
# The step and the loop
# ---------------------------------------------------------------------------

def update_dec(encoder: nn.Module, layer: ClusterLayer, opt: torch.optim.Optimizer,
               x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """One step on the encoder and the centres: minimise KL(P || Q) on a batch, with the
    target rows ``p`` (B, K) held fixed (computed at the last update).  Returns the
    detached loss."""
    q = layer(encoder(x.flatten(1)))  # (B, K)
    loss = dec_loss(q, p)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


@torch.no_grad()
def assignments(encoder: nn.Module, layer: ClusterLayer, X: torch.Tensor) -> torch.Tensor:
    """q for every row of X, (N, K) (the encoder and layer in their current mode)."""
    return batched(lambda x: layer(encoder(x.flatten(1))), X, 8192, nets=(encoder, layer))


def train_dec(X: torch.Tensor, ae, cfg: DECConfig, seed: int = 0, device="cpu",
              y: torch.Tensor | None = None, state: TrainState | None = None,
              verbose: bool = True) -> tuple[nn.Module, ClusterLayer, History]:
    """DEC's clustering phase on images X (N, D) in [0, 1] from a pretrained
    :class:`~dcl_lib.nets.MLPAutoencoder` ``ae`` (its encoder is copied, not changed).

    Centres from k-means on the codes; then SGD on KL(P || Q), the target P recomputed on
    all the data every ``update_interval`` steps.  Stops after ``max_steps`` steps or when
    fewer than ``tol`` of the points changed cluster between two updates.  ``y`` only logs
    ACC.  Returns (encoder, cluster layer, history); the clusters are argmax_j q_ij."""
    device = torch.device(device)
    X = X.reshape(len(X), -1).to(device, torch.float32)
    N, K = len(X), cfg.n_clusters
    check_n_clusters(K, N)
    state = state or TrainState()
    g = seeded_generator(seed, device)
    torch.manual_seed(seed)
    encoder = copy.deepcopy(ae.encoder).to(device).train()
    Z0 = encode(ae.to(device), X).double()
    km = KMeans(K, n_init=cfg.kmeans_n_init, random_state=seed, device=device).fit(Z0)
    layer = ClusterLayer(torch.as_tensor(km.cluster_centers_), cfg.alpha).to(device)
    opt = torch.optim.SGD(list(encoder.parameters()) + list(layer.parameters()), lr=cfg.dec_lr,
                          momentum=cfg.dec_momentum)
    hist = History(y)
    hist.scalars["kmeans_acc"] = hist.acc(km.labels_)
    state.attach({"encoder": encoder, "layer": layer}, {"sgd": opt}, {"batches": g}, hist)
    saved = state.restore()
    step = saved.get("step", 0)
    previous = saved["labels"].to(device) if "labels" in saved else None
    order, pos = (saved["order"].to(device), saved["pos"]) if saved.get("order") is not None \
        else (None, 0)
    resumed = bool(saved)  # at an update that was logged and checked before the save
    window = LossWindow(unit="step")
    bar = progress(total=cfg.max_steps, initial=step, desc="DEC", verbose=verbose)
    while True:
        if step % cfg.update_interval == 0:  # the target from the current network, all data
            q = assignments(encoder, layer, X)
            p = target_distribution(q)
            if not resumed:
                labels = q.argmax(1)
                changed = None if previous is None else float((labels != previous).float().mean())
                losses = window.means(step, hint="lower dec_lr") if step else {}
                hist.log(step, labels.cpu(), losses, changed=changed)
                previous = labels
                converged = changed is not None and changed < cfg.tol
                if converged or step >= cfg.max_steps:
                    hist.scalars["stopped_by"] = "tol" if converged else "max_steps"
                    break
                if state.checkpoint(step, step=step, labels=labels.cpu(), pos=pos,
                                    order=None if order is None else order.cpu()):
                    break  # the time budget: saved, to be resumed
            resumed = False
        if order is None or pos >= N:  # a new pass over the data, in a new order
            order, pos = torch.randperm(N, generator=g, device=g.device), 0
        b = order[pos:pos + cfg.dec_batch]
        pos += len(b)
        window.add(step + 1, weight=len(b), kl=update_dec(encoder, layer, opt, X[b], p[b]))
        step += 1
        bar.update(1)
    bar.close()
    encoder.eval()
    return encoder, layer, hist


# ---------------------------------------------------------------------------
# Estimator and runner entry
# ---------------------------------------------------------------------------

class DEC(ConfiguredEstimator):
    """Deep embedded clustering, scikit-learn style.  ``fit(X)`` on images in [0, 1] takes
    the shared autoencoder of the config (:func:`cached_autoencoder`: trained once per
    seed and machine) or ``autoencoder=``; ``labels_`` = argmax q on the final network."""

    config_class = DECConfig

    def fit(self, X, y=None, y_eval=None, autoencoder=None, state: TrainState | None = None):
        cfg = self._cfg()
        X = as_tensor(X, dtype=torch.float32, ndim=(2, 3, 4)).reshape(len(X), -1)
        check_n_clusters(self.n_clusters, len(X))
        dev = self._device()
        if autoencoder is None:
            autoencoder, self.autoencoder_history_ = cached_autoencoder(
                X, cfg.autoencoder(), self.random_state, dev, verbose=self.verbose)
        y = None if y_eval is None else torch.as_tensor(np.asarray(y_eval))
        self.encoder_, self.layer_, self.history_ = train_dec(
            X, autoencoder, cfg, self.random_state, dev, y, state, self.verbose)
        self.config_, self.n_features_in_ = cfg, X.shape[1]
        self.labels_ = self.predict(X)
        return self

    def predict_proba(self, X) -> np.ndarray:
        self._check_fitted("encoder_")
        X = as_tensor(X, dtype=torch.float32, ndim=(2, 3, 4)).reshape(len(X), -1)
        self._check_n_features(X)
        dev = self.layer_.mu.device
        return assignments(self.encoder_, self.layer_, X.to(dev)).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(1)


def _fit(data, cfg: DECConfig, ctx: RunContext) -> FitResult:
    X = data.flat()
    ae, ae_hist = cached_autoencoder(X, cfg.autoencoder(), ctx.seed, ctx.device, ctx.verbose)
    est = DEC(cfg.n_clusters, cfg, ctx.seed, ctx.device, ctx.verbose)
    est.fit(X, y_eval=data.y, autoencoder=ae, state=ctx.state)
    state = {"encoder": _export(est.encoder_), "centres": est.layer_.mu.detach().cpu()}
    # the shared autoencoder's training seconds (a cache hit's wall time leaves them out)
    extra = {"kmeans_acc": est.history_.scalars["kmeans_acc"], **cache_metrics(ae_hist)}
    return FitResult(est.labels_, state, est.history_, extra)


def _export(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The fine-tuned encoder as the shared autoencoder's is exported (12-bit matrices)."""
    from ..train import INT8_MIN_NUMEL, compact_state

    return compact_state(encoder, int12_min_numel=INT8_MIN_NUMEL)


def _reload(ck, data, cfg: DECConfig, device) -> np.ndarray:
    """Codes from the saved encoder, then argmax of the Student-t assignment to the saved
    centres."""
    from .autoencoder import codes_from_checkpoint

    Z = codes_from_checkpoint(ck["encoder"], data.flat(), cfg, device)
    return soft_assign(Z.float(), ck["centres"].to(Z.device).float(), cfg.alpha).argmax(1).cpu().numpy()


SPEC = MethodSpec(DECConfig, _fit, "DEC: Student-t soft assignments sharpened towards p^2/f",
                  target_acc=0.8435, reload=_reload)
