"""A dense autoencoder trained on reconstruction: the embedding that the GMM
chapter clusters and later chapters (GANMM, DCAN) reuse.

Order: config -> the training step -> the loop -> batched encoding.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .._io import atomic_path, user_cache
from ..config import MethodConfig, retrain_requested
from ..nets import MLPAutoencoder
from .base import FitResult, MethodSpec, RunContext
from ..train import (History, LossWindow, TrainState, batched, cosine_lr, make_adam, minibatches, progress,
                     seeded_generator)

__all__ = ["AutoencoderConfig", "build_autoencoder", "update_autoencoder", "train_autoencoder",
           "cached_autoencoder", "cache_metrics", "reconstruction_loss", "model_cache_dir", "encode",
           "codes_from_checkpoint", "export_encoder", "AEKMeansConfig", "SPEC"]


# DEC-keras' training (XifengGuo/DEC-keras, read for facts): both profiles train with it
_DEC_KERAS = {"ae_loss": "mse", "ae_optimizer": "sgd", "lr": 1.0, "ae_momentum": 0.9,
              "ae_init": "dec", "input_dropout": 0.0}


@dataclass(frozen=True)
class AutoencoderConfig(MethodConfig):
    hidden: tuple[int, ...] = (500, 500, 2000)  # DEC (Xie et al. 2016), Sec. 4.2
    latent_dim: int = 10                        # DEC: the number of clusters
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3                            # Adam
    weight_decay: float = 0.0
    input_dropout: float = 0.2                  # masking noise, as DEC's denoising pretraining
                                                # (without it: --set input_dropout=0)
    ae_loss: str = "bce"                        # "bce" (sigmoid output) or "mse" (linear
                                                # output, DEC-keras)
    ae_optimizer: str = "adam"                  # "adam" or "sgd" (with momentum, DEC-keras)
    ae_momentum: float = 0.9                    # sgd only (DEC-keras: 0.9)
    ae_init: str = "torch"                         # "torch" (PyTorch's default) or "dec":
                                                # U(-sqrt(1/fan_in), +), zero biases (DEC-keras'
                                                # VarianceScaling(1/3, fan_in, uniform))
    ae_lr_schedule: str = "constant"            # "constant" or "cosine": epoch e (1-based) of
                                                # E runs at lr * (1 + cos(pi (e-1)/E)) / 2

    # full: DEC-keras' recipe (XifengGuo/DEC-keras, read for facts): 300 epochs of SGD at
    # learning rate 1 with momentum 0.9 on the squared error, no input dropout, its
    # initialisation; k-means on the codes of all 70,000 MNIST images reaches the
    # published 0.88 where the defaults above reach about 0.74 (results/benchmarks/
    # autoencoder_recipes.json, issue 37), in under an hour per seed on 2 CPU cores.
    # quick: the same recipe at the quick profile's size, about a minute on 2 CPU cores:
    # a narrower stack, 50 epochs, and batches of 64 (4 times the steps of 256: at 256,
    # k-means on the quick codes reached 0.50 after 50 epochs, at 64 0.66-0.67 on three
    # seeds, against 0.56-0.61 for Adam on the cross-entropy with input dropout;
    # results/benchmarks/autoencoder_recipes_quick.json)
    profiles = {"quick": {**_DEC_KERAS, "hidden": (256, 256, 512), "epochs": 50,
                          "batch_size": 64},
                "full": {**_DEC_KERAS, "epochs": 300}}

    def validate(self) -> None:
        if self.ae_loss not in ("bce", "mse"):
            raise ValueError(f"ae_loss must be 'bce' or 'mse', got {self.ae_loss!r}")
        if self.ae_optimizer not in ("adam", "sgd"):
            raise ValueError(f"ae_optimizer must be 'adam' or 'sgd', got {self.ae_optimizer!r}")
        if self.ae_init not in ("torch", "dec"):
            raise ValueError(f"ae_init must be 'torch' or 'dec', got {self.ae_init!r}")
        if self.ae_lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"ae_lr_schedule must be 'constant' or 'cosine', "
                             f"got {self.ae_lr_schedule!r}")

    def autoencoder(self) -> "AutoencoderConfig":
        """The autoencoder's own fields, from this config or a method config that extends
        it (the methods that cluster its codes: gmm-ae, GANMM, DCAN)."""
        return AutoencoderConfig(**{f.name: getattr(self, f.name) for f in fields(AutoencoderConfig)})


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, loss: str = "bce") -> torch.Tensor:
    """The autoencoder's reconstruction error, a mean over the batch and the pixels: the
    binary cross-entropy (``"bce"``; x_hat a sigmoid output in [0, 1]) or the squared
    error (``"mse"``; a linear output).  The methods that fine-tune the network (DCAN) use
    the loss it was trained with."""
    if loss == "bce":
        return F.binary_cross_entropy(x_hat, x)
    if loss == "mse":
        return F.mse_loss(x_hat, x)
    raise ValueError(f"loss must be 'bce' or 'mse', got {loss!r}")


def update_autoencoder(model: MLPAutoencoder, opt: torch.optim.Optimizer, x: torch.Tensor,
                       input_dropout: float = 0.0, loss: str = "bce") -> torch.Tensor:
    """One step on a minibatch x (B, D) in [0, 1]; returns the detached loss.

    minimise BCE(x, decoder(encoder(x~))) (``loss="bce"``, a sigmoid output) or the mean
    squared error (``"mse"``, a linear output), x~ = x with a fraction ``input_dropout``
    of its entries zeroed (denoising; the survivors are not rescaled)."""
    x_in = F.dropout(x, input_dropout) * (1 - input_dropout) if input_dropout else x
    _, x_hat = model(x_in)
    loss = reconstruction_loss(x_hat, x, loss)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def epoch_lr(cfg: AutoencoderConfig, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (1-based) under ``cfg.ae_lr_schedule``: ``lr``
    throughout, or a cosine from ``lr`` at the first epoch towards 0 after the last
    (a function of the epoch alone, so a resumed run continues the same schedule)."""
    if not 1 <= epoch <= cfg.epochs:
        raise ValueError(f"epoch must be in 1..{cfg.epochs}, got {epoch}")
    if cfg.ae_lr_schedule == "constant":
        return cfg.lr
    return cosine_lr(cfg.lr, epoch - 1, cfg.epochs)


