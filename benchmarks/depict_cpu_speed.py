"""How fast can DEPICT's full-profile network train on this CPU?  (A script, not a test.)

Times one pass of DEPICT's minibatch step (clean + corrupted pathways, decoder, the
reconstruction and cross-entropy losses, Adam) and of the clean inference pass over
``--n`` MNIST images with the full profile's network (50 channels), for each setting that
does not change the method: batch size, channels-last memory format, ``torch.compile``,
and the number of intra-op threads.  Prints seconds per epoch scaled to 70,000 images and
writes ``results/benchmarks/depict_cpu_speed.json``.

    DCL_DATA_MIRROR=../shared/data python benchmarks/depict_cpu_speed.py --n 5000
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import platform
import time
from pathlib import Path

import torch

from dcl_lib._io import write_json
from dcl_lib.data import load_dataset
from dcl_lib.methods.depict import DepictConfig, DepictNet, cluster_pass, to_signed, update_network
from dcl_lib.runner import git_commit
from dcl_lib.train import device_name, minibatches, seeded_generator


def time_epoch(X: torch.Tensor, cfg: DepictConfig, channels_last: bool, compile_: bool,
               repeats: int = 2) -> tuple[float, float]:
    """(seconds per training epoch, seconds per clean pass) over X, best of ``repeats``."""
    torch.manual_seed(0)
    net = DepictNet((1, 28, 28), cfg.n_clusters, cfg.channels, cfg.dropout)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        X = X.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), cfg.lr)
    step = torch.compile(update_network) if compile_ else update_network
    target = torch.softmax(torch.randn(len(X), cfg.n_clusters), 1)
    g = seeded_generator(0)
    for b in minibatches(len(X), cfg.batch_size, g)[:3]:  # warm-up (and compilation)
        step(net, opt, X[b], cfg, target[b])
    train, infer = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for b in minibatches(len(X), cfg.batch_size, g):
            step(net, opt, X[b], cfg, target[b])
        train.append(time.perf_counter() - t)
        t = time.perf_counter()
        cluster_pass(net, X)
        infer.append(time.perf_counter() - t)
    return min(train), min(infer)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="images timed (scaled to 70,000)")
    p.add_argument("--out", default="results/benchmarks")
    a = p.parse_args(argv)
    X = to_signed(load_dataset("mnist", "train", subset=a.n, seed=0).x)
    full = DepictConfig.for_profile("full")
    scale = 70_000 / a.n
    settings = [
        {"batch_size": 100, "channels_last": False, "compile": False, "threads": 2},  # official
        {"batch_size": 256, "channels_last": False, "compile": False, "threads": 2},  # full profile
        {"batch_size": 512, "channels_last": False, "compile": False, "threads": 2},
        {"batch_size": 256, "channels_last": True, "compile": False, "threads": 2},
        {"batch_size": 256, "channels_last": False, "compile": True, "threads": 2},
        {"batch_size": 256, "channels_last": False, "compile": False, "threads": 1},
    ]
    rows = []
    for s in settings:
        torch.set_num_threads(s["threads"])
        cfg = DepictConfig(**{**full.__dict__, "batch_size": s["batch_size"]})
        try:
            train, infer = time_epoch(X, cfg, s["channels_last"], s["compile"])
            row = {**s, "train_s_per_epoch_70k": train * scale, "clean_pass_s_70k": infer * scale}
        except Exception as exc:  # e.g. torch.compile without a working compiler
            row = {**s, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        rows.append(row)
        print(row, flush=True)
    torch.set_num_threads(2)
    record = {"n_timed": a.n, "channels": full.channels, "device": device_name(torch.device("cpu")),
              "cpu": platform.processor() or platform.machine(),
              "torch": torch.__version__, "git_commit": git_commit(), "rows": rows}
    print(f"-> {write_json(Path(a.out) / 'depict_cpu_speed.json', record)}")
    return record


if __name__ == "__main__":
    main()
