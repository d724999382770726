"""Training utilities shared by every method.

device choice, seeding, the two profiles, progress bars, atomic checkpoints
with exact resume, and a guard against non-finite losses.
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ._io import atomic_path

__all__ = [
    "PROFILES",
    "NonFiniteLossError",
    "check_finite",
    "compact_state",
    "device_name",
    "get_device",
    "load_checkpoint",
    "load_compact_state",
    "progress",
    "resolve_profile",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
]

PROFILES = ("quick", "full")


def resolve_profile(profile: str | None = None) -> str:
    """``quick`` (CPU, a subset, minutes) or ``full`` (paper scale, GPU).

    ``None`` reads ``$DCL_PROFILE`` and falls back to ``quick``.
    """
    if profile is None:
        profile = os.environ.get("DCL_PROFILE", "quick")
    p = str(profile).strip().lower()
    if p not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r} "
                         f"(check the --profile flag or DCL_PROFILE)")
    return p


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: the one asked for, else CUDA when available, else CPU."""
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        return dev
    env = os.environ.get("DCL_DEVICE")
    if env:
        return get_device(env)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    """Human-readable device name for results files."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA); return a torch Generator.

    Also asks cuDNN for deterministic kernels.  On CPU the same seed then
    gives the same result; on GPU some kernels stay non-deterministic.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
             disable: bool | None = None, **kw):
    """A tqdm progress bar; ``DCL_PROGRESS=0`` turns all of them off."""
    from tqdm import tqdm  # the text bar: works in terminals and notebooks without widgets

    if disable is None:
        disable = os.environ.get("DCL_PROGRESS", "1") == "0"
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False,
                dynamic_ncols=True, **kw)


# ---------------------------------------------------------------------------
# Non-finite guard
# ---------------------------------------------------------------------------

class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite."""


def check_finite(value: torch.Tensor | float, name: str, step: int,
                 hint: str = "lower the learning rate or check the input scaling") -> None:
    """Stop training as soon as a loss is NaN/inf, saying which, when and what to try."""
    v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    if not math.isfinite(v):
        raise NonFiniteLossError(
            f"loss {name!r} became {v} at step {step}; {hint}."
        )


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Every RNG state needed for an exact resume, in a weights_only-safe form."""
    version, internal, gauss_next = random.getstate()
    state = {
        "python": list(internal),
        "python_version": version,
        "python_gauss": gauss_next,
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"]),
                     state["python_gauss"]))
    ns = state["numpy"]
    np.random.set_state((ns["name"], ns["keys"].numpy().astype(np.uint32), ns["pos"],
                         ns["has_gauss"], ns["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: to a temporary file, then rename.

    A run killed mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


_SCALE = ".int8_scale"  # suffix of the per-row scales of an int8-stored matrix


def compact_state(module: torch.nn.Module, int8_min_numel: int | None = None
                  ) -> dict[str, torch.Tensor]:
    """A module's weights for a small checkpoint.

    Floating tensors are stored in half precision; other buffers (BatchNorm's
    step counter) as they are.  With ``int8_min_numel``, every weight of at least
    that many entries and 2 or more dimensions is stored as int8 per output row
    (``round(w / s)``, ``s = max|w_row| / 127``) with its float32 scales under
    ``<key>.int8_scale``: a quarter of float32's size, each entry within s / 2.
    :func:`load_compact_state` undoes either form.
    """
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().cpu()
        if int8_min_numel is not None and v.is_floating_point() and v.dim() >= 2 \
                and v.numel() >= int8_min_numel:
            rows = v.float().flatten(1)
            scale = (rows.abs().amax(1, keepdim=True) / 127).clamp_min(torch.finfo(torch.float32).tiny)
            out[k] = torch.round(rows / scale).to(torch.int8).view_as(v)
            out[k + _SCALE] = scale.squeeze(1)
        else:
            out[k] = v.half() if v.is_floating_point() else v
    return out


def load_compact_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Load :func:`compact_state` output into ``module`` (cast to its dtypes); returns it."""
    ref = module.state_dict()
    full = {}
    for k, v in state.items():
        if k.endswith(_SCALE):
            continue
        if k + _SCALE in state:  # int8 rows times their scales
            v = (v.float().flatten(1) * state[k + _SCALE][:, None]).view_as(v)
        full[k] = v.to(ref[k].dtype)
    module.load_state_dict(full)
    return module
