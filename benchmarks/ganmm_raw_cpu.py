"""Why GANMM's raw-pixel variant waits for a GPU: its cost per ε-EM iteration on a CPU, and
what a short CPU run of its smallest nets reaches.  (A script, not a test.)

Part 1 times one ε-EM iteration (one generator step, ``n_critic`` critic steps with the
gradient penalty, one classifier step; K = 10 components, 50 points each) for three sizes
of the raw variant's convolutional nets, the default first, on MNIST-shaped random images.
Part 2 (``--short-run``) trains the smallest nets on 10,000 MNIST images from the k-means
partition of the pixels (200 pre-training and 600 ε-EM iterations, the official sigma_t
schedule) and records purity, NMI and ARI at every evaluation beside k-means on the pixels.

Writes ``results/benchmarks/ganmm_raw_cpu.json`` (read by the GANMM chapter).

    DCL_DATA_MIRROR=../shared/data python benchmarks/ganmm_raw_cpu.py --short-run
    # about 1 min for part 1, 15 min for part 2 on 2 CPU cores
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import dataclasses
import time

import torch

from dcl_lib._io import write_json
from dcl_lib.methods.ganmm import (EStep, GANMMConfig, _one_hot_posterior, build_nets,
                                   initial_labels, pretrain_step, train_ganmm)
from dcl_lib.metrics import evaluate
from dcl_lib.runner import _versions, git_commit
from dcl_lib.train import device_name

# (channels, hidden, z_dim) of the raw nets: the default (ClusterGAN-sized), then smaller
SIZES = (((64, 128), 1024, 128), ((32, 64), 256, 64), ((16, 32), 128, 32))


def _config(size, **kw) -> GANMMConfig:
    """The full profile's config with the raw nets of ``size`` (and overrides ``kw``)."""
    channels, hidden, z_dim = size
    return dataclasses.replace(GANMMConfig.for_profile("full"), variant="raw",
                               raw_channels=channels, raw_hidden=hidden, raw_z_dim=z_dim, **kw)


def time_iteration(size, repeats: int = 3) -> dict:
    """Seconds per ε-EM iteration of the raw nets of ``size`` (after one warm-up)."""
    cfg = _config(size)
    torch.manual_seed(0)
    nets = build_nets(cfg, (1, 28, 28))
    X = torch.rand(5000, 1, 28, 28)
    labels = torch.arange(5000) % cfg.n_clusters
    g = torch.Generator().manual_seed(0)
    opt = {name: torch.optim.Adam(getattr(nets, name).parameters(), 1e-3, foreach=True)
           for name in ("G", "D", "C")}
    est = EStep(_one_hot_posterior(labels, cfg.n_clusters), sigma=0, batch=cfg.gan_batch,
                labels=labels)

    def iteration():  # the work of an ε-EM iteration, on a fixed partition
        pretrain_step(nets, (opt["G"], opt["D"], opt["C"]), est, X, cfg, g)

    iteration()
    t0 = time.perf_counter()
    for _ in range(repeats):
        iteration()
    seconds = (time.perf_counter() - t0) / repeats
    return {"channels": list(size[0]), "hidden": size[1], "z_dim": size[2],
            "parameters": sum(p.numel() for p in nets.parameters()),
            "seconds_per_iteration": round(seconds, 3),
            "hours_official_200k": round(seconds * 200_000 / 3600, 1),
            # the full profile's iterations alone (its E-steps on all the data not counted)
            "hours_full_profile": round(seconds * (cfg.iterations + cfg.pretrain_iters) / 3600, 1)}


def short_run(seed: int = 0) -> dict:
    from dcl_lib.data import load_dataset

    data = load_dataset("mnist", "train", subset=10_000, seed=seed)
    cfg = _config(SIZES[-1], pretrain_iters=200, iterations=600, eval_every=100)
    t0 = time.perf_counter()
    start = initial_labels(data.x, cfg.n_clusters, "kmeans", seed)
    kmeans = evaluate(data.y.numpy(), start.numpy())
    _, hist = train_ganmm(data.x, cfg, seed, "cpu", data.y, verbose=False, init_labels=start)
    s = hist.series
    return {"data": "mnist train, 10000 images (seeded subset)", "seed": seed,
            "config": {k: v for k, v in dataclasses.asdict(cfg).items()
                       if k.startswith(("raw_", "pretrain", "iterations", "sigma", "gan_batch",
                                        "n_critic", "init"))},
            "kmeans_pixels": {k: round(float(v), 4) for k, v in kmeans.items()},
            "step": s["step"], "purity": [round(float(v), 4) for v in s["purity"]],
            "nmi": [round(float(v), 4) for v in s["nmi"]],
            "ari": [round(float(v), 4) for v in s["ari"]],
            "sizes": s["sizes"], "reseeds": s["reseeds"],
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/benchmarks/ganmm_raw_cpu.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--short-run", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    timings = []
    for size in SIZES:
        timings.append(time_iteration(size))
        print(timings[-1], flush=True)
    out = {"what": "GANMM's raw variant on a CPU: seconds per ε-EM iteration (K = 10, 50 "
                   "points per component, n_critic = 5, gradient penalty) and a short run",
           "timings": timings}
    if args.short_run:
        out["short_run"] = short_run()
        print(out["short_run"], flush=True)
    write_json(args.out, {**out, "threads": args.threads,
                          "device": device_name(torch.device("cpu")),
                          "versions": _versions(), "git_commit": git_commit()})


if __name__ == "__main__":
    main()
