"""VCAMI's ablation (the poster's Table 2) measured on MNIST in this library's code, on a
CPU.  (A script, not a test.)

Each objective of ``dcl_lib.methods.vcami.OBJECTIVES`` trains from scratch with the quick
profile's config and ``--epochs`` epochs (default 10, what the committed files ran; the
profile itself now stops at 8 to keep chapter 06 within its minutes), everything else
equal:

* ``dmi``: L_GMI + lam L_LMI (Deep InfoMax; the clusters from the head, which no term trains
  in this case: the row shows what the continuous MI terms alone give the head);
* ``cmi``: alpha L_CMI (IIC);
* ``ami``: L_AMI = L_GMI + lam L_LMI + alpha L_CMI;
* ``vcami``: L_VCAMI = L_AMI + beta L_GMM + gamma L_REG.

``dmi`` has no term that shapes the head, so its clusters are also read from k-means on
its codes (``kmeans_codes``), the usual way to cluster a DIM representation.  k-means on
the pixels of the same images is recorded as the baseline.

Writes ``results/benchmarks/vcami_ablation.json`` (per objective and seed: the final ACC /
NMI / ARI of the head and, for ``vcami``, of the latent mixture; the ACC trace; the final
cluster sizes; the events; wall time).

    DCL_DATA_MIRROR=../shared/data python benchmarks/vcami_ablation.py --seeds 0 1
    DCL_DATA_MIRROR=../shared/data python benchmarks/vcami_ablation.py --dataset fashion-mnist \\
        --seeds 0 --objectives vcami --name vcami_fashion
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from dcl_lib._io import write_json
from dcl_lib.data import load_dataset
from dcl_lib.methods.kmeans import KMeans
from dcl_lib.methods.vcami import OBJECTIVES, VCAMIConfig, encode_eval, outputs_of, train_vcami
from dcl_lib.metrics import evaluate
from dcl_lib.runner import _versions, git_commit
from dcl_lib.train import device_name


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/benchmarks")
    p.add_argument("--name", default="vcami_ablation")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--n", type=int, default=5000, help="training images (a seeded subset)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES))
    p.add_argument("--merge", action="store_true",
                   help="keep the other objectives of an existing file (each run records its "
                        "own commit)")
    args = p.parse_args(argv)
    data = load_dataset(args.dataset, "train", subset=args.n, seed=0)
    X, y = data.x.float(), torch.as_tensor(data.y)
    cfg = dataclasses.replace(VCAMIConfig.for_profile("quick"), epochs=args.epochs)
    km = KMeans(10, n_init=10, random_state=0).fit(data.flat())
    path = Path(args.out) / f"{args.name}.json"
    old = json.loads(path.read_text()) if args.merge and path.exists() else None
    rec = {"device": device_name(torch.device("cpu")), "threads": torch.get_num_threads(),
           "git_commit": git_commit(), "versions": _versions(),
           "data": f"{args.dataset} train, {len(data)} images (seeded subset, seed 0)",
           "seeds": args.seeds, "config": dataclasses.asdict(cfg),
           "kmeans_pixels": evaluate(data.y, km.labels_),
           "objectives": {o: {"terms": list(OBJECTIVES[o]), "runs": {}} for o in args.objectives}}
    for seed in args.seeds:
        for name, v in rec["objectives"].items():
            t = time.perf_counter()
            nets, hist = train_vcami(X, dataclasses.replace(cfg, objective=name), seed, y=y,
                                     verbose=False)
            wall_s = time.perf_counter() - t
            head, mixed = (lab.numpy() for lab in outputs_of(nets, X))
            run = {"wall_s": wall_s, "git_commit": rec["git_commit"],
                   "threads": rec["threads"],
                   "final": evaluate(data.y, head),
                   "sizes": hist.series["sizes"][-1],
                   **{k: hist.series.get(k) for k in ("step", "acc", "nmi", "events")}}
            if "gmm" in v["terms"]:
                run["final_mixture"] = evaluate(data.y, mixed)
            if name == "dmi":
                Z = encode_eval(nets, X)[0]
                run["kmeans_codes"] = evaluate(
                    data.y, KMeans(10, n_init=10, random_state=seed).fit(Z).labels_)
            v["runs"][str(seed)] = run
            print(f"{args.dataset} seed {seed} {name:6s} ACC {run['final']['acc']:.4f} "
                  f"({run['wall_s']:.0f} s)", flush=True)
    if old is not None:  # the objectives not rerun, as they were
        for name, v in old["objectives"].items():
            if name not in rec["objectives"]:
                for run in v["runs"].values():
                    run.setdefault("git_commit", old["git_commit"])
                    run.setdefault("threads", old["threads"])
                rec["objectives"][name] = v
        rec["objectives"] = {o: rec["objectives"][o] for o in OBJECTIVES if o in rec["objectives"]}
    write_json(path, rec)
    print("wrote", path)


if __name__ == "__main__":
    main()
