"""The book's results, read from ``results/**/*.json`` (never typed): tables per dataset
and profile with mean ± sd over seeds beside the papers' figures, accuracy against wall
time, the checkpoint re-evaluation, and the README's generated block.

    python -m dcl_lib results            # print the tables
    python -m dcl_lib results --readme   # rewrite the README's results block and figure
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PAPER", "EXPECTED_SEEDS", "RETIRED_FIELDS", "ADDED_FIELDS", "Record", "load_records",
           "summary_rows", "markdown_table", "html_table", "plot_acc_vs_time", "reevaluate",
           "config_drift", "readme_block", "update_readme", "run_interval", "concurrent_runs",
           "schedule", "paper_comparison", "KEPT_VARIANT_CHECKPOINTS", "MAX_FILE_BYTES",
           "MAX_RESULTS_BYTES", "drop_checkpoint", "prune_checkpoints", "share_checkpoint_entry",
           "requantize_entry", "save_labels", "run_labels", "acc_at", "time_to"]

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_SEEDS = (0, 1, 2)  # every full-profile row is a mean over these

# The papers' MNIST figures, the one typed table of the book.  "reported": read in the
# paper's abstract or the official code's README; "unconfirmed": from the source documents
# (the original posters and slides the book started from, numbered 000-004) or recalled,
# not checked against the paper's full text (shared/reference/method_cards.md says which is
# which).  A figure is printed as its source gives it ("<metric>_sd": the spread it
# gives, "<metric>_decimals" its digits where :g would drop a 0); "protocol" says on which
# images and with which conventions the paper measured, where that is known: where it is
# not the book's, the figures are not like for like.
PAPER: dict[tuple[str, str], dict[str, Any]] = {
    ("gmm-ae", "mnist"): {"purity": 0.8617, "nmi": 0.8451, "ari": 0.7933, "status": "unconfirmed",
                          "source": "GANMM slides (source document 001), GMM on an SAE embedding",
                          "protocol": "GANMM's: 60,000 images (the LISA split's training and "
                                      "test sets); NMI probably the geometric mean"},
    ("depict", "mnist"): {"acc": 0.965, "nmi": 0.917, "status": "unconfirmed",
                          "source": "DEPICT poster (source document 002), MNIST-full",
                          "protocol": "MNIST-full: all 70,000 images, as here (the size as "
                                      "recalled, unconfirmed); NMI probably the geometric "
                                      "mean"},
    ("depict", "mnist-test"): {"acc": 0.954, "nmi": 0.915, "status": "unconfirmed",
                               "source": "recalled from the DEPICT paper's table (the method "
                                         "card; the JULE/DEPICT benchmark)",
                               "protocol": "the 10,000 MNIST test images, started from AC-PIC "
                                           "(the official code)"},
    ("depict", "usps"): {"acc": 0.964, "nmi": 0.927, "status": "unconfirmed",
                         "source": "recalled from the DEPICT paper's table (the method card; "
                                   "the JULE/DEPICT benchmark)",
                         "protocol": "USPS as JULE and DEPICT use it: 11,000 images, 1,100 per "
                                     "digit, 16x16, started from AC-PIC (the official code); "
                                     "here the 9,298 images of the Hastie set (train and test "
                                     "joined): not like for like"},
    ("clustergan", "mnist"): {"acc": 0.95, "status": "unconfirmed",
                              "source": "recalled from the paper (its best model)",
                              "purity": 0.9097, "purity_sd": 0.0398, "nmi": 0.8544,
                              "nmi_sd": 0.0361, "ari": 0.8290, "ari_sd": 0.0621,
                              **{f"{m}_status": "reported" for m in ("purity", "nmi", "ari")},
                              **{f"{m}_source": "official README, 10 runs"
                                 for m in ("purity", "nmi", "ari")},
                              **{f"{m}_decimals": 4 for m in ("purity", "nmi", "ari")},
                              "protocol": "trained on the 55,000 training images, measured on "
                                          "the 10,000 test images; the README's column "
                                          "labelled ACC is purity; the paper's figures are "
                                          "of the best of 5 models by validation purity"},
    ("ganmm", "mnist"): {"purity": 0.8908, "nmi": 0.8654, "ari": 0.8361, "status": "unconfirmed",
                         "source": "GANMM slides (source document 001), embedded",
                         "protocol": "60,000 images (the LISA split's training and test sets), "
                                     "clustered in a stacked autoencoder's 10-d embedding; NMI "
                                     "probably the geometric mean"},
    ("ae-kmeans", "mnist"): {"acc": 0.88, "status": "unconfirmed",
                             "source": "DEC-keras's README as an issue quotes it (the same "
                                       "d-500-500-2000-10 stack, mean of 10 trials, "
                                       "0.81-0.92); not checked here",
                             "protocol": "all 70,000 images"},
    ("dec", "mnist"): {"acc": 0.843, "status": "unconfirmed",
                       "source": "recalled from the DEC paper (Xie et al. 2016), Table 2",
                       "protocol": "all 70,000 images, the autoencoder pretrained layer-wise "
                                   "then end-to-end (DEC-keras, read for facts, reports 0.91 "
                                   "with end-to-end pretraining)"},
    ("dcan", "mnist"): {"acc": 0.8565, "status": "unconfirmed",
                        "source": "DCAN poster (source document 000)",
                        "protocol": "not stated in the poster"},
    ("vcami", "mnist"): {"acc": 0.995, "status": "reported", "source": "VCAMI abstract (ICPR 2020)",
                         "nmi": 0.987, "nmi_status": "unconfirmed",
                         "nmi_source": "VCAMI poster (source document 004)",
                         "protocol": "not stated in the abstract or the poster"},
}
METRICS = ("acc", "nmi", "ari", "purity")

# Config fields a committed result records but today's method no longer has, and why.
RETIRED_FIELDS: dict[str, dict[str, str]] = {
    "clustergan": {"time_budget_s": "moved to the runner (--budget-s) in the library-core rewrite; "
                                    "the committed CPU runs had none (null)"},
}
# Fields today's config has that older results lack, with the value those runs used (the
# code then had no such option and behaved as this default does).
# the autoencoder's recipe options (the runs before them trained with BCE, Adam and
# PyTorch's initialisation)
_AE_RECIPE = {"ae_loss": "bce", "ae_optimizer": "adam", "ae_momentum": 0.9, "ae_init": "torch",
              "ae_lr_schedule": "constant"}
# the mixture's extra EM start at k-means' partition (runs before it had none: 0)
ADDED_FIELDS: dict[str, dict[str, Any]] = {
    "gmm-ae": {"weight_decay": 0.0, "input_dropout": 0.2, **_AE_RECIPE, "kmeans_start": 0},
    "dcan": {**_AE_RECIPE, "gmm_kmeans_start": 0},
    "clustergan": {"arch": "conv", "cuda_graph": False, "export_generator": True},
    # the raw-pixel variant's networks (runs of the embedded variant do not use them)
    "ganmm": {"raw_z_dim": 128, "raw_hidden": 1024, "raw_channels": (64, 128), **_AE_RECIPE,
              "gmm_kmeans_start": 0},
    # the head's initial partition (runs before it existed used k-means)
    "depict": {"init": "kmeans", "init_neighbors": 20, "acpic_a": 1.0, "acpic_z": 0.01,
               # the official schedule's options (runs before them pretrained and warmed up
               # on every image for fixed epochs, with one Adam throughout)
               "holdout": 0.0, "pretrain_patience": 0, "fresh_optimizer": False},
    # the learning-rate schedule (runs before it existed kept lr constant)
    "vcami": {"lr_schedule": "constant",
              # the erasing augmentation (runs before it existed erased nothing; erase_p
              # is not read while erase is 0)
              "erase": 0, "erase_p": 0.5},
}


# ---------------------------------------------------------------------------
# What the tree keeps: a light repository
# ---------------------------------------------------------------------------

# A profile's own run keeps its weight export: the suite re-evaluates it and the chapters
# reload it.  A variant (a run with a --tag) keeps its results JSON (metrics, labels hash,
# config, the command that reproduces it) and drops its export, unless a page of the book
# or a benchmark reloads it; those are listed here with their reader.  No tracked file may
# exceed MAX_FILE_BYTES, nor the tracked results/ MAX_RESULTS_BYTES in all
# (tests/test_repository.py): an export over the cap is dropped like a variant's.
KEPT_VARIANT_CHECKPOINTS: dict[str, str] = {
    "clustergan/mnist-train-quick-seed0-long.pt": "notebooks/05_clustergan_notes.ipynb",
    "clustergan/mnist-train-quick-seed0-wide.pt": "notebooks/05_clustergan.ipynb",
    "depict/mnist-train-quick-seed0-pretrained.pt": "notebooks/04_depict.ipynb",
}
MAX_FILE_BYTES = 5_000_000
# 50 MB: room for every method's three full-profile exports (DEC's three encoders, 7.6 MB,
# took results/ past the 40 MB of before) and DEPICT's 10,000-image exports
MAX_RESULTS_BYTES = 50_000_000


def drop_checkpoint(json_path: Path, reason: str) -> dict[str, Any]:
    """Delete a run's weight export and say so in its results JSON: ``checkpoint`` becomes
    null and ``checkpoint_dropped`` records the file's name, size and sha256 and why it
    went (the run's command in the JSON makes it again)."""
    import hashlib

    json_path = Path(json_path)
    rec = json.loads(json_path.read_text())
    name = rec.get("checkpoint")
    if not name:
        raise ValueError(f"{json_path} names no checkpoint to drop")
    ck = json_path.parent / name
    data = ck.read_bytes()
    rec["checkpoint"] = None
    rec["checkpoint_dropped"] = {"name": name, "bytes": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest(), "reason": reason}
    from ._io import write_json

    write_json(json_path, rec)
    ck.unlink()
    return rec["checkpoint_dropped"]


def prune_checkpoints(root: Path = ROOT / "results") -> list[str]:
    """Apply the rule above to every results JSON under ``root``; returns what went."""
    dropped = []
    for r in load_records(root):
        name = r.data.get("checkpoint")
        if not name:
            continue
        rel = f"{r.path.parent.name}/{name}"
        size = (r.path.parent / name).stat().st_size
        if r.tag is not None and rel not in KEPT_VARIANT_CHECKPOINTS:
            reason = "a variant's export that no page of the book reloads"
        elif size > MAX_FILE_BYTES:
            reason = f"over the {MAX_FILE_BYTES / 1e6:g} MB that a tracked file may have"
        else:
            continue
        drop_checkpoint(r.path, reason)
        dropped.append(f"{rel} ({size / 1e6:.1f} MB): {reason}")
    return dropped


def share_checkpoint_entry(path: Path, key: str, source: Path) -> None:
    """Store entry ``key`` of checkpoint ``path`` once: where it equals the same entry of
    ``source`` (another committed run that trained the same network), replace it with a
    reference that :func:`dcl_lib.train.load_checkpoint` resolves and checks."""
    import os

    import torch

    from .train import SHARED_FROM, load_checkpoint, tensors_sha256

    path, source = Path(path), Path(source)
    ck = torch.load(path, map_location="cpu", weights_only=True)
    src = load_checkpoint(source)[key]
    if set(ck[key]) != set(src) or not all(torch.equal(ck[key][k], src[k]) for k in src):
        raise ValueError(f"entry {key!r} of {path} differs from that of {source}: not shared")
    ck[key] = {SHARED_FROM: os.path.relpath(source, path.parent), "key": key,
               "sha256": tensors_sha256(src)}
    from .train import save_checkpoint

    save_checkpoint(path, ck)


LABELS_SUFFIX = ".labels.npz"


def save_labels(json_path: Path, labels) -> Path:
    """Keep a run's partition beside its results JSON (``<stem>.labels.npz``, compressed
    small integers: tens of kB where an export is MB), for a page that needs a variant's
    clusters but not its networks.  Refused unless the labels hash to the run's recorded
    ``labels_sha256``: the file is the run's own partition, not one recomputed otherwise."""
    from .runner import labels_digest

    json_path = Path(json_path)
    rec = json.loads(json_path.read_text())
    labels = np.asarray(labels)
    if labels_digest(labels) != rec["labels_sha256"]:
        raise ValueError(f"these labels are not those of {json_path.name} (their sha256 differs)")
    out = json_path.with_name(json_path.stem + LABELS_SUFFIX)
    dtype = np.uint8 if labels.max() < 256 else np.int32
    np.savez_compressed(out, labels=labels.astype(dtype))
    return out


def acc_at(rec: dict[str, Any], step: int) -> float:
    """The ACC a results record's history logged at ``step`` (an epoch or a step, as the
    method logs them; VCAMI's 0 is the random network)."""
    hist = rec["history"]
    if step not in hist["step"]:
        raise ValueError(f"no evaluation at step {step} in {rec.get('path', 'this record')}")
    return hist["acc"][hist["step"].index(step)]


def time_to(rec: dict[str, Any], target: float) -> tuple[float | None, int | None]:
    """(minutes, step) of the first evaluation in a record's history with ACC >= ``target``,
    or (None, None) when none reached it."""
    hist = rec["history"]
    for s, e, a in zip(hist["seconds"], hist["step"], hist["acc"]):
        if a >= target:
            return s / 60, e
    return None, None


def run_labels(json_path: Path) -> np.ndarray:
    """A run's cluster labels: from its kept partition (:func:`save_labels`, checked
    against the recorded hash) or, failing that, its weight export (:func:`reevaluate`)."""
    from .runner import labels_digest

    json_path = Path(json_path)
    kept = json_path.with_name(json_path.stem + LABELS_SUFFIX)
    if kept.exists():
        labels = np.load(kept)["labels"].astype(np.int64)
        if labels_digest(labels) != json.loads(json_path.read_text())["labels_sha256"]:
            raise ValueError(f"{kept.name} is not the partition of {json_path.name}")
        return labels
    return reevaluate(json_path)[1]


def requantize_entry(path: Path, key: str = "encoder") -> None:
    """Store the large half-precision matrices of entry ``key`` of a committed export in
    12 bits per entry (:func:`dcl_lib.train.compact_state`), as the runner now exports
    the shared autoencoder's encoder; the suite then checks that the export still
    reproduces its run's metrics."""
    import torch

    from .train import _SCALE12, INT8_MIN_NUMEL, _int12_rows, save_checkpoint

    path = Path(path)
    ck = torch.load(path, map_location="cpu", weights_only=True)
    entry = {}
    for k, v in ck[key].items():
        if v.dtype == torch.float16 and v.dim() >= 2 and v.numel() >= INT8_MIN_NUMEL:
            entry[k], entry[k + _SCALE12] = _int12_rows(v)
        else:
            entry[k] = v
    ck[key] = entry
    save_checkpoint(path, ck)


def config_drift(rec: dict[str, Any]) -> list[str]:
    """How a record's config differs from today's method config, unexplained parts only."""
    from .methods import get_spec

    fields = get_spec(rec["method"]).config.field_types()
    saved = set(rec["config"])
    problems = []
    for f in sorted(saved - set(fields)):
        if f not in RETIRED_FIELDS.get(rec["method"], {}):
            problems.append(f"config field {f!r} no longer exists and is not listed in RETIRED_FIELDS")
    defaults = get_spec(rec["method"]).config()
    for f in sorted(set(fields) - saved):
        added = ADDED_FIELDS.get(rec["method"], {})
        if f not in added:
            problems.append(f"config field {f!r} is missing and not listed in ADDED_FIELDS")
        elif getattr(defaults, f) != added[f]:
            problems.append(f"ADDED_FIELDS says old runs used {f}={added[f]!r}, today's default is "
                            f"{getattr(defaults, f)!r}")
    return problems


@dataclass(frozen=True)
class Record:
    """One results JSON, with the fields the tables need."""

    path: Path
    method: str
    dataset: str
    profile: str
    seed: int
    tag: str | None
    data: dict[str, Any]

    @property
    def variant(self) -> str:
        return self.method + (f" [{self.tag}]" if self.tag else "")


def _tag(path: Path, rec: dict[str, Any]) -> str | None:
    stem = f"{rec['dataset']}-{rec['split']}-{rec['profile']}-seed{rec['seed']}"
    return path.stem[len(stem) + 1:] or None if path.stem.startswith(stem) else None


def load_records(root: Path = ROOT / "results") -> list[Record]:
    """Every method results JSON under ``root`` (benchmarks excluded)."""
    out = []
    for path in sorted(root.glob("*/*.json")):
        rec = json.loads(path.read_text())
        if "method" not in rec or "metrics" not in rec:
            continue  # a benchmark or a campaign summary
        out.append(Record(path, rec["method"], rec["dataset"], rec["profile"], int(rec["seed"]),
                          _tag(path, rec), rec))
    return out


def run_interval(rec: dict[str, Any]) -> tuple[float, float]:
    """(start, end) of a run in POSIX seconds: it ended when its JSON was ``created`` and
    started ``wall_time_s`` before (data loading and the final evaluation included); a
    resumed run, its last segment's ``segment_wall_s`` before."""
    from datetime import datetime

    end = datetime.fromisoformat(rec["created"].replace("Z", "+00:00")).timestamp()
    return end - float(rec.get("segment_wall_s", rec["wall_time_s"])), end


def seconds_per_seed(rec: dict[str, Any]) -> float:
    """What one seed costs from scratch: the run's wall time, plus the shared
    autoencoder's training seconds when the run took it from the model cache (a cache
    hit's wall time leaves that training out; a live training is inside it)."""
    m = rec.get("metrics", {})
    cached = bool(m.get("autoencoder_cached")) and "autoencoder_seconds" in m
    return float(rec["wall_time_s"]) + (float(m["autoencoder_seconds"]) if cached else 0.0)


def concurrent_runs(rec: dict[str, Any], records: list[Record]) -> list[Record]:
    """The other runs on the same device (by name) whose intervals overlap ``rec``'s: on a
    lent GPU the campaign runs several at once, which a run's timing should be read with.
    Only runs with a results JSON are seen (a benchmark, a killed run are not)."""
    start, end = run_interval(rec)
    out = []
    for r in records:
        if r.data is rec or r.data.get("created") == rec.get("created") and \
                r.data.get("command") == rec.get("command"):
            continue  # the run itself
        if r.data.get("device") != rec.get("device") or "created" not in r.data:
            continue
        s, e = run_interval(r.data)
        if s < end and start < e:
            out.append(r)
    return out


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "missing"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _paper(method: str, dataset: str, metric: str) -> str:
    fig = PAPER.get((method, dataset), {})
    if metric not in fig:
        return "—"
    status = fig.get(f"{metric}_status", fig["status"])
    source = fig.get(f"{metric}_source", fig["source"])
    digits = fig.get(f"{metric}_decimals")
    fmt = "g" if digits is None else f".{digits}f"  # as the source prints it
    sd = f" ± {fig[metric + '_sd']:{fmt}}" if f"{metric}_sd" in fig else ""
    return f"{fig[metric]:{fmt}}{sd} ({status}: {source})"


def _paper_short(method: str, dataset: str) -> str:
    """The paper's figures in a few characters: ``ACC 0.965†`` (†: unconfirmed)."""
    fig = PAPER.get((method, dataset), {})
    cells = []
    for m in METRICS:
        if m in fig:
            digits = fig.get(f"{m}_decimals")
            unconfirmed = fig.get(f"{m}_status", fig["status"]) == "unconfirmed"
            cells.append(f"{m.upper()} {fig[m]:{'g' if digits is None else f'.{digits}f'}}"
                         + ("†" if unconfirmed else ""))
    return ", ".join(cells) or "—"


CUT = "cut by budget"  # the variant of runs stopped by their time budget


def schedule(method: str, c: dict[str, Any]) -> tuple[str, str | None]:
    """(unit, length) of the schedule of a ``method`` run with config ``c``, the unit its
    ``stopped_at`` counts in: what each method's loop hands its time budget
    (:meth:`TrainState.checkpoint`)."""
    if method == "depict" and "pretrain_epochs" in c:  # one count over the phases
        phases = (c["pretrain_epochs"], c["warmup_epochs"], c["epochs"])
        return "epoch", f"{sum(phases)} (pretraining, warm-up, main loop: " \
            f"{' + '.join(map(str, phases))})"
    unit, field = {"clustergan": ("generator step", "iterations"),
                   "ganmm": ("iteration", "iterations"),
                   "dcan": ("fine-tuning epoch", "finetune_epochs")}.get(
        method, ("epoch", "epochs"))
    return unit, None if c.get(field) is None else str(c[field])


def _stopped(r: Record) -> str:
    unit, total = schedule(r.method, r.data.get("config", {}))
    return f"stopped at {unit} {r.data['stopped_at']}" + (f" of {total}" if total else "")


def profile_split(dataset: str, profile: str) -> str:
    """The split a profile's runs use on ``dataset`` (as the runner resolves it)."""
    from .config import DATA_PROFILES
    from .data import DATASETS

    split = DATA_PROFILES[profile].split
    native = DATASETS[dataset].splits
    return split if split in native + ("all",) else native[0]


def summary_rows(records: list[Record], dataset: str, profile: str,
                 methods: list[str] | None = None, split: str | None = None,
                 expect_seeds: bool | None = None) -> list[dict[str, Any]]:
    """One row per method variant: metrics as mean ± sd over seeds, the seeds present and
    missing, wall time, device, the paper's figure, the reproducing command.  Every
    method in ``methods`` gets a row, a missing one saying so.  Only runs on ``split``
    count (default: the profile's own, :func:`profile_split`): a run of the quick profile
    on MNIST's test images is not a row of the quick profile's table.

    A run that its time budget stopped before the end of its schedule (``stopped_at``
    set) is not a result of the profile: it goes to a row of its own, tagged
    ``[cut by budget]``, each seed with where it stopped, and its seed counts as missing
    in the method's row.  A variant's cut runs are ``[<tag>, cut by budget]``.

    Beside the printed cells (strings), a row holds what they were printed from:
    ``base`` (the method), ``tag`` (the records' tag, None for the profile), ``cut``,
    ``missing`` (the expected seeds absent from the row), and ``mean`` /
    ``sd`` per metric (the sample sd, 0 for one seed; neither for cut runs), and
    ``values`` per metric (the seeds' own values, in seed order; none for cut runs).

    ``expect_seeds``: whether a method's untagged row should hold every seed of
    ``EXPECTED_SEEDS`` and name the absent ones (default: for the full profile only; a
    variant's row, tagged, never expects them: one seed is enough for a variant)."""
    if expect_seeds is None:
        expect_seeds = profile == "full"
    rows = []
    by_variant: dict[tuple[str, str | None], list[Record]] = {}
    split = split or profile_split(dataset, profile)
    for r in records:
        # (a record that names no split, as a hand-made one in a test, counts as the split's)
        if r.dataset == dataset and r.profile == profile and r.data.get("split", split) == split:
            cut = CUT if r.data.get("stopped_at") is not None else None
            tag = ", ".join(t for t in (r.tag, cut) if t) or None
            by_variant.setdefault((r.method, tag), []).append(r)
    for m in methods or []:
        by_variant.setdefault((m, None), [])
    for (method, tag), recs in sorted(by_variant.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        recs = sorted(recs, key=lambda r: r.seed)
        is_cut = tag is not None and tag.endswith(CUT)
        seeds = [r.seed for r in recs]
        row = {"method": method + (f" [{tag}]" if tag else ""),
               "seeds": ", ".join(map(str, seeds)) or "none",
               "base": method, "tag": recs[0].tag if recs else None, "cut": is_cut,
               "missing": [], "mean": {}, "sd": {}, "values": {}}
        if is_cut:
            row["seeds"] = ", ".join(f"{r.seed} ({_stopped(r)})" for r in recs)
        if expect_seeds and tag is None:
            row["missing"] = [s for s in EXPECTED_SEEDS if s not in seeds]
            if row["missing"]:
                row["seeds"] += f" (missing {', '.join(map(str, row['missing']))})"
        for m in METRICS:
            vals = [r.data["metrics"][m] for r in recs if m in r.data["metrics"]]
            # runs cut at different points are not samples of one thing: each on its own
            row[m] = ", ".join(f"{v:.4f}" for v in vals) if is_cut else _mean_sd(vals)
            if vals and not is_cut:
                row["values"][m] = [float(v) for v in vals]
                row["mean"][m] = float(np.mean(vals))
                row["sd"][m] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        walls = [seconds_per_seed(r.data) for r in recs]
        row["wall"] = f"{np.mean(walls) / 60:.1f} min" if walls else "—"
        row["device"] = "; ".join(sorted({r.data["device"] for r in recs})) or "—"
        # how many runs shared the device with each seed's run (itself included)
        at_once = sorted({1 + len(concurrent_runs(r.data, records)) for r in recs
                          if "created" in r.data})
        row["at once"] = ("—" if not at_once else str(at_once[0]) if len(at_once) == 1
                          else f"{at_once[0]}-{at_once[-1]}")
        row["paper"] = "; ".join(f"{m.upper()} {_paper(method, dataset, m)}" for m in METRICS
                                 if _paper(method, dataset, m) != "—") or "—"
        row["command"] = recs[0].data["command"] if recs else f"python -m dcl_lib run {method} " \
            f"--dataset {dataset} --profile {profile} --seed 0 1 2"
        if len(recs) > 1:
            row["command"] = re.sub(r"--seed \d+", "--seed " + " ".join(map(str, seeds)), row["command"])
        rows.append(row)
    return rows


def paper_comparison(rows: list[dict[str, Any]], dataset: str = "mnist") -> list[dict[str, str]]:
    """One row per (method, metric) with a paper's figure in :data:`PAPER`: ours (the
    method's profile row among ``rows``, as :func:`summary_rows` gives it), the paper's,
    the gap (our mean minus the paper's figure) and the paper's protocol."""
    ours = {r["method"]: r for r in rows}
    out = []
    for (method, ds), fig in PAPER.items():
        if ds != dataset:
            continue
        row = ours.get(method, {})
        for m in METRICS:
            if m not in fig:
                continue
            mine = row.get(m, "missing")
            mean = row.get("mean", {}).get(m)
            gap = "—" if mean is None else f"{mean - fig[m]:+.4f}"
            out.append({"method": method, "metric": m.upper(), "ours": mine,
                        "paper": _paper(method, dataset, m), "gap": gap,
                        "protocol": fig.get("protocol", "—")})
    return out


def markdown_table(rows: list[dict[str, str]], columns=("method", "seeds", "acc", "nmi", "ari",
                                                         "purity", "wall", "device")) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(r[c] for c in columns) + " |\n" for r in rows)


def html_table(rows: list[dict[str, str]], columns=("method", "seeds", "acc", "nmi", "ari", "purity",
                                                     "wall", "device", "paper"),
               caption: str | None = None) -> str:
    """The same rows as an HTML table (rendered alike by Jupyter and the built book),
    with ``caption`` above it when given (escaped, as every cell is).  A column that a
    row lacks is a ``ValueError``."""
    from html import escape

    absent = sorted({c for r in rows for c in columns if c not in r})
    if absent:
        raise ValueError(f"html_table: columns {absent} are not in every row")
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(r[c])}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plot_acc_vs_time(records: list[Record], ax=None, log_x: bool = True,
                     dataset: str = "mnist", variants: bool = False,
                     splits: tuple[str, ...] = ("all", "train")):
    """ACC against time on one ``dataset`` and the book's common protocol (the full
    profile on ``all`` images, the quick one on a subset of ``train``: ``splits``); the
    other records are left out, since one colour per method would otherwise mix data
    sets (DEPICT's MNIST-test runs cluster 10,000 other images).  Each run that logs its ACC during training
    draws its curve (time since the run started), ending at its final ACC at its wall
    time (data loading and the final evaluation included: for DEPICT's pretrained variant
    that last point is k-means on the codes); a run that logs no curve is that one point.
    Solid: full profile, dashed: quick.  One colour per method; a run its time budget
    stopped is labelled ``[cut by budget]``.  ``variants=False`` (the default) draws the
    profiles' runs only, not the tagged variants; the legend sits right of the axes."""
    import matplotlib.pyplot as plt

    from .methods import method_names

    ax = ax or plt.subplots(figsize=(6.5, 3.6))[1]
    order = {m: k for k, m in enumerate(method_names())}
    for r in (r for r in records if r.dataset == dataset and r.data.get("split") in splits
              and (variants or r.tag is None)):
        c = f"C{order.get(r.method, len(order)) % 10}"
        h = r.data.get("history") or {}
        cut = f" [{CUT}]" if r.data.get("stopped_at") is not None else ""
        label = f"{r.variant}{cut} ({r.profile}, {r.data['device'].split(' (')[0]})"
        style = "--" if r.profile == "quick" else "-"
        # a seed's time from scratch: a cached autoencoder's training comes first
        t_end, a_end = seconds_per_seed(r.data), r.data["metrics"]["acc"]
        t0 = t_end - r.data["wall_time_s"]
        if h.get("seconds") and h.get("acc") and any(a is not None for a in h["acc"]):
            t = [t0 + s for s, a in zip(h["seconds"], h["acc"]) if a is not None] + [t_end]
            a = [a for a in h["acc"] if a is not None] + [a_end]
            ax.plot(t, a, style, color=c, alpha=0.8 if not cut else 0.4, label=label)
        else:
            ax.plot([t_end], [a_end], "o" if r.profile == "full" else "s", color=c,
                    label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel="time since the run started (s)", ylabel=f"ACC ({dataset})")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    return ax


