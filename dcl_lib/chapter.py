"""The set-up of a chapter notebook in one call.

    from dcl_lib.chapter import setup
    ch = setup(seed=0)          # profile ($DCL_PROFILE), seeds, device, plotting defaults
    data = ch.data("mnist")     # the profile's images (quick: 10,000 training images)

Notebooks read everything profile-dependent through ``ch`` (``ch.config(Cfg)``,
``ch.data``), committed results through ``ch.results``, and never import the
command-line runner.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import DATA_PROFILES, resolve_profile
from .data import DATASETS, ImageData, load_dataset
from .train import get_device, seed_everything

__all__ = ["Chapter", "setup"]

PLOT_DEFAULTS = {"figure.dpi": 100, "font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8}


def _book_root() -> Path:
    """The checkout's root (the folder with ``_toc.yml``), from the notebook's folder."""
    for p in [Path.cwd(), *Path.cwd().parents]:
        if (p / "_toc.yml").exists():
            return p
    return Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Chapter:
    """What a chapter's cells need: the profile, the run seed, the device and the
    book's root folder (for committed results)."""

    profile: str
    seed: int
    device: torch.device
    root: Path

    def data(self, name: str = "mnist", split: str | None = None, subset: int | None | str = "profile"
             ) -> ImageData:
        """A dataset with the profile's split and subset (drawn with seed 0, the same
        images for every chapter and method)."""
        prof = DATA_PROFILES[self.profile]
        if split is None:
            split = prof.split if prof.split in DATASETS[name].splits + ("all",) else \
                DATASETS[name].splits[0]
        return load_dataset(name, split, subset=prof.subset if subset == "profile" else subset, seed=0)

    def config(self, cls, **changes: Any):
        """``cls.for_profile(profile)`` with ``changes`` (type-checked)."""
        return cls.for_profile(self.profile).with_overrides(changes) if changes else \
            cls.for_profile(self.profile)

    def results(self, method: str, pattern: str = "*.json", tag: str | None = "any"
                ) -> list[dict]:
        """Committed results JSON of a method (``results/<method>/<pattern>``), each with
        its ``path`` and ``tag`` (what the file name adds after the seed: a variant, or a
        rerun such as ``gpu``); sorted by file name.  ``tag=None`` keeps only the untagged
        runs (a profile's own: ``mnist-all-full-seed*.json`` matches the tagged files
        too), another string only the runs with that tag, ``"any"`` (default) all.
        ``seconds_per_seed`` is what the seed cost from scratch
        (:func:`~dcl_lib.results.seconds_per_seed`: a cached autoencoder's training added)."""
        from .results import _tag, seconds_per_seed

        out = []
        for path in sorted((self.root / "results" / method).glob(pattern)):
            rec = json.loads(path.read_text())
            rec["path"], rec["tag"] = path, _tag(path, rec)
            if "wall_time_s" in rec:
                rec["seconds_per_seed"] = seconds_per_seed(rec)
            if tag == "any" or rec["tag"] == tag:
                out.append(rec)
        return out


def setup(seed: int = 0, profile: str | None = None, device: str | None = None,
          quiet: bool = False) -> Chapter:
    """Resolve the profile (``$DCL_PROFILE``, default quick) and device (``$DCL_DEVICE``),
    seed every RNG, set the plotting defaults; print one line saying so."""
    import matplotlib.pyplot as plt

    ch = Chapter(resolve_profile(profile), int(seed), get_device(device), _book_root())
    seed_everything(ch.seed)
    plt.rcParams.update(PLOT_DEFAULTS)
    if not quiet:
        print(f"profile: {ch.profile}; device: {ch.device}; seed: {ch.seed}")
    return ch
