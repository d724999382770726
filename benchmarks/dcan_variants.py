"""DCAN's open choices, measured on the quick profile.  (A script, not a test.)

One autoencoder per seed (the quick profile's) gives the codes of the 10,000 quick MNIST
images; from it the clustering phase runs once per variant, everything else equal:

* ``default``: this library's choices (a conditional D, hard k*, target spread tau = 0.5
  with the covariances of the first fit, theta* refreshed every 25 steps, reconstruction
  kept, lambda_clu = 0.1);
* ``tau-1``: the target is the fitted mixture itself (tau = 1);
* ``spread-refit``: the targets' covariances follow every refit;
* ``no-recon``: the adversarial term alone (recon_weight = 0, weight = 1);
* ``refresh-4``: theta* refreshed every 4 steps;
* ``refresh-270``: every 270 steps (one epoch of the full profile: the card's suggestion);
* ``fixed``: theta* never refreshed (refresh_steps = 0);
* ``unconditional``: D sees z alone (real: z+ of each point's cluster, as the poster);
* ``soft``: each point's cluster drawn from its posterior instead of k*;
* ``abc``, ``kl``, ``aae``: the two baselines and the contrast, in the same loop.

Writes ``results/benchmarks/dcan_variants.json`` (per variant and seed: the ACC / NMI / ARI
trace, the final cluster sizes, the events, wall time) with the Gaussian mixture that is
theta* at the start (the comparison on the same codes).

    DCL_DATA_MIRROR=../shared/data python benchmarks/dcan_variants.py --seeds 0 1
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
from dcl_lib.methods.autoencoder import train_autoencoder
from dcl_lib.methods.dcan import DCANConfig, train_dcan
from dcl_lib.metrics import evaluate
from dcl_lib.runner import _versions, git_commit
from dcl_lib.train import device_name

VARIANTS = {
    "default": {},
    "tau-1": {"tau": 1.0},
    "spread-refit": {"target_spread": "refit"},
    "no-recon": {"recon_weight": 0.0, "weight": 1.0},
    "refresh-4": {"refresh_steps": 4},
    "refresh-270": {"refresh_steps": 270},
    "fixed": {"refresh_steps": 0},
    "unconditional": {"conditional": False},
    "soft": {"assign": "soft"},
    "abc": {"loss": "abc"},
    "kl": {"loss": "kl"},
    "aae": {"loss": "aae"},
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/benchmarks")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--only", nargs="*", help="variants to run (default: all)")
    args = p.parse_args(argv)
    prof = DATA_PROFILES["quick"]
    data = load_dataset("mnist", prof.split, subset=prof.subset, seed=0)
    X, y = data.flat(), torch.as_tensor(data.y)
    cfg = DCANConfig.for_profile("quick")
    rec = {"device": device_name(torch.device("cpu")), "git_commit": git_commit(),
           "versions": _versions(), "data": f"mnist {prof.split}, {len(data)} images (quick)",
           "seeds": args.seeds, "base_config": dataclasses.asdict(cfg), "gmm_same_codes": {},
           "variants": {name: {"changes": changes, "runs": {}} for name, changes in VARIANTS.items()
                        if not args.only or name in args.only}}
    for seed in args.seeds:
        ae, _ = train_autoencoder(X, cfg.autoencoder(), seed, verbose=False)
        for name, v in rec["variants"].items():
            t = time.perf_counter()
            _, final, hist = train_dcan(X, ae, dataclasses.replace(cfg, **v["changes"]), seed, y=y,
                                        verbose=False)
            rec["gmm_same_codes"][str(seed)] = hist.scalars["start"]
            keys = ("step", "acc", "nmi", "ari", "events", "loss/value", "loss/d_acc")
            v["runs"][str(seed)] = {"wall_s": time.perf_counter() - t,
                                    "final": evaluate(data.y, final.labels.cpu().numpy()),
                                    "sizes": hist.series["sizes"][-1],
                                    **{k: hist.series.get(k) for k in keys}}
            print(f"seed {seed} {name:14s} ACC {v['runs'][str(seed)]['final']['acc']:.4f} "
                  f"(start {hist.scalars['start']['acc']:.4f}) {time.perf_counter() - t:.0f} s",
                  flush=True)
    path = Path(args.out) / "dcan_variants.json"
    write_json(path, rec)
    print("wrote", path)


if __name__ == "__main__":
    main()