def reevaluate(json_path: Path, device: str = "cpu") -> tuple[dict[str, float], np.ndarray]:
    """Load a committed weight export (CPU, ``weights_only=True``), relabel the data it
    clustered and return (metrics, labels)."""
    import torch

    from .data import load_dataset
    from .methods import get_spec
    from .metrics import evaluate
    from .train import load_checkpoint

    rec = json.loads(Path(json_path).read_text())
    if not rec.get("checkpoint"):
        raise ValueError(f"{json_path} names no checkpoint")
    ck_path = Path(json_path).parent / rec["checkpoint"]
    if not ck_path.exists():
        raise FileNotFoundError(f"{json_path} names the checkpoint {ck_path.name}, which is missing")
    spec = get_spec(rec["method"])
    if spec.reload is None:
        raise ValueError(f"method {rec['method']} cannot reload a checkpoint")
    ck = load_checkpoint(ck_path)
    cfg = spec.config.from_dict(ck.get("config", rec["config"]), strict=False)
    data = load_dataset(rec["dataset"], rec["split"], subset=rec["subset"], seed=0)
    labels = spec.reload(ck, data, cfg, torch.device(device))
    return evaluate(data.y, labels), np.asarray(labels)


# ---------------------------------------------------------------------------
# The README's generated block
# ---------------------------------------------------------------------------