def build_autoencoder(in_dim: int, cfg: AutoencoderConfig) -> MLPAutoencoder:
    """The network of ``cfg``: a sigmoid output for ``ae_loss="bce"``, a linear one for "mse";
    ``ae_init="dec"`` draws every weight from U(-sqrt(1/fan_in), sqrt(1/fan_in)) with zero
    biases (DEC-keras' initialisation) instead of PyTorch's default."""
    model = MLPAutoencoder(in_dim, cfg.hidden, cfg.latent_dim,
                           sigmoid_output=cfg.ae_loss == "bce")
    if cfg.ae_init == "dec":
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                bound = (1.0 / m.in_features) ** 0.5
                torch.nn.init.uniform_(m.weight, -bound, bound)
                torch.nn.init.zeros_(m.bias)
    return model


def train_autoencoder(X: torch.Tensor, cfg: AutoencoderConfig, seed: int = 0,
                      device: torch.device | str = "cpu", state: TrainState | None = None,
                      verbose: bool = True, on_epoch: Callable[[int, MLPAutoencoder], None] | None = None
                      ) -> tuple[MLPAutoencoder, History]:
    """Train an :class:`MLPAutoencoder` on the rows of ``X`` (N, D) in [0, 1].

    Data stay resident on ``device``; minibatches are a seeded permutation per epoch.
    ``state`` saves/resumes the training (see :class:`~dcl_lib.train.TrainState`).
    ``on_epoch(epoch, model)`` is called after each epoch (e.g. to measure the codes); it
    must not draw from torch's global generator (k-means with its own generator does
    not), and the model is put back in training mode after it.
    Returns (model in eval mode, history with ``loss/recon`` per epoch).
    """
    device = torch.device(device)
    state = state or TrainState()
    g = seeded_generator(seed, device)
    torch.manual_seed(seed)
    X = X.reshape(len(X), -1).to(device, torch.float32)
    cfg.validate()
    model = build_autoencoder(X.shape[1], cfg).to(device, torch.float32)
    if cfg.ae_optimizer == "adam":
        opt = make_adam(model.parameters(), cfg.lr, device, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.ae_momentum,
                              weight_decay=cfg.weight_decay)
    hist = History()
    state.attach({"autoencoder": model}, {"adam": opt}, {"batches": g}, hist)
    start = state.restore().get("epoch", 0)
    window = LossWindow(unit="epoch")
    model.train()
    for epoch in progress(range(start + 1, cfg.epochs + 1), desc="autoencoder", verbose=verbose):
        for group in opt.param_groups:
            group["lr"] = epoch_lr(cfg, epoch)
        for b in minibatches(len(X), cfg.batch_size, g):
            window.add(epoch, weight=len(b),
                       recon=update_autoencoder(model, opt, X[b], cfg.input_dropout, cfg.ae_loss))
        hist.log(epoch, losses=window.means(epoch, hint="lower lr or check that inputs are in [0, 1]"))
        if on_epoch is not None:
            on_epoch(epoch, model)
            model.train()
        if state.checkpoint(epoch, final=epoch == cfg.epochs, epoch=epoch):
            break
    model.eval()
    return model, hist


