"""How fast is one ClusterGAN iteration on a GPU, and what makes it faster?  (A script.)

One *iteration* is what the full profile repeats 30,000 times: ``n_critic`` = 5 critic
steps (each with its gradient penalty) and one generator/encoder step, with the
full-profile networks on 1x28x28 images.  Variants that do not change the method:

* ``eager``: the library's ``update_critic`` / ``update_generator_encoder`` as they are;
* ``tf32``: the same with TF32 matrix products allowed;
* ``graph``: the whole iteration captured once as a CUDA graph and replayed (Adam with
  ``capturable=True``, the noise drawn from the default CUDA generator, which graphs
  support);
* ``compile``: generator and encoder through ``torch.compile`` (the critic stays eager:
  the gradient penalty needs a double backward, which compiled graphs do not support);
* ``concurrent-3``: three processes of ``eager`` (and of ``graph``) at once on one GPU,
  the campaign's setting: the throughput of 1 against 3 runs.

Prints milliseconds per iteration and writes ``clustergan_gpu_speed.json`` (atomically,
after every variant, so a run cut by its deadline keeps what it measured).

    PYTHONPATH=. DCL_DATA_MIRROR=.device_data python benchmarks/clustergan_gpu_speed.py --out DIR
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from dcl_lib._io import write_json
from dcl_lib.data import load_dataset
from dcl_lib.methods.clustergan import (ClusterGANConfig, build_networks, update_critic,
                                        update_generator_encoder)
from dcl_lib.runner import git_commit
from dcl_lib.train import device_name, make_adam, random_batch, seeded_generator


def setup(batch_size: int, capturable: bool = False, seed: int = 0):
    cfg = dataclasses.replace(ClusterGANConfig.for_profile("full"), batch_size=batch_size)
    torch.manual_seed(seed)
    G, D, E = build_networks(cfg, (1, 28, 28), True)
    G, D, E = G.to(DEVICE), D.to(DEVICE), E.to(DEVICE)
    kw = {"capturable": True} if capturable else {}
    opt_d = make_adam(D.parameters(), cfg.lr, DEVICE, betas=cfg.betas, **kw)
    opt_ge = make_adam(list(G.parameters()) + list(E.parameters()), cfg.lr, DEVICE,
                       betas=cfg.betas, **kw)
    return cfg, G, D, E, opt_d, opt_ge


def iteration(X, cfg, G, D, E, opt_d, opt_ge, g):
    for _ in range(cfg.n_critic):
        real = X[random_batch(len(X), cfg.batch_size, g)]
        update_critic(G, D, opt_d, real, cfg, g)
    update_generator_encoder(G, D, E, opt_ge, cfg.batch_size, cfg, g, X.device)


Y = None  # the labels (for the check's ACC)
DEVICE = "cuda"  # --device cpu: a smoke test of the eager path on a machine without one


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn, iters: int) -> float:
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return 1000 * (time.perf_counter() - t) / iters


def measure(variant: str, X: torch.Tensor, batch_size: int, iters: int) -> dict:
    out = {"variant": variant, "batch_size": batch_size, "iters": iters}
    t0 = time.perf_counter()
    if variant in ("eager", "tf32", "compile"):
        torch.backends.cuda.matmul.allow_tf32 = variant == "tf32"
        cfg, G, D, E, opt_d, opt_ge = setup(batch_size)
        if variant == "compile":
            G, E = torch.compile(G), torch.compile(E)
        g = seeded_generator(0, DEVICE)

        def fn():
            iteration(X, cfg, G, D, E, opt_d, opt_ge, g)
        for _ in range(3):  # warm-up (and compilation)
            fn()
        sync()
        out["warmup_s"] = time.perf_counter() - t0
        out["ms_per_iter"] = timed(fn, iters)
    elif variant == "graph":
        torch.backends.cuda.matmul.allow_tf32 = False
        cfg, G, D, E, opt_d, opt_ge = setup(batch_size, capturable=True)
        g = torch.cuda.default_generators[torch.cuda.current_device()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                iteration(X, cfg, G, D, E, opt_d, opt_ge, g)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            iteration(X, cfg, G, D, E, opt_d, opt_ge, g)
        graph.replay()
        torch.cuda.synchronize()
        out["warmup_s"] = time.perf_counter() - t0
        out["ms_per_iter"] = timed(graph.replay, iters)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    out["iters_per_s"] = 1000 / out["ms_per_iter"]
    out["full_schedule_s"] = 30000 * out["ms_per_iter"] / 1000  # the full profile's iterations
    return out


def concurrent(variant: str, k: int, batch_size: int, iters: int) -> dict:
    cmd = [sys.executable, __file__, "--device", DEVICE, "--one", variant, "--batch-size", str(batch_size),
           "--iters", str(iters)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(k)]
    runs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    ms = [r["ms_per_iter"] for r in runs]
    return {"variant": f"{variant}-concurrent-{k}", "batch_size": batch_size, "iters": iters,
            "ms_per_iter_each": ms, "iters_per_s_total": sum(1000 / m for m in ms)}


def check(X: torch.Tensor, iters: int) -> dict:
    """The library's loop with ``cuda_graph`` off and on, from the same seed, at the full
    profile's settings: seconds, the largest parameter difference relative to the
    parameter's scale, and the final losses and ACC of each."""
    from dcl_lib.methods.clustergan import train_clustergan

    out = {"variant": "check", "iters": iters}
    nets = {}
    for graph in (False, True):
        cfg = dataclasses.replace(ClusterGANConfig.for_profile("full"), iterations=iters,
                                  eval_every=iters, cuda_graph=graph)
        sync()
        t = time.perf_counter()
        G, D, E, hist = train_clustergan(X, cfg, 0, DEVICE, y=Y, verbose=False)
        sync()
        key = "graph" if graph else "eager"
        out[f"{key}_s"] = time.perf_counter() - t
        out[f"{key}_losses"] = {k: v[-1] for k, v in hist.series.items() if k.startswith("loss/")}
        out[f"{key}_acc"] = hist.last("acc")
        nets[key] = [p.detach().float() for m in (G, D, E) for p in m.parameters()]
    out["max_rel_param_diff"] = max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))
                                    for a, b in zip(nets["eager"], nets["graph"]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/benchmarks")
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--deadline-s", type=float, default=200.0)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--check", action="store_true",
                   help="the library's loop, CUDA graph off and on (5 and 300 iterations), "
                        "then 3 concurrent graph runs at batch 64")
    p.add_argument("--one", help="measure one variant and print it as JSON (for the "
                                 "concurrent runs)")
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    global Y
    data = load_dataset("mnist", split="all")
    X, Y = data.x.to(DEVICE), data.y
    if args.one:
        print(json.dumps(measure(args.one, X, args.batch_size, args.iters)))
        return
    start = time.perf_counter()
    rec = {"device": device_name(torch.device(DEVICE)), "torch": torch.__version__,
           "git_commit": git_commit(), "n_images": len(X), "runs": [], "errors": {}}
    path = Path(args.out) / ("clustergan_graph_check.json" if args.check
                             else "clustergan_gpu_speed.json")
    plan = [("eager", 256), ("eager", 64), ("graph", 256), ("graph", 64), ("tf32", 256),
            ("concurrent", 256), ("compile", 256)]
    if args.check:
        plan = [("check", 5), ("check", 300), ("concurrent-graph", 64)]
    if DEVICE == "cpu":
        plan = [("check", 3)] if args.check else [("eager", 64)]
    for variant, bs in plan:
        if time.perf_counter() - start > args.deadline_s:
            rec["errors"][f"{variant}-{bs}"] = "not run: deadline"
            continue
        try:
            if variant == "check":
                runs = [check(X, bs)]
            elif variant == "concurrent-graph":
                runs = [concurrent("graph", 3, bs, args.iters)]
            elif variant == "concurrent":
                runs = [concurrent(v, 3, bs, args.iters) for v in ("eager", "graph")]
            else:
                runs = [measure(variant, X, bs, args.iters)]
            for r in runs:
                print(json.dumps(r), flush=True)
            rec["runs"] += runs
        except Exception as exc:  # a variant that fails is recorded, the others still run
            rec["errors"][f"{variant}-{bs}"] = f"{type(exc).__name__}: {exc}"[:500]
            print(f"{variant}-{bs} failed: {exc}", flush=True)
        rec["wall_s"] = time.perf_counter() - start
        write_json(path, rec)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
