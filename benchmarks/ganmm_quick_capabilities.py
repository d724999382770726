"""GANMM's quick run against the Gaussian mixture on the same codes, as chapter 02 runs it
(seed 0, the quick profile's 10,000 images, its autoencoder and GMM), once per CPU
capability: the machine's own, AVX2 and the default (no vector extensions).  PyTorch
rounds sums differently on each; the question is whether the chapter's comparison (GANMM's
purity against the GMM's on the same codes) keeps its order.  (A script, not a test.)

Each capability runs in its own process (``ATEN_CPU_CAPABILITY`` is read at start-up); the
autoencoder is trained, or loaded from the cache, per capability, as the chapter would.
A fourth run, on the machine's own capability, gives GANMM four times the quick profile's
ε-EM iterations (``"long": true``): does a longer loop on these 10,000 images close the
gap to the GMM?  Every row keeps GANMM's start (the k-means partition it begins from) and
its purity at each evaluation.

    DCL_DATA_MIRROR=../shared/data python benchmarks/ganmm_quick_capabilities.py

Writes ``results/benchmarks/ganmm_quick_capabilities.json`` (read by the GANMM chapter).
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks" / "ganmm_quick_capabilities.json"
CAPABILITIES = (None, "avx2", "default")  # None: the machine's own


LONG = 4  # the fourth run's ε-EM iterations, in multiples of the quick profile's


def one_run(long: bool = False) -> dict:
    import torch

    from dcl_lib.chapter import setup
    from dcl_lib.methods import ganmm as GM
    from dcl_lib.methods.autoencoder import cached_autoencoder, encode
    from dcl_lib.methods.gmm import fit_mixture
    from dcl_lib.metrics import evaluate

    t0 = time.perf_counter()
    ch = setup(seed=0, profile="quick", device="cpu", quiet=True)
    cfg = ch.config(GM.GANMMConfig)
    if long:
        cfg = ch.config(GM.GANMMConfig, iterations=LONG * cfg.iterations)
    data = ch.data("mnist")
    ae, _ = cached_autoencoder(data.flat(), cfg.autoencoder(), 0, "cpu", verbose=False)
    Z = encode(ae, data.flat())
    gmm = fit_mixture(Z.double(), cfg.n_clusters, covariance_type="full",
                      n_init=cfg.gmm_n_init, kmeans_start=cfg.gmm_kmeans_start,
                      random_state=0, device="cpu")
    model = GM.GANMM(cfg.n_clusters, cfg, random_state=0, device="cpu")
    model.fit_embedding(Z, ae.decoder, y_eval=data.y)
    h = model.history_
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "long": long,
            "iterations": cfg.iterations, "n_images": len(data),
            "ganmm": evaluate(data.y, model.labels_), "gmm": evaluate(data.y, gmm.labels_),
            "start": {k: h.scalars[f"start_{k}"] for k in GM.START_METRICS},
            "trace": {"step": h.series["step"], "purity": h.series["purity"]},
            "seconds": time.perf_counter() - t0}


def main() -> None:
    import torch

    from dcl_lib._io import write_json
    from dcl_lib.runner import _versions, git_commit
    from dcl_lib.train import device_name

    runs = []
    for cap, flag in [(c, "--one") for c in CAPABILITIES] + [(None, "--long")]:
        env = dict(os.environ, DCL_PROGRESS="0")
        env.pop("ATEN_CPU_CAPABILITY", None)
        if cap:
            env["ATEN_CPU_CAPABILITY"] = cap
        out = subprocess.run([sys.executable, __file__, flag], env=env, check=True,
                             capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"{row['cpu_capability']}, {row['iterations']} iterations: GANMM purity "
              f"{row['ganmm']['purity']:.4f} from its start's {row['start']['purity']:.4f}, "
              f"GMM on the same codes {row['gmm']['purity']:.4f} ({row['seconds']:.0f} s)",
              flush=True)
        runs.append(row)
    write_json(OUT, {"runs": runs, "seed": 0, "profile": "quick",
                     "device": device_name(torch.device("cpu")),
                     "threads": torch.get_num_threads(), "versions": _versions(),
                     "git_commit": git_commit()})


if __name__ == "__main__":
    if sys.argv[1:] in (["--one"], ["--long"]):
        print(json.dumps(one_run(long=sys.argv[1] == "--long")))
    else:
        main()
