"""Benchmark: dcl_lib's k-means against scikit-learn's, on real data.

Two problems: all 70,000 MNIST images as 784 pixels in [0, 1] (the introduction's
baseline), and the 10,000 images of the quick profile as the 10-d codes of the
committed quick autoencoder (``results/gmm-ae/mnist-train-quick-seed0.pt``: the codes
the GMM, GANMM and DCAN chapters cluster).  For each: both estimators with 10 restarts
and the same seed, timed alone in this process; then both from the same k-means++
starts (ours, given to scikit-learn as ``init``), so the optima can be compared start by
start.  Inertias are recomputed in float64 from each estimator's labels and centres.
A script, not a test: timings depend on the machine.

    python benchmarks/kmeans_vs_sklearn.py                 # both problems
    python benchmarks/kmeans_vs_sklearn.py --problem codes

Files: results/benchmarks/kmeans_<problem>.json
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.cluster import KMeans as SKKMeans

from dcl_lib._io import write_json
from dcl_lib.data import load_dataset
from dcl_lib.methods.kmeans import KMeans, NearestCentre, kmeans_plusplus
from dcl_lib.metrics import cluster_acc
from dcl_lib.runner import git_commit
from dcl_lib.train import device_name

ROOT = Path(__file__).resolve().parents[1]


def problem(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    if name == "pixels":
        data = load_dataset("mnist", "all")
        return data.flat().numpy(), data.y.numpy(), "MNIST, all 70,000 images, 784 pixels"
    from dcl_lib.methods.autoencoder import AutoencoderConfig, codes_from_checkpoint
    from dcl_lib.train import load_checkpoint

    ck = load_checkpoint(ROOT / "results" / "gmm-ae" / "mnist-train-quick-seed0.pt")
    cfg = AutoencoderConfig.from_dict(ck["config"], strict=False)
    data = load_dataset("mnist", "train", subset=10_000, seed=0)
    Z = codes_from_checkpoint(ck["encoder"], data.flat(), cfg)
    return Z.numpy(), data.y.numpy(), ("MNIST, the quick profile's 10,000 images as the 10-d "
                                       "codes of the committed quick autoencoder")


def inertia(X: np.ndarray, labels: np.ndarray, centres: np.ndarray) -> float:
    X = X.astype(np.float64)
    return float(((X - centres.astype(np.float64)[labels]) ** 2).sum())


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(name: str, k: int, n_init: int, seed: int) -> dict:
    X, y, what = problem(name)
    sk, t_sk = timed(lambda: SKKMeans(k, n_init=n_init, random_state=seed, algorithm="lloyd").fit(X))
    ours, t_ours = timed(lambda: KMeans(k, n_init=n_init, random_state=seed, device="cpu").fit(X))
    rec = {"problem": what, "n": int(X.shape[0]), "d": int(X.shape[1]), "k": k, "n_init": n_init,
           "seed": seed, "input_dtype": str(X.dtype),
           "ours": {"wall_s": t_ours, "inertia": inertia(X, ours.labels_, ours.cluster_centers_),
                    "acc": cluster_acc(y, ours.labels_), "n_iter_best": int(ours.n_iter_)},
           "sklearn": {"wall_s": t_sk, "inertia": inertia(X, sk.labels_, sk.cluster_centers_),
                       "acc": cluster_acc(y, sk.labels_), "n_iter_best": int(sk.n_iter_),
                       "algorithm": "lloyd"}}
    rec["time_ratio_ours_over_sklearn"] = t_ours / t_sk
    rec["inertia_rel_diff_ours_minus_sklearn"] = (rec["ours"]["inertia"] - rec["sklearn"]["inertia"]) \
        / rec["sklearn"]["inertia"]
    # the same starts: our k-means++ seeds, then Lloyd by each
    X64 = torch.as_tensor(X, dtype=torch.float64)
    near = NearestCentre(X64)
    g = torch.Generator().manual_seed(seed)
    per_start = []
    for _ in range(n_init):
        C0 = kmeans_plusplus(X64, k, g, x_sq=near.x_sq).numpy()
        a, t_a = timed(lambda: KMeans(k, n_init=1, device="cpu").fit(X, init=C0))
        b, t_b = timed(lambda: SKKMeans(k, init=C0.astype(X.dtype), n_init=1, algorithm="lloyd").fit(X))
        per_start.append({"ours_inertia": inertia(X, a.labels_, a.cluster_centers_),
                          "sklearn_inertia": inertia(X, b.labels_, b.cluster_centers_),
                          "ours_s": t_a, "sklearn_s": t_b, "ours_iter": int(a.n_iter_),
                          "sklearn_iter": int(b.n_iter_)})
    rec["same_starts"] = per_start
    rec["same_starts_ours_lower_or_equal"] = sum(
        r["ours_inertia"] <= r["sklearn_inertia"] * (1 + 1e-9) for r in per_start)
    rec["machine"] = {"cpu": platform.processor() or platform.machine(),
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "sklearn": sklearn.__version__, "numpy": np.__version__}
    rec["git_commit"] = git_commit()
    rec["device"] = device_name(torch.device("cpu"))
    return rec


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problem", nargs="+", default=["pixels", "codes"], choices=["pixels", "codes"])
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--n-init", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    a = p.parse_args(argv)
    out = []
    for name in a.problem:
        rec = run(name, a.k, a.n_init, a.seed)
        print(f"{name}: ours {rec['ours']['wall_s']:.1f} s, scikit-learn {rec['sklearn']['wall_s']:.1f} s "
              f"(ratio {rec['time_ratio_ours_over_sklearn']:.2f}); inertia {rec['ours']['inertia']:.1f} "
              f"vs {rec['sklearn']['inertia']:.1f}; ACC {rec['ours']['acc']:.4f} vs "
              f"{rec['sklearn']['acc']:.4f}; same starts: ours lower or equal in "
              f"{rec['same_starts_ours_lower_or_equal']} of {len(rec['same_starts'])}")
        print(f"-> {write_json(Path(a.out) / f'kmeans_{name}.json', rec)}")
        out.append(rec)
    return out


if __name__ == "__main__":
    main()
