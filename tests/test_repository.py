"""The repository stays light as runs are added: no tracked file over 5 MB, the tracked
results/ under 50 MB, and a weight export tracked only where the rule of
``dcl_lib.results`` keeps it (a profile's own run, or a variant a page reloads)."""
import json
import subprocess
from pathlib import Path

import pytest

from dcl_lib.results import (KEPT_VARIANT_CHECKPOINTS, MAX_FILE_BYTES, MAX_RESULTS_BYTES,
                             drop_checkpoint, load_records, prune_checkpoints,
                             share_checkpoint_entry)
from dcl_lib.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _tracked() -> list[Path]:
    r = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout (the device machine's copy): nothing is tracked")
    return [ROOT / p for p in r.stdout.decode().split("\0") if p]


def _sizes(paths):
    return {p: p.stat().st_size for p in paths if p.is_file()}


def oversized(paths, root=ROOT, limit=MAX_FILE_BYTES):
    return sorted(str(p.relative_to(root)) for p, n in _sizes(paths).items() if n > limit)


def test_no_tracked_file_over_the_cap_and_results_under_its_total():
    tracked = _tracked()
    assert not oversized(tracked), f"tracked files over {MAX_FILE_BYTES / 1e6:g} MB"
    results = sum(n for p, n in _sizes(tracked).items() if p.parts[len(ROOT.parts)] == "results")
    assert results <= MAX_RESULTS_BYTES, (
        f"tracked results/ holds {results / 1e6:.1f} MB, over {MAX_RESULTS_BYTES / 1e6:g} MB: "
        "python -m dcl_lib results --prune-checkpoints drops what the rule does not keep")


def test_the_size_guard_sees_a_6_mb_file(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"\0" * 6_000_000)
    (tmp_path / "cap.bin").write_bytes(b"\0" * MAX_FILE_BYTES)
    assert oversized(sorted(tmp_path.iterdir()), root=tmp_path) == ["big.bin"]


def test_every_named_checkpoint_is_tracked_and_kept_by_the_rule():
    tracked = {str(p.relative_to(ROOT / "results")) for p in _tracked()
               if p.parts[len(ROOT.parts)] == "results" and p.suffix == ".pt"}
    named = {}
    for r in load_records(ROOT / "results"):
        if r.data.get("checkpoint"):
            named[f"{r.path.parent.name}/{r.data['checkpoint']}"] = r
    assert not set(named) - tracked, f"named by a results JSON, not tracked: {set(named) - tracked}"
    variants = {rel for rel, r in named.items() if r.tag is not None}
    assert variants <= set(KEPT_VARIANT_CHECKPOINTS), (
        f"variant exports no page reloads: {sorted(variants - set(KEPT_VARIANT_CHECKPOINTS))}")
    assert set(KEPT_VARIANT_CHECKPOINTS) <= variants  # nothing listed that is not there
    for rel, reader in KEPT_VARIANT_CHECKPOINTS.items():  # each is read where it says
        assert Path(rel).stem in (ROOT / reader).read_text(), (rel, reader)
    for r in load_records(ROOT / "results"):
        d = r.data.get("checkpoint_dropped")
        if d:
            assert not r.data.get("checkpoint") and len(d["sha256"]) == 64 and d["reason"]


def _run(tmp_path, name, tag=None, size=10):
    stem = "digits-all-quick-seed0" + (f"-{tag}" if tag else "")
    (tmp_path / "kmeans").mkdir(exist_ok=True)
    (tmp_path / "kmeans" / f"{stem}.pt").write_bytes(b"x" * size)
    rec = {"method": "kmeans", "dataset": "digits", "split": "all", "profile": "quick",
           "seed": 0, "metrics": {"acc": 1.0}, "checkpoint": f"{stem}.pt"}
    path = tmp_path / "kmeans" / f"{stem}.json"
    path.write_text(json.dumps(rec))
    return path


def test_prune_drops_variants_and_oversized_exports_and_says_so(tmp_path):
    own = _run(tmp_path, "own")
    variant = _run(tmp_path, "v", tag="wide")
    dropped = prune_checkpoints(tmp_path)
    assert len(dropped) == 1 and "kmeans/digits-all-quick-seed0-wide.pt" in dropped[0]
    rec = json.loads(variant.read_text())
    assert rec["checkpoint"] is None and rec["checkpoint_dropped"]["bytes"] == 10
    assert not (tmp_path / "kmeans" / "digits-all-quick-seed0-wide.pt").exists()
    assert (tmp_path / "kmeans" / "digits-all-quick-seed0.pt").exists()
    assert json.loads(own.read_text())["checkpoint"] == "digits-all-quick-seed0.pt"
    big = _run(tmp_path, "own", size=MAX_FILE_BYTES + 1)
    assert len(prune_checkpoints(tmp_path)) == 1 and not json.loads(big.read_text())["checkpoint"]
    with pytest.raises(ValueError, match="names no checkpoint"):
        drop_checkpoint(variant, "again")


def test_a_shared_entry_loads_as_the_original_and_is_checked(tmp_path):
    import torch

    enc = {"w": torch.randn(3, 4).half(), "b": torch.zeros(3).half()}
    torch.save({"encoder": enc, "x": torch.ones(2)}, tmp_path / "a.pt")
    (tmp_path / "m").mkdir()
    torch.save({"encoder": {k: v.clone() for k, v in enc.items()}, "y": torch.zeros(1)},
               tmp_path / "m" / "b.pt")
    share_checkpoint_entry(tmp_path / "m" / "b.pt", "encoder", tmp_path / "a.pt")
    raw = torch.load(tmp_path / "m" / "b.pt", weights_only=True)
    assert raw["encoder"]["__shared_from__"] == "../a.pt"  # stored once
    ck = load_checkpoint(tmp_path / "m" / "b.pt")
    assert all(torch.equal(ck["encoder"][k], enc[k]) for k in enc) and torch.equal(ck["y"], torch.zeros(1))
    torch.save({"encoder": {"w": torch.randn(3, 4).half(), "b": enc["b"]}}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="sha256 differs"):
        load_checkpoint(tmp_path / "m" / "b.pt")
    torch.save({"encoder": {"w": torch.zeros(3, 4).half(), "b": enc["b"]}}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="differs from that of"):
        share_checkpoint_entry(tmp_path / "c.pt", "encoder", tmp_path / "a.pt")


def test_every_kept_partition_is_its_run_s():
    from dcl_lib.results import LABELS_SUFFIX, run_labels
    from dcl_lib.runner import labels_digest

    kept = sorted((ROOT / "results").glob(f"*/*{LABELS_SUFFIX}"))
    for path in kept:
        rec_path = path.with_name(path.name[: -len(LABELS_SUFFIX)] + ".json")
        rec = json.loads(rec_path.read_text())
        labels = run_labels(rec_path)
        assert labels_digest(labels) == rec["labels_sha256"] and len(labels) == rec["n_samples"]


def test_save_labels_refuses_another_partition(tmp_path):
    import numpy as np

    from dcl_lib.results import run_labels, save_labels
    from dcl_lib.runner import labels_digest

    labels = np.array([0, 1, 1, 2])
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"labels_sha256": labels_digest(labels)}))
    save_labels(path, labels)
    assert np.array_equal(run_labels(path), labels)
    with pytest.raises(ValueError, match="not those of"):
        save_labels(path, labels[::-1])


def test_the_readme_stays_short_and_keeps_the_campaign_out():
    text = (ROOT / "README.md").read_text()
    assert len(text.split()) <= 1500
    for word in ("campaign --prepare", "--parallel", "--only", "window"):
        assert word not in text, word