START, END = "<!-- results:start (python -m dcl_lib results --readme) -->", "<!-- results:end -->"
FIGURE = "book/figures/acc_vs_time.png"


def speed_line(root: Path = ROOT) -> str:
    """k-means' and EM's speed against scikit-learn's, each ratio from one committed
    benchmark run (``benchmarks/kmeans_vs_sklearn.py``, ``benchmarks/gmm_vs_sklearn.py``);
    empty when the files are missing."""
    bench = root / "results" / "benchmarks"
    parts = []
    km = bench / "kmeans_pixels.json"
    if km.exists():
        r = json.loads(km.read_text())
        parts.append(f"k-means on {r['n']:,} × {r['d']} MNIST pixels ({r['n_init']} restarts, "
                     f"{r['machine']['threads']} threads) {r['time_ratio_ours_over_sklearn']:.2f}× its time")
    em = bench / "gmm_em_cpu_n1000000.json"
    if em.exists():
        r = json.loads(em.read_text())
        parts.append(f"EM, full covariances, N = {r['n']:,}, d = {r['d']}, K = {r['k']}: "
                     f"{r['time_ratio_ours_over_sklearn']:.2f}× per iteration")
        gpu = bench / "gmm_em_cuda_n1000000.json"
        if gpu.exists():
            g = json.loads(gpu.read_text())
            parts.append(f"on one {g['device']}, 1/{r['sklearn_s_per_iter'] / g['ours_s_per_iter']:.0f} "
                         "of scikit-learn's CPU time")
    if not parts:
        return ""
    where = json.loads(em.read_text())["device"] if em.exists() else "a CPU"
    return f"\nSpeed against scikit-learn, each measured alone on {where}: " + "; ".join(parts) + ".\n"


