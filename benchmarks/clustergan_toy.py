"""ClusterGAN's two priors on a 2-D toy, at equal budgets, over seeds, on a CPU.  (A script,
not a test.)

The toy is ``line_of_blobs`` (five round blobs on a line).  For each seed both priors train
with ``TOY_CONFIG`` (same networks, steps, learning rate and seed) and decode the same 1,000
points with the same budget, K restarts of ``--decode-iters`` Adam steps
(``compare_priors``): the mixed prior reads the cluster off the winning restart's one-hot
(and, for comparison, off its encoder's argmax), the Gaussian prior runs k-means on its
decoded latents.  k-means on the points themselves is the reference.

Writes ``results/benchmarks/clustergan_toy.json``.

    python benchmarks/clustergan_toy.py --seeds 0 1 2 3 4   # 25 s per seed on 2 CPU cores
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import dataclasses
import time

import torch

from dcl_lib._io import write_json
from dcl_lib.methods.clustergan import TOY_CONFIG, compare_priors, line_of_blobs
from dcl_lib.methods.kmeans import KMeans
from dcl_lib.metrics import evaluate
from dcl_lib.runner import _versions, git_commit
from dcl_lib.train import device_name


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/benchmarks/clustergan_toy.json")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--decode-iters", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    X, y = line_of_blobs(seed=0)
    K = TOY_CONFIG.n_clusters
    runs = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        r = compare_priors(X, y, TOY_CONFIG, seed, decode_iters=args.decode_iters)
        row = {"seed": seed, "seconds": round(time.perf_counter() - t0, 1)}
        for key in ("mixed", "normal", "encoder"):
            row[key] = {m: round(float(r[key][m]), 4) for m in ("acc", "nmi", "ari")}
        for key in ("mixed", "normal"):
            row[key].update(decode_loss=round(r[key]["loss"], 4),
                            train_and_decode_s=round(r[key]["seconds"], 1))
        runs.append(row)
        print(row, flush=True)
    km = KMeans(K, n_init=10, random_state=0).fit(X.double())
    write_json(args.out, {
        "what": "ClusterGAN's mixed prior against a Gaussian prior on line_of_blobs, equal "
                "steps and decoding budgets (K restarts each)",
        "config": dataclasses.asdict(TOY_CONFIG), "decode_iters": args.decode_iters,
        "n_decode": 1000, "kmeans_on_points": {m: round(float(v), 4) for m, v in
                                               evaluate(y, km.labels_).items()},
        "runs": runs, "threads": args.threads, "device": device_name(torch.device("cpu")),
        "versions": _versions(), "git_commit": git_commit()})


if __name__ == "__main__":
    main()
