"""Real resume: a method's run stopped (by its time budget, or by SIGKILL) and resumed
gives the labels of an uninterrupted run with the same seed, on CPU."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dcl_lib.runner import run
from dcl_lib.train import TrainStateError

ROOT = Path(__file__).resolve().parents[1]

# tiny configs on scikit-learn's 8x8 digits (no data file needed)
DEPICT_TINY = {"channels": 8, "pretrain_epochs": 3, "warmup_epochs": 3, "warmup_patience": 5,
               "epochs": 3, "kmeans_n_init": 2, "pretrained": None}
CLUSTERGAN_TINY = {"hidden": 16, "channels": (2, 4), "iterations": 150, "eval_every": 25,
                   "batch_size": 16}
GANMM_TINY = {"hidden": (32,), "epochs": 2, "gan_hidden": 16, "pretrain_iters": 20,
              "iterations": 160, "eval_every": 40, "estep_every": 7, "gmm_n_init": 1,
              "sigma": (25, 10, 5, 2), "sigma_steps": (40, 80, 120)}
DCAN_TINY = {"hidden": (32,), "epochs": 2, "finetune_epochs": 4, "finetune_batch": 128,
             "gmm_n_init": 1, "refresh_steps": 3}
# the shared autoencoder's own loop (gmm-ae trains it through the runner's state)
GMM_AE_TINY = {"hidden": (32,), "epochs": 4, "n_init": 1}
DEC_TINY = {"hidden": (32,), "epochs": 2, "max_steps": 60, "update_interval": 10,
            "kmeans_n_init": 2, "dec_batch": 128}
VCAMI_TINY = {"epochs": 4, "channels": (4, 8), "hidden": 16, "latent_dim": 4, "critic_hidden": 8,
              "head_hidden": 8, "gmm_start": 1, "batch_size": 128}


@pytest.mark.parametrize("method, overrides", [("depict", DEPICT_TINY),
                                               ("clustergan", CLUSTERGAN_TINY),
                                               ("ganmm", GANMM_TINY),
                                               ("dcan", DCAN_TINY),
                                               ("gmm-ae", GMM_AE_TINY),
                                               ("vcami", VCAMI_TINY),
                                               ("dec", DEC_TINY)])
def test_budget_stops_at_every_safe_point_and_resumes_exactly(tmp_path, method, overrides,
                                                               monkeypatch):
    """budget 0: every call trains to the next safe point (an epoch of any DEPICT phase,
    50 ClusterGAN steps, 50 GANMM iterations or an evaluation, a DCAN, VCAMI or autoencoder
    epoch), saves and stops; resuming call after call ends where an uninterrupted run
    ends, across every phase boundary.  A generator left out of the saved state (the
    minibatch order, the augmentations) changes the resumed run's labels."""
    monkeypatch.setenv("DCL_MODEL_CACHE", str(tmp_path / "models"))  # not the user's cache
    if method == "gmm-ae":  # its only loop is the autoencoder's: train it, never a cache hit
        monkeypatch.setenv("DCL_RETRAIN", "1")
    kw = dict(method=method, dataset="digits", profile="quick", seed=3, overrides=overrides,
              verbose=False)
    ref = run(out_dir=tmp_path / "ref", **kw)
    assert ref["stopped_at"] is None and ref["train_state"] is None
    stops = []
    for _ in range(20):
        rec = run(out_dir=tmp_path / "cut", resume=True, budget_s=0.0, save_every_s=1e9, **kw)
        if rec["stopped_at"] is None:
            break
        stops.append(rec["stopped_at"])
        assert (tmp_path / "cut" / method / rec["train_state"]).exists()
    assert len(stops) >= 3 and stops == sorted(stops)
    assert rec["labels_sha256"] == ref["labels_sha256"]
    assert rec["metrics"]["acc"] == ref["metrics"]["acc"]
    assert rec["history"]["step"] == ref["history"]["step"]
    assert not list((tmp_path / "cut" / method).glob("*.train-state.pt"))  # removed when done


def _cli(args, out):
    env = dict(os.environ, PYTHONPATH=str(ROOT), DCL_PROGRESS="0")
    return [sys.executable, "-m", "dcl_lib", "run", *args, "--out", str(out)], env


def _kill_after_first_save(args, out, state):
    cmd, env = _cli(args + ["--save-every", "0"], out)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while not state.exists():
        assert proc.poll() is None, f"the run ended before its first save: {proc.stderr.read()}"
        assert time.time() - t0 < 120, "no training state after 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


@pytest.mark.parametrize("method, args", [
    ("depict", ["--dataset", "mnist", "--profile", "quick", "--subset", "1000", "--set",
                "pretrain_epochs=2", "--set", "warmup_epochs=2", "--set", "epochs=3",
                "--set", "kmeans_n_init=2", "--set", "pretrained=None"]),
    ("clustergan", ["--dataset", "digits", "--profile", "quick", "--set", "hidden=16",
                    "--set", "channels=(2, 4)", "--set", "iterations=150", "--set", "eval_every=25",
                    "--set", "batch_size=16"]),
])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, method, args, request):
    if "mnist" in args:
        request.getfixturevalue("mirror")
    args = [method, *args, "--seed", "1"]
    cmd, env = _cli(args, tmp_path / "ref")
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    split = "train" if "mnist" in args else "all"
    dataset = "mnist" if "mnist" in args else "digits"
    stem = f"{dataset}-{split}-quick-seed1"
    state = tmp_path / "cut" / method / f"{stem}.train-state.pt"
    _kill_after_first_save(args, tmp_path / "cut", state)
    assert state.exists() and not (tmp_path / "cut" / method / f"{stem}.json").exists()
    cmd, env = _cli(args + ["--resume"], tmp_path / "cut")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ref = json.loads((tmp_path / "ref" / method / f"{stem}.json").read_text())
    got = json.loads((tmp_path / "cut" / method / f"{stem}.json").read_text())
    assert got["resumed_from"] is not None and got["resumed_from"]["step"] >= 1
    # the time per seed covers both segments: the cut one's saved training time and this one
    prior = got["resumed_from"]["elapsed"]
    assert prior > 0 and got["wall_time_s"] == pytest.approx(got["segment_wall_s"] + prior)
    assert got["labels_sha256"] == ref["labels_sha256"]
    assert got["history"]["acc"] == ref["history"]["acc"]
    assert not state.exists()


def test_resume_refuses_another_config_and_a_truncated_state(tmp_path):
    kw = dict(method="depict", dataset="digits", profile="quick", seed=0, out_dir=tmp_path,
              verbose=False)
    rec = run(overrides=DEPICT_TINY, budget_s=0.0, **kw)
    state = tmp_path / "depict" / rec["train_state"]
    with pytest.raises(TrainStateError, match=r"belongs to another run \(config: saved"):
        run(overrides={**DEPICT_TINY, "epochs": 4}, resume=True, **kw)
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(TrainStateError, match="truncated or not a training state"):
        run(overrides=DEPICT_TINY, resume=True, **kw)
