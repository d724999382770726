"""GANMM's open choices, measured on the quick profile.  (A script, not a test.)

One autoencoder (the quick profile's, seed 0) gives the codes of the 10,000 quick MNIST
images; on those codes GANMM runs once per variant, everything else equal:

* ``default``: this library's choices (k-means start, outsiders sampled in proportion to
  the classifier's posterior, the official sigma schedule, gradient penalty, Adam 1e-3);
* ``random-init``: the official random equal split as the initial partition;
* ``top``: the sigma_t outsiders are the ones the classifier rates highest (the slides'
  wording) instead of sampled;
* ``summable``: sigma_t = 0 from iteration 1,500 on (of the quick profile's 2,000): a
  schedule whose sum is finite;
* ``hard-em``: sigma_t = 0 throughout (hard EM);
* ``clip``: the official critic constraint (weight clipping to 0.01, RMSProp 5e-5);
* ``lr-1e-4``: Adam at the WGAN-GP paper's 1e-4.

Writes ``results/benchmarks/ganmm_variants.json`` (each variant's purity / NMI / ARI /
ACC trace, the points moved between evaluations, the final cluster sizes, wall time) and
the Gaussian mixture on the same codes.

    DCL_DATA_MIRROR=../shared/data python benchmarks/ganmm_variants.py
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from dcl_lib._io import write_json
from dcl_lib.config import DATA_PROFILES
from dcl_lib.data import load_dataset
from dcl_lib.methods.autoencoder import encode, train_autoencoder
from dcl_lib.methods.ganmm import GANMMConfig, standardize, train_ganmm
from dcl_lib.methods.gmm import fit_mixture
from dcl_lib.metrics import evaluate
from dcl_lib.runner import _versions, git_commit
from dcl_lib.train import device_name

VARIANTS = {
    "default": {},
    "random-init": {"init": "random"},
    "top": {"eps_mode": "top"},
    "summable": {"sigma_zero_at": 1500},
    "hard-em": {"sigma": (0, 0, 0, 0)},
    "clip": {"lipschitz": "clip", "gan_lr": 5e-5},
    "lr-1e-4": {"gan_lr": 1e-4},
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/benchmarks")
    p.add_argument("--only", nargs="*", help="variants to run (default: all)")
    args = p.parse_args(argv)
    prof = DATA_PROFILES["quick"]
    data = load_dataset("mnist", prof.split, subset=prof.subset, seed=0)
    cfg = GANMMConfig.for_profile("quick")
    ae, _ = train_autoencoder(data.flat(), cfg.autoencoder(), 0, verbose=False)
    Z = encode(ae, data.flat())
    # the mixture as the runner fits it beside GANMM: restarts and the k-means start
    gm = fit_mixture(Z.double(), 10, covariance_type="full", n_init=cfg.gmm_n_init,
                     kmeans_start=cfg.gmm_kmeans_start, random_state=0)
    path = Path(args.out) / "ganmm_variants.json"
    rec = {"device": device_name(torch.device("cpu")), "git_commit": git_commit(),
           "versions": _versions(), "data": f"mnist {prof.split}, {len(data)} images (quick)",
           "base_config": dataclasses.asdict(cfg), "gmm_same_codes": evaluate(data.y, gm.labels_),
           "variants": {}}
    Zs = standardize(Z)[0]
    for name, changes in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        t = time.perf_counter()
        _, hist = train_ganmm(Zs, dataclasses.replace(cfg, **changes), 0, y=data.y, verbose=False)
        keys = ("step", "acc", "purity", "nmi", "ari", "moved", "sizes", "sigma", "reseeds")
        rec["variants"][name] = {"changes": changes, "wall_s": time.perf_counter() - t,
                                 **{k: hist.series.get(k) for k in keys}}
        print(f"{name:12s} purity {hist.last('purity'):.4f} ACC {hist.last('acc'):.4f} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
        write_json(path, rec)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