def readme_block(root: Path = ROOT) -> str:
    """The README's results section: one line per method and profile (full profile on
    MNIST with the paper's figure, then the CPU quick-profile runs), generated from the
    results files."""
    from .methods import method_names

    recs = load_records(root / "results")
    # one row per method and profile: the profile's own runs (a run cut by its budget on
    # a row of its own, flagged); the variants live in the results chapter and the notes
    full = [r for r in summary_rows(recs, "mnist", "full", method_names()) if r["tag"] is None]
    quick = [r for r in summary_rows(recs, "mnist", "quick") if r["tag"] is None]
    for r in full:
        r["paper"] = _paper_short(r["base"], "mnist")
    cols = ("method", "seeds", "acc", "nmi", "ari", "wall", "device")
    return (f"{START}\nFull profile, MNIST (70,000 images), mean ± sd over seeds, and the "
            "paper's figure († unconfirmed; the protocols: the results chapter):\n\n"
            + markdown_table(full, cols + ("paper",))
            + "\nQuick profile (10,000 MNIST training images, seed 0, CPU):\n\n"
            + markdown_table(quick, cols)
            + "\nDEPICT's quick row starts from AC-PIC on a committed, untimed pretrained "
            "network; its full row, from k-means.\n"
            + speed_line(root)
            + f"\n![ACC against training time]({FIGURE})\n\n"
            "The paper's figures and the command of every row: `notebooks/07_results.ipynb`.\n"
            + END)


