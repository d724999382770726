"""Where Gaussian components fail: two moons, each mixture started from the true partition
and from k-means, over seeds, on a CPU.  (A script, not a test.)

For each seed: a mixture of two GANs started from the true partition and from the k-means
partition of the points, each with hard EM (``MOONS_CONFIG``, sigma_t = 0) and with the
official borrowing schedule (``MOONS_EPS_CONFIG``); and the full-covariance Gaussian
mixture's EM started from the true partition's parameters and from k-means++.  ACC at every
evaluation of the GAN mixtures, and the Gaussian mixture's ACC and EM iterations.

Writes ``results/benchmarks/ganmm_toy.json`` (read by the GANMM chapter).

    python benchmarks/ganmm_toy.py --seeds 0 1 2   # about 4 min per seed on 2 CPU cores
    python benchmarks/ganmm_toy.py --seeds 0 --only gans_from_truth \
        --out results/benchmarks/ganmm_toy_rerun.json   # one run, on another CPU

``--save-nets DIR`` also writes the networks of each ``gans_from_truth`` run to
``DIR/ganmm_moons_truth_seed<seed>.pt`` (a few hundred kB): the GANMM chapter loads seed 0's
instead of training it live (``DCL_RETRAIN=1`` trains it live)::

    python benchmarks/ganmm_toy.py --seeds 0 --only gans_from_truth \
        --out results/benchmarks/ganmm_moons_truth.json --save-nets results/benchmarks
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from sklearn.datasets import make_moons

from dcl_lib._io import write_json
from dcl_lib.methods.ganmm import MOONS_CONFIG, MOONS_EPS_CONFIG, standardize, train_ganmm
from dcl_lib.methods.gmm import GaussianMixture, em_from_partition
from dcl_lib.metrics import evaluate
from dcl_lib.runner import _versions, git_commit
from dcl_lib.train import device_name


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/benchmarks/ganmm_toy.json")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="+", default=None, metavar="RUN",
                   help="only these GAN runs (e.g. gans_from_truth: a rerun on another CPU)")
    p.add_argument("--save-nets", default=None, metavar="DIR",
                   help="write each gans_from_truth run's networks to DIR")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = make_moons(2000, noise=0.05, random_state=0)
    Z = standardize(torch.tensor(x, dtype=torch.float32))[0]
    truth = torch.as_tensor(y)
    Zd = Z.double()
    gm_true, r_true = em_from_partition(Zd, truth, 2)
    runs = []
    for seed in args.seeds:
        row = {"seed": seed}
        gm = GaussianMixture(2, covariance_type="full", init_params="k-means++",
                             random_state=seed).fit(Zd)
        row["gmm_kmeanspp_acc"] = round(float(evaluate(y, gm.labels_)["acc"]), 4)
        for name, cfg, init in (("gans_from_truth", MOONS_CONFIG, truth),
                                ("gans_from_kmeans", MOONS_EPS_CONFIG, None),
                                # the other two pairings, so that start and E-step are
                                # not confounded
                                ("gans_from_truth_eps", MOONS_EPS_CONFIG, truth),
                                ("gans_from_kmeans_hard", MOONS_CONFIG, None)):
            if args.only and name not in args.only:
                continue
            t0 = time.perf_counter()
            nets, h = train_ganmm(Z, cfg, seed, y=truth, verbose=False, init_labels=init)
            row[name] = {"acc": [round(float(a), 4) for a in h.series["acc"] if a is not None],
                         "seconds": round(time.perf_counter() - t0, 1)}
            if args.save_nets and name == "gans_from_truth":
                path = Path(args.save_nets) / f"ganmm_moons_truth_seed{seed}.pt"
                torch.save({"config": dataclasses.asdict(cfg), "seed": seed,
                            "nets": nets.state_dict(), "history": h.to_dict(),
                            "git_commit": git_commit()}, path)
                row[name]["nets"] = str(path)
        runs.append(row)
        print(row, flush=True)
    write_json(args.out, {
        "what": "two moons (2,000 points, noise 0.05): GAN mixtures and Gaussian mixtures "
                "started from the true partition and from k-means",
        "moons_config": dataclasses.asdict(MOONS_CONFIG),
        "moons_eps_sigma": list(MOONS_EPS_CONFIG.sigma),
        "gmm_from_truth": {"acc": round(float(evaluate(y, gm_true)["acc"]), 4),
                           "em_iterations": r_true.n_iter},
        "runs": runs, "threads": args.threads, "device": device_name(torch.device("cpu")),
        # the vector instructions torch uses: runs part on CPUs that differ here
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "versions": _versions(), "git_commit": git_commit()})


if __name__ == "__main__":
    main()
