"""Building blocks shared by the methods: dense stacks, the dense autoencoder,
convolutional generators / critics / encoders for images of any ``(C, H, W)`` with H
and W divisible by 4 (28x28 MNIST, 32x32 CIFAR, 16x16 USPS), and K small MLPs run as
one batched module.

Every module takes its sizes as explicit arguments (no globals), so the chapters
can build small versions for the quick profile and the papers' sizes for the full
one.  Shapes are end-of-line comments in ``forward``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["mlp", "MLPAutoencoder", "MLPGenerator", "MLPHead", "init_normal_", "ConvTrunk",
           "ConvHead", "ConvGenerator", "BatchedMLP"]


def mlp(sizes: Sequence[int], act: Callable[[], nn.Module] = nn.ReLU,
        last_act: nn.Module | None = None) -> nn.Sequential:
    """Linear layers of the given sizes with ``act()`` between them.

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

    The code z is linear (no activation); the reconstruction is a sigmoid, matching
    inputs scaled to [0, 1], or linear (``sigmoid_output=False``, for a squared error).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (500, 500, 2000), latent_dim: int = 10,
                 sigmoid_output: bool = True):
        super().__init__()
        self.in_dim, self.hidden, self.latent_dim = in_dim, tuple(hidden), latent_dim
        self.encoder = mlp([in_dim, *hidden, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden), in_dim],
                           last_act=nn.Sigmoid() if sigmoid_output else None)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))  # (B, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)  # (B, latent_dim)
        return z, self.decoder(z)  # (B, in_dim)


class MLPGenerator(nn.Module):
    """z -> d-dimensional vectors through ReLU layers; ``forward(*parts)`` concatenates its
    inputs (``G(z)`` or ``G(z_n, z_c)``).  No output activation: vector data are not
    bounded like pixels."""

    def __init__(self, latent_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.net = mlp([latent_dim, *hidden, out_dim])

    def forward(self, *z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat(z, 1))  # (B, out_dim)


class MLPHead(nn.Module):
    """Vectors -> LeakyReLU(0.2) layers -> ``out_dim`` outputs: a critic (``out_dim=1``)
    or an encoder for vector data; no batch normalisation (a WGAN-GP critic must not
    normalise across the batch)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.net = mlp([in_dim, *hidden, out_dim], act=lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))  # (B, out_dim)


# ---------------------------------------------------------------------------
# Convolutional GAN parts (the DCGAN-style MNIST networks of InfoGAN / ClusterGAN)
# ---------------------------------------------------------------------------

def init_normal_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Weights ~ N(0, std), biases 0 for every linear and (transposed) convolution,
    the DCGAN initialisation; returns the module."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
    return module


def _quarter(shape: Sequence[int]) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in shape)
    if h % 4 or w % 4:
        raise ValueError(f"image height and width must be divisible by 4 (two stride-2 layers), "
                         f"got {h}x{w}")
    return c, h // 4, w // 4


class ConvTrunk(nn.Module):
    """Conv C1 4x4 s2 -> LReLU(0.2) -> Conv C2 4x4 s2 -> LReLU -> FC hidden -> LReLU; no
    batch normalisation (a WGAN-GP critic must not normalise across the batch)."""

    def __init__(self, in_shape: Sequence[int], hidden: int, channels: tuple[int, int]):
        super().__init__()
        c, h4, w4 = _quarter(in_shape)
        c1, c2 = channels
        self.net = nn.Sequential(
            nn.Conv2d(c, c1, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(c1, c2, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
            nn.Linear(c2 * h4 * w4, hidden), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, hidden)


class ConvHead(nn.Module):
    """A :class:`ConvTrunk` and one linear output: a critic (``out_dim=1``) or an encoder.

    Weights from N(0, 0.02) (:func:`init_normal_`)."""

    def __init__(self, in_shape: Sequence[int], out_dim: int, hidden: int = 1024,
                 channels: tuple[int, int] = (64, 128)):
        super().__init__()
        self.trunk = ConvTrunk(in_shape, hidden, channels)
        self.out = nn.Linear(hidden, out_dim)
        init_normal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(x))  # (B, out_dim)


class ConvGenerator(nn.Module):
    """z -> FC hidden, BN, ReLU -> FC (C2 H/4 W/4), BN, ReLU -> ConvT C1 4x4 s2, BN, ReLU
    -> ConvT C 4x4 s2, sigmoid: an image of ``out_shape`` in [0, 1].

    ``forward(*parts)`` concatenates its inputs, so ``G(z)`` and ``G(z_n, z_c)`` both work.
    """

    def __init__(self, latent_dim: int, out_shape: Sequence[int] = (1, 28, 28), hidden: int = 1024,
                 channels: tuple[int, int] = (64, 128)):
        super().__init__()
        c, h4, w4 = _quarter(out_shape)
        c1, c2 = channels
        self.c2, self.h4, self.w4 = c2, h4, w4
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, c2 * h4 * w4), nn.BatchNorm1d(c2 * h4 * w4), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.ConvTranspose2d(c1, c, 4, 2, 1), nn.Sigmoid())
        init_normal_(self)

    def forward(self, *z: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat(z, 1)).view(-1, self.c2, self.h4, self.w4)  # (B, C2, H/4, W/4)
        return self.deconv(h)  # (B, C, H, W)


# ---------------------------------------------------------------------------
# K small MLPs as one module
# ---------------------------------------------------------------------------

class BatchedMLP(nn.Module):
    """K independent MLPs with the same layer sizes, run as one batched matmul per layer.

    Input (K, B, d_in) -> output (K, B, d_out): model k sees only row k.  Each model
    is initialised as ``nn.Linear`` initialises itself (weights and biases uniform on
    +-1/sqrt(fan_in)), so K of them behave like K separate ``mlp(sizes)``.
    """

    def __init__(self, n_models: int, sizes: Sequence[int],
                 act: Callable[[], nn.Module] = nn.ReLU, last_act: nn.Module | None = None):
        super().__init__()
        if n_models < 1 or len(sizes) < 2:
            raise ValueError(f"BatchedMLP needs n_models >= 1 and two sizes, got {n_models}, {sizes}")
        self.n_models, self.sizes = int(n_models), tuple(sizes)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(a)
            self.weights.append(nn.Parameter(torch.empty(n_models, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_models, 1, b).uniform_(-bound, bound)))
        self.act = act()
        self.last_act = last_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[0] != self.n_models:
            raise ValueError(f"BatchedMLP expects (K={self.n_models}, B, d), got {tuple(x.shape)}")
        n = len(self.weights)
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, W)  # (K, B, d_{i+1})
            if i < n - 1:
                x = self.act(x)
        return self.last_act(x) if self.last_act is not None else x


class PerComponent(nn.Module):
    """K independent networks behind the batched interface of :class:`BatchedMLP`:
    input (K, B, ...) -> output (K, B, ...), network k sees only row k.  For networks
    (convolutions, batch normalisation) that do not stack into one matmul; the K calls
    run in a loop."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if len(models) < 1:
            raise ValueError("PerComponent needs at least one network")
        self.models = nn.ModuleList(models)
        self.n_models = len(self.models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.n_models:
            raise ValueError(f"expected {self.n_models} rows of inputs (K, B, ...), got {x.shape[0]}")
        return torch.stack([m(x[k]) for k, m in enumerate(self.models)])  # (K, B, ...)