def update_readme(root: Path = ROOT, figure: bool = True) -> bool:
    """Rewrite the README's block (and the figure); True if the block changed."""
    readme = root / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"README.md has no '{START}' ... '{END}' block")
    a, b = text.index(START), text.index(END) + len(END)
    new = text[:a] + readme_block(root) + text[b:]
    changed = new != text
    readme.write_text(new)
    if figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ax = plot_acc_vs_time(load_records(root / "results"))
        (root / FIGURE).parent.mkdir(parents=True, exist_ok=True)
        ax.figure.tight_layout()
        ax.figure.savefig(root / FIGURE, dpi=110, bbox_inches="tight")
        plt.close(ax.figure)
    return changed


def main(args) -> int:
    if getattr(args, "prune_checkpoints", False):
        for line in prune_checkpoints():
            print(f"dropped {line}")
        return 0
    if args.readme:
        update_readme()
        print(f"README.md results block and {FIGURE} rewritten")
        return 0
    from .methods import method_names

    recs = load_records()
    for dataset in sorted({r.dataset for r in recs} | {"mnist"}):
        for profile in ("full", "quick"):
            rows = summary_rows(recs, dataset, profile, method_names() if (dataset, profile) ==
                                ("mnist", "full") else None)
            if rows:
                print(f"\n{dataset}, {profile} profile\n" + markdown_table(rows))
    return 0
