"""What limits DEPICT on USPS: the embedding or the start?  (Issue 38's USPS gap.)

On the 9,298 USPS images (the Hastie set: training and test joined), for each seed: the
quick profile's network pretrained live (100 epochs, as the committed quick runs), then on
that one embedding: k-means (10 restarts), AC-PIC with the official a = 1 and with a = 100
(the scale the official MATLAB wrapper's comment gives for USPS), and a linear probe (a
logistic regression trained on half the images, scored on the other half: how much of the
class structure the embedding holds, a ceiling no clustering of it reaches by a wide margin);
then the clustering phases of the quick profile from the a = 100 start (from a = 1 they
are the committed quick-profile runs, results/depict/usps-all-quick-seed*.json).  A script, not a test.

    python benchmarks/depict_usps_start.py --seeds 0

Writes results/benchmarks/depict_usps_start.json.
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from dcl_lib._io import write_json
from dcl_lib.data import load_dataset
from dcl_lib.methods.depict import DepictConfig, acpic_init, cluster_pass, fit_depict, to_signed
from dcl_lib.methods.kmeans import KMeans
from dcl_lib.metrics import cluster_acc
from dcl_lib.runner import _versions, git_commit
from dcl_lib.train import device_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks" / "depict_usps_start.json"
COMMIT = git_commit()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = p.parse_args()
    data = load_dataset("usps", "all")
    X, y = to_signed(data.x), data.y.numpy()
    base = dataclasses.replace(DepictConfig.for_profile("quick"), pretrained=None)
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        net, hist = fit_depict(X, dataclasses.replace(base, warmup_epochs=0, epochs=0), seed,
                               "cpu", verbose=False, data="usps-all")
        z = cluster_pass(net, X)[0]
        row = {"seed": seed, "pretrain_s": time.perf_counter() - t0,
               "pretrain_loss": hist["loss/recon"][-1],
               "kmeans": cluster_acc(y, KMeans(10, n_init=10, random_state=seed).fit(z.double()).labels_)}
        half = np.random.default_rng(seed).permutation(len(y))
        a_, b_ = half[: len(y) // 2], half[len(y) // 2:]
        probe = LogisticRegression(max_iter=2000).fit(z[a_].numpy(), y[a_])
        row["linear_probe"] = float(probe.score(z[b_].numpy(), y[b_]))
        for a in (1.0, 100.0):
            labels, _ = acpic_init(z, 10, base.init_neighbors, a, base.acpic_z)
            row[f"acpic_a{a:g}"] = cluster_acc(y, labels.numpy())
            if a == 1.0:  # the quick profile's own start: its committed runs have the phases
                continue
            cfg = dataclasses.replace(base, acpic_a=a)
            # the phases from this start: the same pretraining replayed (same seed), then
            # the warm-up and main loop of the quick profile
            t1 = time.perf_counter()
            _, h = fit_depict(X, cfg, seed, "cpu", y=data.y, verbose=False, data="usps-all")
            row[f"phases_a{a:g}"] = {"init_acc": h.scalars["init_acc"], "final_acc": h["acc"][-1],
                                     "seconds": time.perf_counter() - t1}
        print(row, flush=True)
        rows.append(row)
        write_json(OUT, {"runs": rows, "config": dataclasses.asdict(base), "data": "usps all "
                         f"({len(y):,} images)", "device": device_name(torch.device("cpu")),
                         "threads": torch.get_num_threads(), "versions": _versions(),
                         "git_commit": COMMIT})


if __name__ == "__main__":
    main()
