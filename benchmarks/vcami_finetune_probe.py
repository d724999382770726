"""A probe for VCAMI's next GPU window: continue a committed full-profile run for a few
epochs with one setting changed, on a CPU, and watch which errors move.  (A script, not a
test.)

A from-scratch full run takes about 30 minutes on a 2-core CPU; a probe epoch on all
70,000 images takes about 3.  The question a probe answers is narrow: starting from a
partition that is already right for about 98.8% of the images, does the change move the
errors the window aims at (ones written with a foot, which the runs of ``gpu-aa`` put in the
twos' cluster), and at what cost elsewhere?  It is not a from-scratch run: the critics
start afresh (the exports do not keep them), Adam starts afresh, and the rate decays from
``--lr`` to 0 over the probe's epochs (cosine, per step).  The control arm (nothing changed)
measures what these restarts alone do.

Each arm starts from the same export, the same initial critics and the same stream of
batches and draws (seeded by the run's seed).  After every epoch the head's labels are
scored on all the images: ACC / NMI / ARI, the number of errors and the aligned confusion
matrix (:func:`dcl_lib.metrics.aligned_confusion`: row = class, column = the cluster
matched to a class).

Writes ``results/benchmarks/vcami_finetune_probe.json``.  The start is a variant's export,
which the tree does not keep (``dcl_lib.results.KEPT_VARIANT_CHECKPOINTS``): the command
recorded in its results JSON makes it again (the script prints it).

    DCL_DATA_MIRROR=../shared/data python benchmarks/vcami_finetune_probe.py --seeds 0 \\
        --arm control='{}' --arm erase8='{"erase": 8}'
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from dcl_lib._io import write_json
from dcl_lib.data import load_dataset
from dcl_lib.methods.vcami import (OBJECTIVES, VCAMIConfig, labels_of, load_exported,
                                   update_vcami)
from dcl_lib.metrics import aligned_confusion, evaluate
from dcl_lib.runner import _versions, git_commit
from dcl_lib.train import (cosine_lr, device_name, load_checkpoint, make_adam, minibatches,
                           seeded_generator, set_lr)

ROOT = Path(__file__).resolve().parents[1]


def _arm(text: str) -> tuple[str, dict]:
    name, sep, fields = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"an arm is NAME=JSON, got {text!r}")
    changes = json.loads(fields)
    if not isinstance(changes, dict):
        raise argparse.ArgumentTypeError(f"arm {name}: the fields must be a JSON object")
    return name, changes


def score(nets, X, y) -> dict:
    """The head's labels on every image: metrics, errors and the aligned confusion."""
    lab = labels_of(nets, X, "head").cpu().numpy()
    M, _ = aligned_confusion(y, lab)
    return {**evaluate(y, lab), "errors": int(M.sum() - np.trace(M)),
            "confusion": M.tolist()}


def probe(X, y, ck, cfg: VCAMIConfig, changes: dict, seed: int, epochs: int, lr: float,
          device) -> dict:
    run_cfg = dataclasses.replace(cfg, **changes)
    run_cfg.validate()
    torch.manual_seed(seed)  # the fresh critics: the same in every arm
    nets = load_exported(ck, X.shape[1:], run_cfg, device)
    g = seeded_generator(seed, device)
    opt = make_adam(nets.parameters(), lr, device)
    terms = OBJECTIVES[run_cfg.objective]
    N = len(X)
    total, step = epochs * math.ceil(N / run_cfg.batch_size), 0
    trace = [{"epoch": 0, "seconds": 0.0, **score(nets, X, y)}]
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        nets.train()
        for b in minibatches(N, run_cfg.batch_size, g):
            if len(b) < 2:
                continue
            set_lr(opt, cosine_lr(lr, step, total))
            step += 1
            update_vcami(nets, opt, X[b], run_cfg, g, terms)
        trace.append({"epoch": epoch, "seconds": time.perf_counter() - t0,
                      **score(nets, X, y)})
        t = trace[-1]
        print(f"  seed {seed} {changes} epoch {epoch}: ACC {t['acc']:.4f}, "
              f"{t['errors']} errors, {t['seconds']:.0f} s", flush=True)
    return {"changes": changes, "config": dataclasses.asdict(run_cfg), "trace": trace}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    p.add_argument("--name", default="vcami_finetune_probe")
    p.add_argument("--tag", default="gpu-aa", help="the committed runs to start from")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--arm", action="append", type=_arm, default=None,
                   help="NAME=JSON: the config fields the arm changes (repeatable)")
    p.add_argument("--merge", action="store_true",
                   help="keep the other arms of an existing file (each run records its commit)")
    args = p.parse_args(argv)
    arms = dict(args.arm or [("control", {})])
    device = torch.device("cpu")
    data = load_dataset("mnist", "all", subset=None, seed=0)
    X, y = data.x.to(device, torch.float32), np.asarray(data.y)
    rec = {"device": device_name(device), "threads": torch.get_num_threads(),
           "git_commit": git_commit(), "versions": _versions(),
           "data": f"mnist all, {len(data)} images", "tag": args.tag, "epochs": args.epochs,
           "lr": args.lr, "schedule": "cosine from lr to 0 over the probe, per step",
           "arms": {name: {"changes": ch, "runs": {}} for name, ch in arms.items()}}
    for seed in args.seeds:
        src = ROOT / "results" / "vcami" / f"mnist-all-full-seed{seed}-{args.tag}.json"
        start = json.loads(src.read_text())
        if not start.get("checkpoint"):  # a variant's export is not kept in the tree
            raise SystemExit(f"{src.name} keeps no export ({start['checkpoint_dropped']['reason']});"
                             f" make it again first (on a GPU: about 6 minutes):\n  {start['command']}")
        ck = load_checkpoint(src.parent / start["checkpoint"])
        cfg = VCAMIConfig.from_dict(ck.get("config", start["config"]), strict=False)
        for name, changes in arms.items():
            t = time.perf_counter()
            run = probe(X, y, ck, cfg, changes, seed, args.epochs, args.lr, device)
            run.update(start=src.name, start_acc=start["metrics"]["acc"],
                       wall_s=time.perf_counter() - t, git_commit=rec["git_commit"],
                       threads=rec["threads"])
            rec["arms"][name]["runs"][str(seed)] = run
            print(f"seed {seed} {name}: ACC {run['trace'][0]['acc']:.4f} -> "
                  f"{run['trace'][-1]['acc']:.4f} ({run['wall_s']:.0f} s)", flush=True)
    path = Path(args.out) / f"{args.name}.json"
    if args.merge and path.exists():
        old = json.loads(path.read_text())
        if (old["tag"], old["epochs"], old["lr"]) != (args.tag, args.epochs, args.lr):
            raise ValueError(f"{path} probes {old['tag']}, {old['epochs']} epochs, lr "
                             f"{old['lr']}: not mergeable with this probe")
        for name, v in old["arms"].items():
            for seed, run in v["runs"].items():
                rec["arms"].setdefault(name, {"changes": v["changes"], "runs": {}})
                rec["arms"][name]["runs"].setdefault(seed, run)
    write_json(path, rec)
    print("wrote", path)


if __name__ == "__main__":
    main()
