"""Building blocks shared by the methods: MLP stacks and the dense autoencoder.

Every module takes its sizes as explicit arguments (no globals), so the
chapters can build small versions for the quick profile and the papers'
sizes for the full one.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["mlp", "MLPAutoencoder"]


def mlp(sizes: Sequence[int], act: type[nn.Module] = nn.ReLU, last_act: nn.Module | None = None
        ) -> nn.Sequential:
    """Linear layers of the given sizes with ``act`` between them.

    ``mlp([784, 500, 10])`` is Linear(784, 500) -> ReLU -> Linear(500, 10);
    ``last_act`` is appended after the final layer when given.
    """
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    if last_act is not None:
        layers.append(last_act)
    return nn.Sequential(*layers)


class MLPAutoencoder(nn.Module):
    """x -> z -> x_hat with mirrored dense stacks (DEC's d-500-500-2000-10 by default).

    The code z is linear (no activation), the reconstruction is a sigmoid,
    matching inputs scaled to [0, 1].
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (500, 500, 2000), latent_dim: int = 10):
        super().__init__()
        self.in_dim, self.hidden, self.latent_dim = in_dim, tuple(hidden), latent_dim
        self.encoder = mlp([in_dim, *hidden, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden), in_dim], last_act=nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))  # (B, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)  # (B, latent_dim)
        return z, self.decoder(z)  # (B, in_dim)