def model_cache_dir() -> Path:
    """Where :func:`cached_autoencoder` keeps trained networks: ``$DCL_MODEL_CACHE`` or
    ``~/.cache/dcl/models`` (beside the data cache)."""
    return user_cache("DCL_MODEL_CACHE", "models")


def _cache_key(X: torch.Tensor, cfg: AutoencoderConfig, seed: int, device: torch.device) -> str:
    """Everything the trained weights depend on: the data's bytes, every config field, the
    seed, and where the float arithmetic ran (device type, torch version, the CPU's
    vector instructions and thread count, the GPU's name: each of them changes the
    rounding)."""
    h = hashlib.sha256()
    x = X.reshape(len(X), -1).to("cpu", torch.float32).contiguous()
    h.update(str(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    cpu = device.type == "cpu"
    where = {"device": device.type, "torch": torch.__version__,
             "cpu": torch.backends.cpu.get_cpu_capability() if cpu else None,
             "threads": torch.get_num_threads() if cpu else None,
             "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    meta = {"config": dataclasses.asdict(cfg), "seed": int(seed), **where}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def cache_metrics(history: History) -> dict[str, float]:
    """What a run records of the autoencoder :func:`cached_autoencoder` gave it: its
    training seconds and whether it came from the cache (a hit's wall time leaves that
    training out; :func:`dcl_lib.results.seconds_per_seed` adds it back)."""
    return {"autoencoder_seconds": history["seconds"][-1],
            "autoencoder_cached": float(bool(history.scalars.get("cached_from")))}


def cached_autoencoder(X: torch.Tensor, cfg: AutoencoderConfig, seed: int = 0,
                       device: torch.device | str = "cpu", verbose: bool = True,
                       state: TrainState | None = None,
                       on_epoch: Callable[[int, MLPAutoencoder], None] | None = None
                       ) -> tuple[MLPAutoencoder, History]:
    """:func:`train_autoencoder`, remembered on disk: the chapters that start from the same
    autoencoder (01, 02 and 03: same config, images and seed) train it once.

    The key (:func:`_cache_key`) covers the data, the config, the seed, the device (type,
    CPU vector instructions and thread count, GPU name) and the torch version, so a hit returns exactly the network a
    live training would give on this machine: the same weights, the same history (its
    ``seconds`` are those of the training that wrote the file) and the same state of
    torch's global random generator afterwards (training draws its dropout masks from it).
    ``history.scalars["cached_from"]`` names the file on a hit (``None`` when trained).
    ``DCL_RETRAIN=1`` trains live and does not read the cache; a file that does not load
    is trained again and replaced.  ``state`` makes a miss's training resumable
    (:class:`~dcl_lib.train.TrainState`); a training its time budget stops is returned
    as it is and not cached.  ``on_epoch`` goes to a miss's training (a hit trains nothing
    and never calls it)."""
    device = torch.device(device)
    path = model_cache_dir() / f"autoencoder-{_cache_key(X, cfg, seed, device)}.pt"
    if not retrain_requested() and path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model = build_autoencoder(X.reshape(len(X), -1).shape[1], cfg)
            model.load_state_dict(saved["model"])
            hist = History()
            hist.load(saved["history"])
        except Exception as exc:  # a truncated or foreign file: train again
            if verbose:
                print(f"cached autoencoder {path} does not load ({exc}); training it again")
        else:
            torch.manual_seed(seed)  # as train_autoencoder does (every device's generator)
            torch.set_rng_state(saved["rng"]["cpu"])
            if device.type == "cuda":
                torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
            hist.scalars["cached_from"] = str(path)
            if verbose:
                print(f"autoencoder: trained earlier with the same settings, loaded from {path} "
                      "(DCL_RETRAIN=1 trains it again)")
            return model.to(device, torch.float32).eval(), hist
    model, hist = train_autoencoder(X, cfg, seed, device, state=state, verbose=verbose,
                                    on_epoch=on_epoch)
    if hist.scalars.get("stopped_at") is not None or (state is not None and state.stopped_at is not None):
        hist.scalars["cached_from"] = None
        return model, hist  # cut by the time budget: not the network of the config
    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    with atomic_path(path) as tmp:
        torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()},
                    "history": hist.to_dict(), "rng": rng}, tmp)
    hist.scalars["cached_from"] = None
    return model, hist


