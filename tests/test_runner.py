"""The runner and its command line: JSON fields, checkpoints, clear failures."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dcl_lib.runner import run
from dcl_lib.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"method", "dataset", "split", "profile", "seed", "n_samples", "metrics", "wall_time_s",
            "device", "versions", "git_commit", "config", "checkpoint", "command"}


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dcl_lib", *args], cwd=cwd, capture_output=True,
                          text=True, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def test_run_kmeans_writes_json_and_checkpoint(tmp_path):
    rec = run("kmeans", "digits", "quick", seed=1, split="all", out_dir=tmp_path)
    path = tmp_path / "kmeans" / "digits-all-quick-seed1.json"
    saved = json.loads(path.read_text())
    assert REQUIRED <= set(saved)
    assert set(saved["metrics"]) >= {"acc", "nmi", "ari", "purity"}
    assert saved["n_samples"] == 1797 and saved["seed"] == 1
    assert saved["versions"]["torch"] == torch.__version__
    assert saved["metrics"]["acc"] > 0.6  # k-means on 8x8 digits reaches ~0.8
    ck = load_checkpoint(tmp_path / "kmeans" / saved["checkpoint"])
    assert ck["cluster_centers"].shape == (10, 64)
    assert rec["metrics"] == saved["metrics"]


def test_same_seed_same_result(tmp_path):
    a = run("kmeans", "digits", "quick", seed=5, split="all", out_dir=tmp_path / "a")
    b = run("kmeans", "digits", "quick", seed=5, split="all", out_dir=tmp_path / "b")
    assert a["metrics"] == b["metrics"]


def test_cli_several_seeds(tmp_path):
    r = _cli("run", "kmeans", "--dataset", "digits", "--split", "all", "--seed", "0", "1",
             "--out", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "kmeans").glob("*.json")) == [
        "digits-all-quick-seed0.json", "digits-all-quick-seed1.json"]


@pytest.mark.parametrize("args, message", [
    (["run", "nosuch"], "unknown method 'nosuch'"),
    (["run", "kmeans", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["run", "kmeans", "--profile", "medium"], "profile must be one of"),
    (["run", "kmeans", "--dataset", "digits", "--split", "test"], "has splits ['all'], not 'test'"),
    (["run", "kmeans", "--dataset", "digits", "--set", "bogus=1"], "unknown config field"),
    (["run", "kmeans", "--dataset", "digits", "--set", "n_init=2.5"], "n_init must be an integer"),
    (["run", "depict", "--dataset", "digits", "--set", "detach_targets=1"],
     "detach_targets must be True or False"),
    (["run", "clustergan", "--dataset", "digits", "--set", "channels=(1, 2, 3)"],
     "channels must have 2 entries"),
    (["run", "kmeans", "--dataset", "digits", "--seed", "0", "--set", "n_init"],
     "--set expects FIELD=VALUE"),
])
def test_cli_bad_requests_fail_and_write_nothing(tmp_path, args, message):
    r = _cli(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.pt"))


def test_cli_tag_and_overrides_are_recorded_and_reproduce(tmp_path):
    args = ["run", "kmeans", "--dataset", "digits", "--split", "all", "--set", "n_init=2",
            "--set", "max_iter=7", "--tag", "v2", "--out", str(tmp_path)]
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "kmeans" / "digits-all-quick-seed0-v2.json").read_text())
    assert saved["config"]["n_init"] == 2 and saved["config"]["max_iter"] == 7  # both --set kept
    assert saved["checkpoint"] == "digits-all-quick-seed0-v2.pt"
    # the recorded command, run again, reproduces the result
    cmd = saved["command"].split()[3:] + ["--out", str(tmp_path / "again")]
    assert _cli(*cmd, cwd=tmp_path).returncode == 0
    again = json.loads((tmp_path / "again" / "kmeans" / "digits-all-quick-seed0-v2.json").read_text())
    assert again["metrics"] == saved["metrics"]


def test_bad_tag_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="tag must be"):
        run("kmeans", "digits", "quick", split="all", out_dir=tmp_path, tag="../escape")


def test_results_json_is_strict():
    """NaN/inf (e.g. a time-to-accuracy never reached) are written as null."""
    import numpy as np

    from dcl_lib.runner import _jsonable

    out = _jsonable({"t": float("nan"), "u": np.float32(np.inf), "v": [1.5, np.int64(2)]})
    assert out == {"t": None, "u": None, "v": [1.5, 2]}
    json.dumps(out, allow_nan=False)


def test_registry_drives_the_cli_and_every_spec_resolves():
    from dcl_lib.methods import REGISTRY, get_spec, method_names

    r = _cli("list", cwd=Path.cwd())
    assert r.returncode == 0
    for name in method_names():
        spec = get_spec(name)
        assert callable(spec.fit) and spec.description in r.stdout
        assert f"method   {name}" in r.stdout
    assert set(method_names()) == set(REGISTRY)
    with pytest.raises(ValueError, match="unknown method 'nosuch'"):
        get_spec("nosuch")


def test_resolve_types_overrides_and_records_a_reproducing_command(tmp_path):
    from dcl_lib.runner import resolve

    plan = resolve("clustergan", "digits", "quick", seed=2, overrides={"channels": "(8, 16)",
                   "lr": "2e-4"}, out_dir=tmp_path)
    assert plan.cfg.channels == (8, 16) and plan.cfg.lr == 2e-4 and plan.split == "all"
    assert "--set 'channels=(8, 16)' --set lr=0.0002" in plan.command
    assert plan.state_path.name == "digits-all-quick-seed2.train-state.pt"
    assert plan.weights_path.name == "digits-all-quick-seed2.pt"
    assert not tmp_path.exists() or not list(tmp_path.iterdir())  # nothing written
