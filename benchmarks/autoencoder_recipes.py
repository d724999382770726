"""What each change to the shared autoencoder's recipe buys: k-means on the codes of all
70,000 MNIST images, measured along the training (issue 37's search for a recipe that
reaches the published embedding quality on 2 CPU cores).

Each recipe is the library's own training (``cached_autoencoder`` with the config fields
below; an ``on_epoch`` hook clusters the codes every ``--every`` epochs with k-means, 10
restarts, its own generator, so the training is the one a run would do).  One seed per
recipe unless asked; the JSON keeps every recipe's trace (epoch, seconds, ACC,
reconstruction loss), its config and the machine.  A script, not a test.

    python benchmarks/autoencoder_recipes.py --recipes dec-keras adam-bce
    python benchmarks/autoencoder_recipes.py --recipes dec-keras --seeds 0 1 2 --epochs 300
    python benchmarks/autoencoder_recipes.py --recipes adam-bce --seeds 0 1 2 --cached

``--cached`` measures a network that the model cache already holds (a run with the same
recipe, seed and machine trained it) at its last epoch only, without training it again;
its row says so (``from_cache``) and its seconds are those of the training that wrote the
cache file.  A recipe the cache does not hold is trained live, as without the flag.

Writes results/benchmarks/autoencoder_recipes.json (recipes already there are kept, a
rerun of one replaces it).

``--quick`` measures the same recipes at the quick profile's size: its narrower stack
(``hidden`` of the quick profile) on its 10,000 training images, each recipe's epochs
replaced by ``--epochs``, into results/benchmarks/autoencoder_recipes_quick.json (what
the quick profile's recipe was chosen from, issue 37):

    python benchmarks/autoencoder_recipes.py --quick --recipes adam-bce dec-keras --epochs 100 --every 10
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from dcl_lib._io import write_json
from dcl_lib.config import DATA_PROFILES
from dcl_lib.data import load_dataset
from dcl_lib.methods.autoencoder import AutoencoderConfig, cached_autoencoder, encode
from dcl_lib.methods.kmeans import KMeans
from dcl_lib.metrics import cluster_acc
from dcl_lib.runner import _versions, git_commit
from dcl_lib.train import device_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks" / "autoencoder_recipes.json"
OUT_QUICK = ROOT / "results" / "benchmarks" / "autoencoder_recipes_quick.json"
# the full profile before issue 37 (the config's defaults): every recipe changes it
BASE = AutoencoderConfig()
# name -> the fields that differ from BASE (what each one changes)
RECIPES = {
    "adam-bce": {},  # Adam 1e-3, binary cross-entropy, input dropout 0.2, 100 epochs (the
                     # full profile before issue 37; named "current" until then)
    "dec-keras": {"ae_loss": "mse", "ae_optimizer": "sgd", "lr": 1.0, "ae_momentum": 0.9, "ae_init": "dec",
                  "input_dropout": 0.0, "epochs": 300},
    "adam-mse": {"ae_loss": "mse", "ae_init": "dec", "input_dropout": 0.0},
    # the same with the learning rate falling as a cosine to 0 over the 100 epochs
    "adam-mse-cosine": {"ae_loss": "mse", "ae_init": "dec", "input_dropout": 0.0,
                        "ae_lr_schedule": "cosine"},
    "adam-bce-nodrop": {"input_dropout": 0.0},
    "sgd-bce": {"ae_optimizer": "sgd", "lr": 1.0, "ae_momentum": 0.9, "ae_init": "dec",
                "input_dropout": 0.0, "epochs": 300},
}
# for the quick profile's size (--quick): DEC-keras' recipe with more, smaller steps, and
# with the full profile's wider stack
RECIPES["dec-keras-batch64"] = {**RECIPES["dec-keras"], "batch_size": 64}
RECIPES["dec-keras-wide"] = {**RECIPES["dec-keras"], "hidden": (500, 500, 2000)}
# the full profile is DEC-keras' recipe since issue 37: its runs share this one's networks
# (the model cache's key is the config) and its row is theirs
assert dataclasses.replace(BASE, **RECIPES["dec-keras"]) == AutoencoderConfig.for_profile("full")


COMMIT = git_commit()  # the code that runs: read at the start (the tree may change later)


def run(name: str, seed: int, every: int, epochs: int | None, X, y,
        save=lambda row: None, base: AutoencoderConfig = BASE) -> dict:
    changes = dict(RECIPES[name])
    if epochs is not None:
        changes["epochs"] = epochs
    cfg = dataclasses.replace(base, **changes)
    trace = []
    t0 = time.perf_counter()

    def measure(epoch, model):
        if epoch == 1 or epoch % every == 0 or epoch == cfg.epochs:
            Z = encode(model, X).double()
            km = KMeans(10, n_init=10, random_state=seed).fit(Z)
            trace.append({"epoch": epoch, "seconds": time.perf_counter() - t0,
                          "acc": cluster_acc(y, km.labels_)})
            print(f"{name} seed {seed} epoch {epoch}: ACC {trace[-1]['acc']:.4f}, "
                  f"{trace[-1]['seconds'] / 60:.1f} min", flush=True)
            # the trace so far, on disk: a run cut short keeps what it measured
            save({"recipe": name, "seed": seed, "changes": changes, "trace": list(trace),
                  "complete": False, "git_commit": COMMIT})

    # trained live (DCL_RETRAIN=1, set in main) and left in the model cache, so the runs
    # that cluster these codes on this machine (ae-kmeans, dec, gmm-ae, dcan, ganmm with
    # the same recipe) take this network instead of training it again
    model, hist = cached_autoencoder(X, cfg, seed, "cpu", verbose=False, on_epoch=measure)
    cached = hist.scalars.get("cached_from")
    if cached:  # a hit trains nothing: measure the network as the cache holds it
        t0 -= hist["seconds"][-1]  # the seconds of the training that wrote the file
        measure(cfg.epochs, model)
    for row in trace:
        row["recon"] = hist["loss/recon"][row["epoch"] - 1]
    return {"recipe": name, "seed": seed, "changes": changes, "config": dataclasses.asdict(cfg),
            "trace": trace, "final_acc": trace[-1]["acc"], "wall_s": time.perf_counter() - t0,
            "git_commit": COMMIT, "threads": torch.get_num_threads(), "complete": True,
            **({"from_cache": Path(cached).name} if cached else {})}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=["dec-keras"], choices=sorted(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--every", type=int, default=25, help="epochs between two measurements")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--cached", action="store_true",
                   help="measure a cached network's last epoch instead of training it again")
    p.add_argument("--quick", action="store_true",
                   help="the quick profile's size: its stack on its 10,000 training images")
    a = p.parse_args(argv)
    if not a.cached:
        os.environ["DCL_RETRAIN"] = "1"  # measure a training, never a cached network
    if a.quick:
        base = dataclasses.replace(BASE, hidden=AutoencoderConfig.for_profile("quick").hidden)
        prof, out = DATA_PROFILES["quick"], OUT_QUICK
        data = load_dataset("mnist", prof.split, subset=prof.subset, seed=0)
    else:
        base, out, data = BASE, OUT, load_dataset("mnist", "all")
    X, y = data.flat(), data.y.numpy()
    rec = json.loads(out.read_text()) if out.exists() else {"runs": []}
    def save(row):
        rec["runs"] = [r for r in rec["runs"] if (r["recipe"], r["seed"]) != (row["recipe"], row["seed"])]
        rec["runs"].append(row)
        rec.update(device=device_name(torch.device("cpu")), threads=torch.get_num_threads(),
                   versions=_versions(), git_commit=COMMIT)
        write_json(out, rec)

    for name in a.recipes:
        for seed in a.seeds:
            save(run(name, seed, a.every, a.epochs, X, y, save, base))


if __name__ == "__main__":
    main()
