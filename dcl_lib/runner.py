"""The experiment runner: one run -> one results JSON (+ compact weights, + a
resumable training state while it trains).

Three steps, each usable alone:

1. :func:`resolve` checks the request and builds a :class:`RunPlan` (method spec from
   the registry, typed config, data selection, file names, the reproducing command)
   before anything is loaded or written;
2. :func:`fit` runs the method (``--resume`` continues from the training state);
3. :func:`record` evaluates the labels and writes the results JSON with its
   provenance (seed, sizes, wall time, device, versions, git commit) and the
   compact weight export.

:func:`run` chains them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from ._io import write_json
from .config import DATA_PROFILES, MethodConfig, resolve_profile
from .data import DATASETS, ImageData, load_dataset
from .methods import get_spec, method_names
from .methods.base import FitResult, MethodSpec, RunContext
from .metrics import evaluate, nmi
from .train import History, TrainState, device_name, get_device, save_checkpoint, seed_everything

__all__ = ["RunPlan", "resolve", "fit", "record", "run", "git_commit", "check_request",
           "labels_digest"]


def git_commit() -> str:
    """The commit of the checkout this library runs from (``+dirty`` if a tracked file
    outside ``results/`` is modified: runs write their own outputs there).

    ``$DCL_GIT_COMMIT``, when set, names it and wins: the campaign's launcher sets it
    from a clean tree for the copy on a lent GPU machine, whose git metadata (if any
    travels) can describe another commit than the files (measured: a copy reported the
    session's first commit, ``+dirty``).
    """
    if os.environ.get("DCL_GIT_COMMIT"):
        return os.environ["DCL_GIT_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
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
    if isinstance(obj, History):
        return _jsonable(obj.to_dict())
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


def labels_digest(labels) -> str:
    """sha256 of the labels as int64: two runs gave the same clustering iff equal."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes()).hexdigest()


def check_request(method: str, dataset: str, profile: str | None, seeds) -> tuple[str, str, str]:
    """Validate a run request before anything is loaded or written."""
    spec = get_spec(method)  # ValueError for an unknown method
    key = dataset.lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    prof = resolve_profile(profile, extra=tuple(spec.config.profiles))
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seeds must be non-negative integers, got {s!r}")
    return method, key, prof


# ---------------------------------------------------------------------------
# (1) resolve
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RunPlan:
    """Everything a run is, decided before it starts."""

    method: str
    spec: MethodSpec
    dataset: str
    split: str
    subset: int | None
    profile: str
    seed: int
    cfg: MethodConfig
    overrides: tuple[str, ...]  # the overridden field names, in order
    tag: str | None
    out_dir: Path

    @property
    def stem(self) -> str:
        return (f"{self.dataset}-{self.split}-{self.profile}-seed{self.seed}"
                + (f"-{self.tag}" if self.tag else ""))

    @property
    def json_path(self) -> Path:
        return self.out_dir / self.method / f"{self.stem}.json"

    @property
    def weights_path(self) -> Path:
        """The compact weight export of a finished run (committed beside the JSON)."""
        return self.out_dir / self.method / f"{self.stem}.pt"

    @property
    def state_path(self) -> Path:
        """The full training state for ``--resume`` (large; never committed)."""
        return self.out_dir / self.method / f"{self.stem}.train-state.pt"

    @property
    def command(self) -> str:
        """The command line that reproduces this run."""
        default_subset = DATA_PROFILES[self.profile].subset
        sets = "".join(f" --set {shlex.quote(f'{k}={getattr(self.cfg, k)!r}')}" for k in self.overrides)
        return (f"python -m dcl_lib run {self.method} --dataset {self.dataset} --profile {self.profile} "
                f"--seed {self.seed} --split {self.split}"
                + ("" if self.subset == default_subset else f" --subset {self.subset}")
                + sets + (f" --tag {self.tag}" if self.tag else ""))

    def identity(self, n_samples: int) -> dict[str, Any]:
        """What a training state must share with this run to be resumed by it."""
        return {"method": self.method, "dataset": self.dataset, "split": self.split,
                "subset": self.subset, "n_samples": n_samples, "seed": self.seed,
                "config": _jsonable(self.cfg)}


def resolve(method: str, dataset: str = "mnist", profile: str | None = None, seed: int = 0,
            split: str | None = None, subset: int | None | str = "profile",
            overrides: dict[str, Any] | None = None, tag: str | None = None,
            out_dir: str | os.PathLike = "results") -> RunPlan:
    """Check a request and build its :class:`RunPlan` (nothing is loaded or written).

    ``subset="profile"`` takes the profile's default, ``None`` every image;
    ``overrides`` values may be typed or command-line text (``"(32, 64)"``), and are
    type-checked against the config's fields; ``tag`` names a variant's files.
    """
    if tag is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", tag):
        raise ValueError(f"tag must be letters, digits, '.', '_' or '-', got {tag!r}")
    method, dataset, profile = check_request(method, dataset, profile, [seed])
    spec = get_spec(method)
    cfg = spec.config.for_profile(profile)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    if split is None:
        split = DATA_PROFILES[profile].split
        native = DATASETS[dataset].splits
        if split not in native + ("all",):  # e.g. digits has no "train": use what it has
            split = native[0]
    if subset == "profile":
        subset = DATA_PROFILES[profile].subset
    return RunPlan(method, spec, dataset, split, subset, profile, int(seed), cfg,
                   tuple(overrides or ()), tag, Path(out_dir))


def load_data(plan: RunPlan) -> ImageData:
    """The plan's images; the subset is drawn with seed 0, so every method and run seed
    of a profile sees the same images."""
    return load_dataset(plan.dataset, plan.split, subset=plan.subset, seed=0)


# ---------------------------------------------------------------------------
# (2) fit
# ---------------------------------------------------------------------------

def fit(plan: RunPlan, data: ImageData, device: str | torch.device | None = None,
        resume: bool = False, save_every_s: float | None = 60.0, budget_s: float | None = None,
        verbose: bool = True) -> tuple[FitResult, TrainState, float, torch.device]:
    """Run the method; returns (result, its training state, wall seconds, device).

    The training state is written to ``plan.state_path`` every ``save_every_s`` seconds
    (methods that train networks; ``None``: never); ``resume`` continues from it;
    ``budget_s`` stops training at the first safe point after that many seconds
    (``stopped_at``).
    """
    dev = get_device(device)
    state = TrainState(plan.state_path if save_every_s is not None else None,
                       every_s=save_every_s or 0.0, identity=plan.identity(len(data)),
                       resume=resume, budget_s=budget_s)
    if resume and not plan.state_path.exists() and verbose:
        print(f"no training state at {plan.state_path}: starting from the beginning", flush=True)
    seed_everything(plan.seed)
    t0 = time.perf_counter()
    result = plan.spec.fit(data, plan.cfg, RunContext(plan.seed, dev, state, verbose))
    return result, state, time.perf_counter() - t0, dev


# ---------------------------------------------------------------------------
# (3) record
# ---------------------------------------------------------------------------

def record(plan: RunPlan, data: ImageData, result: FitResult, state: TrainState, wall: float,
           device: torch.device, commit: str) -> dict[str, Any]:
    """Evaluate, write the results JSON and the weight export; return the record."""
    metrics = evaluate(data.y, result.labels)
    metrics["nmi_geometric"] = nmi(data.y, result.labels, "geometric")
    metrics.update(result.extra_metrics)
    history = result.history
    weights = None
    if result.state is not None:
        weights = save_checkpoint(plan.weights_path, {"config": _jsonable(plan.cfg), **result.state})
    if state.stopped_at is None:
        state.remove()  # finished: the weight export is the product
    prior = float((state.resumed_from or {}).get("elapsed") or 0.0)  # earlier segments
    rec = {
        "method": plan.method, "dataset": plan.dataset, "split": plan.split,
        "profile": plan.profile, "seed": plan.seed, "n_samples": len(data), "subset": plan.subset,
        "n_clusters": int(len(np.unique(result.labels))), "metrics": metrics,
        "labels_sha256": labels_digest(result.labels),
        # a resumed run's time per seed is its segments' sum: the training time the state
        # saved (cumulative over earlier segments) plus this process's; a cut segment's work
        # after its last save is redone, so counted once
        "wall_time_s": wall + prior, "segment_wall_s": wall,
        "device": device_name(device), "versions": _versions(),
        "git_commit": commit, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": _jsonable(plan.cfg), "history": _jsonable(history),
        "checkpoint": weights.name if weights else None,
        "stopped_at": state.stopped_at,
        "train_state": plan.state_path.name if state.stopped_at is not None and state.path else None,
        "resumed_from": _jsonable(state.resumed_from),
        "command": plan.command,
    }
    if plan.spec.target_acc is not None and isinstance(history, History):
        rec["time_to_acc"] = _jsonable(history.time_to_acc(plan.spec.target_acc))
    write_json(plan.json_path, _jsonable(rec))
    rec["path"] = str(plan.json_path)
    return rec


def run(method: str, dataset: str = "mnist", profile: str | None = None, seed: int = 0,
        split: str | None = None, subset: int | None | str = "profile",
        out_dir: str | os.PathLike = "results", device: str | None = None,
        overrides: dict[str, Any] | None = None, data: ImageData | None = None,
        tag: str | None = None, resume: bool = False, save_every_s: float | None = 60.0,
        budget_s: float | None = None, verbose: bool = True) -> dict[str, Any]:
    """Run one method once: :func:`resolve` -> :func:`fit` -> :func:`record`.

    Writes ``<out_dir>/<method>/<dataset>-<split>-<profile>-seed<N>[-<tag>].json``;
    ``data`` replaces the plan's images (tests).  Returns the record.
    """
    plan = resolve(method, dataset, profile, seed, split, subset, overrides, tag, out_dir)
    if data is None:
        data = load_data(plan)
    commit = git_commit()  # the code that runs, read before a long run lets the tree change
    result, state, wall, dev = fit(plan, data, device, resume, save_every_s, budget_s, verbose)
    return record(plan, data, result, state, wall, dev, commit)