def encode(model: MLPAutoencoder, X: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Codes of every row of ``X``, (N, latent_dim), on the model's device."""
    device = next(model.parameters()).device
    return batched(lambda x: model.encode(x.to(device, torch.float32)), X.reshape(len(X), -1),
                   batch_size, nets=(model,))


def export_encoder(model: MLPAutoencoder) -> dict[str, torch.Tensor]:
    """The encoder for a runner checkpoint: its large matrices in 12 bits per entry, the
    rest in half precision (:func:`~dcl_lib.train.compact_state`; 2.5 MB for the
    784-500-500-2000-10 stack instead of 3.3 MB, the codes within 1e-3 of float32's)."""
    from ..train import INT8_MIN_NUMEL, compact_state

    return compact_state(model.encoder, int12_min_numel=INT8_MIN_NUMEL)


def codes_from_checkpoint(encoder_state: dict, X: torch.Tensor, cfg: AutoencoderConfig,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """Codes of the rows of ``X`` from a runner checkpoint's (compact) encoder export."""
    from ..train import load_compact_state

    X = X.reshape(len(X), -1)
    ae = MLPAutoencoder(X.shape[1], cfg.hidden, cfg.latent_dim)
    load_compact_state(ae.encoder, encoder_state)
    return encode(ae.to(device), X)


# ---------------------------------------------------------------------------
# Runner entry: the shared autoencoder, measured by k-means on its codes
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AEKMeansConfig(AutoencoderConfig):
    """Every field of the shared autoencoder, then the k-means on its codes."""

    n_clusters: int = 10
    kmeans_n_init: int = 10


def _fit_ae_kmeans(data, cfg: AEKMeansConfig, ctx: RunContext) -> FitResult:
    """Train (or take from the cache) the shared autoencoder of this seed, resumably, and
    cluster its codes with k-means: the embedding every chapter that clusters codes starts
    from, and its quality."""
    from .kmeans import KMeans

    X = data.flat()
    model, hist = cached_autoencoder(X, cfg.autoencoder(), ctx.seed, ctx.device, ctx.verbose,
                                     state=ctx.state)
    Z = encode(model, X).double()
    km = KMeans(cfg.n_clusters, n_init=cfg.kmeans_n_init, random_state=ctx.seed,
                device=ctx.device).fit(Z)
    state = {"encoder": export_encoder(model),
             "centres": torch.as_tensor(km.cluster_centers_, dtype=torch.float32)}
    # the autoencoder's training seconds and whether they came from the cache: a hit's
    # wall time leaves the training out, and a seed's time adds it back
    return FitResult(km.labels_, state, hist, {"inertia": km.inertia_, **cache_metrics(hist)})


def _reload_ae_kmeans(ck, data, cfg: AEKMeansConfig, device):
    """Codes from the saved encoder, then the nearest saved centre (in float64)."""
    from .kmeans import assign

    Z = codes_from_checkpoint(ck["encoder"], data.flat(), cfg, device).double()
    return assign(Z, ck["centres"].to(Z.device, torch.float64))[0].cpu().numpy()


SPEC = MethodSpec(AEKMeansConfig, _fit_ae_kmeans, "the shared dense autoencoder, k-means on its codes",
                  target_acc=0.86, reload=_reload_ae_kmeans)
