"""Figures used across the chapters: image grids, confusion matrices,
training curves and 2-D latent maps.  Every function draws on a given (or
new) Axes and returns it, so notebooks end their cells with ``plt.show()``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .metrics import aligned_confusion

__all__ = ["image_grid", "show_images", "plot_confusion", "plot_curves", "plot_latent_2d",
           "images_per_cluster", "plot_gmm_2d", "draw_schematic", "SCHEMATIC_COLOURS",
           "plot_partitions_2d"]


def _np(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def image_grid(x, nrow: int = 10, pad: int = 1) -> np.ndarray:
    """Tile ``(N, C, H, W)`` images into one ``(H', W')`` or ``(H', W', 3)`` array."""
    x = _np(x)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    rows = int(np.ceil(n / ncol))
    grid = np.ones((c, rows * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + k * (w + pad): pad + k * (w + pad) + w] = x[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def show_images(x, nrow: int = 10, title: str | None = None, ax=None):
    """Show a grid of images in [0, 1]."""
    ax = ax or plt.subplots(figsize=(nrow * 0.6, max(1, int(np.ceil(len(x) / nrow))) * 0.6))[1]
    ax.imshow(np.clip(image_grid(x, nrow), 0, 1), cmap="gray_r", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def images_per_cluster(x, labels, n_clusters: int, per_cluster: int = 10, seed: int = 0):
    """Up to ``per_cluster`` random images of each cluster, one row per cluster."""
    x, labels = _np(x), _np(labels)
    rng = np.random.default_rng(seed)
    blank = np.zeros_like(x[:1])
    rows = []
    for k in range(n_clusters):
        idx = np.flatnonzero(labels == k)
        pick = rng.choice(idx, size=min(per_cluster, idx.size), replace=False) if idx.size else []
        row = [x[i:i + 1] for i in pick] + [blank] * (per_cluster - len(pick))
        rows.append(np.concatenate(row))
    return np.concatenate(rows)


def plot_confusion(y_true, y_pred, ax=None, title: str | None = None, normalize: bool = True):
    """The confusion matrix with clusters aligned to classes by the Hungarian matching."""
    M, order = aligned_confusion(y_true, y_pred)
    shown = M / M.sum(axis=1, keepdims=True) if normalize else M
    ax = ax or plt.subplots(figsize=(4.2, 3.8))[1]
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xlabel("cluster (matched order)")
    ax.set_ylabel("class")
    ax.set_xticks(range(len(order)), [str(c) for c in order], fontsize=7)
    ax.set_yticks(range(M.shape[0]), [str(c) for c in np.unique(_np(y_true))], fontsize=7)
    plt.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title)
    return ax


def plot_curves(history, keys: list[str] | None = None, ax=None, xlabel: str = "epoch",
                logy: bool = False):
    """Training curves from a :class:`~dcl_lib.train.History` (against its ``step``) or a
    dict of per-epoch lists (against 1, 2, ...); default keys: the ``loss/*`` series."""
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    series = history.to_dict() if hasattr(history, "to_dict") else history
    if keys is None:
        keys = [k for k in series if k.startswith("loss/")] or \
            [k for k, v in series.items() if isinstance(v, list) and k not in ("step", "seconds")]
    for k in keys:
        x = series["step"] if "step" in series else np.arange(1, len(series[k]) + 1)
        ax.plot(x, series[k], label=k)
    ax.set_xlabel(xlabel)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_latent_2d(z2, labels, ax=None, title: str | None = None, s: float = 2.0):
    """Scatter of 2-D codes coloured by (class or cluster) label."""
    z2, labels = _np(z2), _np(labels)
    if z2.ndim != 2 or z2.shape[1] != 2:
        raise ValueError(f"expected (N, 2) coordinates, got {z2.shape}")
    ax = ax or plt.subplots(figsize=(4.5, 4.5))[1]
    sc = ax.scatter(z2[:, 0], z2[:, 1], c=labels, cmap="tab10", s=s, alpha=0.7, linewidths=0)
    ax.legend(*sc.legend_elements(), fontsize=7, markerscale=0.8, loc="best", ncol=2)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def plot_gmm_2d(X, mu, Sigma, labels=None, ax=None, title: str | None = None, n_std: float = 2.0):
    """2-D data with each Gaussian component drawn as its ``n_std`` ellipse."""
    from matplotlib.patches import Ellipse

    X, mu, Sigma = _np(X), _np(mu), _np(Sigma)
    ax = ax or plt.subplots(figsize=(4, 4))[1]
    if labels is None:
        ax.scatter(X[:, 0], X[:, 1], c="0.6", s=3, alpha=0.5, linewidths=0)
    else:
        ax.scatter(X[:, 0], X[:, 1], c=_np(labels), cmap="tab10", s=3, alpha=0.5, linewidths=0,
                   vmin=0, vmax=9)
    for k in range(len(mu)):
        S = Sigma[k] if Sigma[k].ndim == 2 else np.diag(Sigma[k])
        evals, evecs = np.linalg.eigh(S)
        angle = np.degrees(np.arctan2(evecs[1, -1], evecs[0, -1]))
        w, h = 2 * n_std * np.sqrt(np.maximum(evals[::-1], 0))
        ax.add_patch(Ellipse(mu[k], w, h, angle=angle, fill=False, lw=1.5, color=f"C{k}"))
        ax.plot(*mu[k], "k+", ms=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


# the kinds of box in a method's schematic and their colours
SCHEMATIC_COLOURS = {"data": "#eeeeee", "net": "#dbe9f6", "target": "#e2f0d9",
                     "loss": "#fde3d3", "step": "#fff2cc"}


def draw_schematic(nodes: dict, edges: list, ax=None, title: str | None = None,
                   size: tuple[float, float] = (10.0, 3.6)):
    """A method's schematic: boxes and arrows on a unit-free canvas.

    ``nodes``: name -> (x, y, text, kind), kind one of :data:`SCHEMATIC_COLOURS` ("data",
    "net", "target", "loss", "step"); ``edges``: (from, to) or (from, to, label) or
    (from, to, label, style) with style "-" (data flow, the default) or "--" (a gradient or
    a refresh).  Returns the axes; the caller shows the figure."""
    bad = [k for *_, k in nodes.values() if k not in SCHEMATIC_COLOURS]
    if bad:
        raise ValueError(f"node kinds must be among {sorted(SCHEMATIC_COLOURS)}, got {bad}")
    missing = [e[:2] for e in edges if e[0] not in nodes or e[1] not in nodes]
    if missing:
        raise ValueError(f"edges between unknown nodes: {missing}")
    if ax is None:
        _, ax = plt.subplots(figsize=size)
    xs = [v[0] for v in nodes.values()]
    ys = [v[1] for v in nodes.values()]
    ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    ax.axis("off")
    boxes = {}
    for name, (x, y, text, kind) in nodes.items():
        boxes[name] = ax.text(x, y, text, ha="center", va="center", fontsize=8, zorder=3,
                              bbox=dict(boxstyle="round,pad=0.35", fc=SCHEMATIC_COLOURS[kind],
                                        ec="0.4"))
    for edge in edges:
        a, b = edge[:2]
        label = edge[2] if len(edge) > 2 else None
        style = edge[3] if len(edge) > 3 else "-"
        # drawn after the boxes (a higher zorder), whose patches clip the arrow's ends
        ax.annotate("", xy=nodes[b][:2], xytext=nodes[a][:2], zorder=4,
                    arrowprops=dict(arrowstyle="-|>", color="0.3", lw=1, ls=style, mutation_scale=14,
                                    shrinkA=2, shrinkB=2,
                                    patchA=boxes[a].get_bbox_patch(),
                                    patchB=boxes[b].get_bbox_patch()))
        if label:
            (xa, ya), (xb, yb) = nodes[a][:2], nodes[b][:2]
            ax.text((xa + xb) / 2, (ya + yb) / 2 + 0.12, label, fontsize=7, ha="center",
                    va="bottom", color="0.25", zorder=4)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_partitions_2d(X, panels, samples=None, size=(10, 3)):
    """One scatter of the 2-D points ``X`` per ``(labels, title)`` in ``panels``, then (if
    given) one of each generator's ``samples`` ``(K, n, 2)``; returns the figure."""
    X = _np(X)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"expected (N, 2) points, got {X.shape}")
    n = len(panels) + (samples is not None)
    fig, axes = plt.subplots(1, n, figsize=size, squeeze=False)
    axes = axes[0]
    for ax, (labels, title) in zip(axes, panels):
        ax.scatter(*X.T, c=_np(labels), cmap="coolwarm", s=2)
        ax.set_title(title)
    if samples is not None:
        for k, s in enumerate(_np(samples)):
            axes[-1].scatter(*s.T, s=2, label=f"$G_{k + 1}$")
        axes[-1].set_title("samples of the generators")
        axes[-1].legend(fontsize=7, markerscale=4)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
