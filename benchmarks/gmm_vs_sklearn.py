"""Benchmark: dcl_lib's EM against scikit-learn's GaussianMixture.

Same data, same starting parameters, same number of EM iterations (tol=0), one
covariance type per run.  Prints and writes the time per iteration of both and
the final lower bounds (which must agree).  A script, not a test: timings depend
on the machine.

    python benchmarks/gmm_vs_sklearn.py --n 100000                 # CPU vs CPU, full
    python benchmarks/gmm_vs_sklearn.py --n 100000 --covariance-type tied
    python benchmarks/gmm_vs_sklearn.py --n 1000000 --device cuda  # GPU vs CPU

Files: gmm_em_<device>_n<N>.json for full covariances, gmm_em_<device>_n<N>_<type>.json
for the other three.
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture as SKGaussianMixture

from dcl_lib._io import write_json
from dcl_lib.methods.gmm import GaussianMixture, _chunk_size
from dcl_lib.runner import git_commit
from dcl_lib.train import device_name, get_device


def synthetic(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """A K-component Gaussian mixture with random full covariances (benchmark data only)."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, d))
    labels = rng.integers(0, k, n)
    for j in range(k):
        A = rng.normal(size=(d, d)) / np.sqrt(d)
        idx = labels == j
        X[idx] = rng.normal(0, 3, d) + rng.normal(size=(idx.sum(), d)) @ A.T
    return X


def profile_one_iteration(X, w0, m0, C0, ct: str, dev: torch.device, top: int = 12) -> dict:
    """One EM iteration under torch.profiler: the operators with the most self time on the
    device (CUDA kernels on a GPU, CPU time on a CPU), with their calls and share."""
    from torch.profiler import ProfilerActivity, profile

    Xt = torch.as_tensor(X, device=dev)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    gm = GaussianMixture(len(w0), weights_init=w0, means_init=m0, covariances_init=C0,
                         device=dev, tol=0.0, max_iter=1, covariance_type=ct)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=acts) as prof:
            gm.fit(Xt)
            if dev.type == "cuda":
                torch.cuda.synchronize()
    attr = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events)
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return {"clock": attr, "total_ms": total / 1e3,
            "top": [{"op": e.key, "calls": e.count, "ms": getattr(e, attr) / 1e3,
                     "share": getattr(e, attr) / total} for e in events[:top]]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=50)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--covariance-type", default="full", choices=["full", "tied", "diag", "spherical"])
    p.add_argument("--skip-sklearn", action="store_true", help="only time dcl_lib")
    p.add_argument("--out", default="results/benchmarks")
    p.add_argument("--name", default=None, help="file name stem (default gmm_em_<device>_n<N>)")
    p.add_argument("--profile", action="store_true",
                   help="also profile one more iteration (torch.profiler): the operators that "
                        "take the time, by self time on the device")
    a = p.parse_args(argv)
    dev = get_device(a.device)

    X = synthetic(a.n, a.d, a.k)
    rng = np.random.default_rng(1)
    w0 = np.full(a.k, 1.0 / a.k)
    m0 = X[rng.choice(a.n, a.k, replace=False)]
    ct = a.covariance_type
    C = np.cov(X.T)
    C0 = {"full": np.stack([C] * a.k), "tied": C, "diag": np.stack([np.diag(C)] * a.k),
          "spherical": np.full(a.k, np.diag(C).mean())}[ct]
    P0 = np.linalg.inv(C0) if ct in ("full", "tied") else 1.0 / C0
    common = dict(tol=0.0, max_iter=a.iters, reg_covar=1e-6, covariance_type=ct)
    record = {"n": a.n, "d": a.d, "k": a.k, "iters": a.iters, "covariance_type": ct,
              "device": device_name(dev), "cpu": f"{platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads", "torch": torch.__version__,
              "git_commit": git_commit(),
              # rows per chunk of the E and M steps (dcl_lib.methods.gmm.CHUNK_VALUES): a
              # result measured with other chunks is outstanding for the campaign again
              "chunk_rows": _chunk_size(a.k, a.d, dev)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0 never "converges"
        # warm-up (CUDA context, kernels) on a slice, then the timed run
        GaussianMixture(a.k, weights_init=w0, means_init=m0, covariances_init=C0, device=dev,
                        tol=0.0, max_iter=1, covariance_type=ct).fit(X[: min(a.n, 20_000)])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        Xt = torch.as_tensor(X, device=dev)
        t0 = time.perf_counter()
        ours = GaussianMixture(a.k, weights_init=w0, means_init=m0, covariances_init=C0,
                               device=dev, **common).fit(Xt)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        record["ours_s_per_iter"] = (time.perf_counter() - t0) / a.iters
        record["ours_lower_bound"] = ours.lower_bound_
        if not a.skip_sklearn:
            t0 = time.perf_counter()
            sk = SKGaussianMixture(a.k, weights_init=w0, means_init=m0,
                                   precisions_init=P0, **common).fit(X)
            record["sklearn_s_per_iter"] = (time.perf_counter() - t0) / a.iters
            record["sklearn_lower_bound"] = sk.lower_bound_
            record["time_ratio_ours_over_sklearn"] = record["ours_s_per_iter"] / record["sklearn_s_per_iter"]
            record["lower_bound_rel_diff"] = abs(ours.lower_bound_ - sk.lower_bound_) / abs(sk.lower_bound_)
    if a.profile:
        record["profile"] = profile_one_iteration(X, w0, m0, C0, ct, dev)
    for key, val in record.items():
        print(f"{key:30s} {val}")
    name = a.name or f"gmm_em_{dev.type}_n{a.n}" + ("" if ct == "full" else f"_{ct}")
    print(f"-> {write_json(Path(a.out) / f'{name}.json', record)}")
    return record


if __name__ == "__main__":
    main()
