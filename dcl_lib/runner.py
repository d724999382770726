"""The experiment runner: one run -> one results JSON (+ checkpoint).

Each method module exposes ``SPEC``, a :class:`~dcl_lib.methods.base.MethodSpec`:
a config dataclass with paper defaults and a ``for_profile`` classmethod,
and a ``fit`` function that turns data + config into labels (and, when the
method has weights, a state to checkpoint).  ``run`` adds the provenance: seed, sizes, wall time, device,
library versions and the git commit.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from ._io import atomic_path
from .data import DATASETS, ImageData, load_dataset
from .methods.base import MethodSpec
from .metrics import evaluate, nmi
from .train import device_name, get_device, resolve_profile, save_checkpoint, seed_everything

__all__ = ["METHODS", "DATA_PROFILES", "run", "git_commit", "check_request"]


def _methods() -> dict[str, MethodSpec]:
    from .methods import clustergan, depict, gmm, kmeans

    return {"kmeans": kmeans.SPEC, "gmm": gmm.SPEC_GMM, "gmm-ae": gmm.SPEC_GMM_AE,
            "depict": depict.SPEC, "clustergan": clustergan.SPEC}


METHODS: dict[str, MethodSpec] = _methods()

# Which data a profile uses unless the command line says otherwise.
DATA_PROFILES = {
    "quick": {"split": "train", "subset": 10_000},
    "full": {"split": "all", "subset": None},
}


def git_commit() -> str:
    """The commit of the checkout this library runs from (``+dirty`` if modified)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    import scipy
    import sklearn

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "dcl_lib": __version__}


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None  # strict JSON has no NaN/inf: e.g. "never reached" times are null
    if isinstance(obj, torch.dtype):
        return str(obj)
    return obj


def check_request(method: str, dataset: str, profile: str | None, seeds) -> tuple[str, str, str]:
    """Validate a run request before anything is loaded or written."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    key = dataset.lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    prof = resolve_profile(profile)
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seeds must be non-negative integers, got {s!r}")
    return method, key, prof


def run(method: str, dataset: str = "mnist", profile: str | None = None, seed: int = 0,
        split: str | None = None, subset: int | None | str = "profile", out_dir: str | os.PathLike = "results",
        device: str | None = None, overrides: dict[str, Any] | None = None,
        data: ImageData | None = None, tag: str | None = None) -> dict[str, Any]:
    """Run one method once and write ``<out_dir>/<method>/<dataset>-<split>-<profile>-seed<N>.json``.

    ``subset="profile"`` takes the profile's default; ``None`` uses every image.
    ``overrides`` replaces fields of the method's config; ``tag`` is appended to
    the file names (``...-seed<N>-<tag>.json``) so that such a variant does not
    overwrite the profile's own result.  Returns the record.
    """
    if tag is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", tag):
        raise ValueError(f"tag must be letters, digits, '.', '_' or '-', got {tag!r}")
    method, dataset, profile = check_request(method, dataset, profile, [seed])
    spec = METHODS[method]
    cfg = spec.config.for_profile(profile)
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cfg)}
        if unknown:
            raise ValueError(f"unknown config field(s) for {method}: {sorted(unknown)}")
        cfg = dataclasses.replace(cfg, **overrides)
    if split is None:
        split = DATA_PROFILES[profile]["split"]
        native = DATASETS[dataset].splits
        if split not in native + ("all",):  # e.g. digits has no "train": use what it has
            split = native[0]
    if subset == "profile":
        subset = DATA_PROFILES[profile]["subset"]
    dev = get_device(device)
    if data is None:
        # The subset is drawn with a fixed seed so every method and seed of a
        # profile sees the same images; the run seed drives the method only.
        data = load_dataset(dataset, split, subset=subset, seed=0)
    commit = git_commit()  # the code that runs, read before a long run lets the tree change
    seed_everything(seed)
    t0 = time.perf_counter()
    result = spec.fit(data, cfg, seed, dev)
    wall = time.perf_counter() - t0
    metrics = evaluate(data.y, result.labels)
    metrics["nmi_geometric"] = nmi(data.y, result.labels, "geometric")
    metrics.update(result.extra_metrics)
    stem = f"{dataset}-{split}-{profile}-seed{seed}" + (f"-{tag}" if tag else "")
    out = Path(out_dir) / method
    out.mkdir(parents=True, exist_ok=True)
    ckpt = None
    if result.state is not None:
        ckpt = save_checkpoint(out / f"{stem}.pt", {"config": _jsonable(cfg), **result.state})
    record = {
        "method": method, "dataset": dataset, "split": split, "profile": profile, "seed": seed,
        "n_samples": len(data), "subset": subset, "n_clusters": int(len(np.unique(result.labels))),
        "metrics": metrics, "wall_time_s": wall, "device": device_name(dev),
        "versions": _versions(), "git_commit": commit,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": _jsonable(cfg), "history": _jsonable(result.history),
        "checkpoint": ckpt.name if ckpt else None,
        "command": f"python -m dcl_lib run {method} --dataset {dataset} --profile {profile} "
                   f"--seed {seed} --split {split}" + ("" if subset == DATA_PROFILES[profile]["subset"]
                                                        else f" --subset {subset}")
                   + "".join(f" --set {shlex.quote(f'{k}={v!r}')}" for k, v in (overrides or {}).items())
                   + (f" --tag {tag}" if tag else ""),
    }
    path = out / f"{stem}.json"
    with atomic_path(path, suffix=".tmp") as tmp:
        tmp.write_text(json.dumps(_jsonable(record), indent=2, allow_nan=False))
    record["path"] = str(path)
    return record
