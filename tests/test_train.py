"""Training utilities: seeding, profiles, NaN guard, atomic checkpoints with exact resume."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dcl_lib.train import (NonFiniteLossError, check_finite, load_checkpoint, resolve_profile,
                           save_checkpoint, seed_everything)


def test_seeding_is_deterministic():
    seed_everything(7)
    a = (torch.rand(3), np.random.rand(3), __import__("random").random())
    seed_everything(7)
    b = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_profiles(monkeypatch):
    monkeypatch.delenv("DCL_PROFILE", raising=False)
    assert resolve_profile() == "quick"
    monkeypatch.setenv("DCL_PROFILE", "FULL")
    assert resolve_profile() == "full"
    assert resolve_profile("quick") == "quick"


def test_nan_guard_names_loss_and_step():
    check_finite(torch.tensor(1.0), "recon", 3)
    with pytest.raises(NonFiniteLossError, match=r"loss 'critic' became nan at step 12; lower"):
        check_finite(torch.tensor(float("nan")), "critic", 12)
    with pytest.raises(NonFiniteLossError, match="inf at step 0; try a smaller beta"):
        check_finite(float("inf"), "kl", 0, hint="try a smaller beta")


def test_checkpoint_roundtrip_weights_only(tmp_path):
    m = torch.nn.Linear(3, 2)
    p = save_checkpoint(tmp_path / "a" / "c.pt", {"model": m.state_dict(), "step": 5})
    s = load_checkpoint(p)
    assert s["step"] == 5 and torch.equal(s["model"]["weight"], m.weight)
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    import argparse

    torch.save({"x": argparse.Namespace(a=1)}, tmp_path / "evil.pt")  # not an allowed type
    with pytest.raises(Exception):
        load_checkpoint(tmp_path / "evil.pt")


TRAIN_SCRIPT = textwrap.dedent("""
    import os, signal, sys, random
    import numpy as np, torch
    from dcl_lib.train import (seed_everything, save_checkpoint, load_checkpoint, rng_state,
                               set_rng_state)
    ckpt, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seed_everything(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    step = 0
    if os.path.exists(ckpt):
        s = load_checkpoint(ckpt)
        model.load_state_dict(s["model"]); opt.load_state_dict(s["opt"])
        set_rng_state(s["rng"]); step = s["step"]
    while step < 30:
        x = torch.randn(16, 4) + float(np.random.rand()) + random.random()
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step(); step += 1
        if step % 5 == 0:
            save_checkpoint(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(),
                                   "rng": rng_state(), "step": step})
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    torch.save(model.state_dict(), out)
""")


def _run(script, *args):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, str(script), *map(str, args)], env=env)


def test_checkpoint_kill_resume_matches_uninterrupted(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    # uninterrupted reference
    assert _run(script, tmp_path / "ref.pt", tmp_path / "ref_out.pt", -1).returncode == 0
    # killed at step 13 (last checkpoint at 10), then resumed
    r = _run(script, tmp_path / "c.pt", tmp_path / "out.pt", 13)
    assert r.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 10
    assert _run(script, tmp_path / "c.pt", tmp_path / "out.pt", -1).returncode == 0
    ref = torch.load(tmp_path / "ref_out.pt", weights_only=True)
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    from dcl_lib._io import atomic_path

    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) != 0o600


def test_compact_state_round_trip():
    """Half precision for floats, integer buffers kept, int8 rows within half a step."""
    from dcl_lib.train import compact_state, load_compact_state

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(40, 300), torch.nn.BatchNorm1d(300))
    net(torch.randn(8, 40))  # moves the BatchNorm statistics and its step counter
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    half = compact_state(net)
    assert half["0.weight"].dtype == torch.float16 and half["1.num_batches_tracked"].dtype == torch.long
    q = compact_state(net, int8_min_numel=10_000)
    assert q["0.weight"].dtype == torch.int8 and q["0.weight.int8_scale"].shape == (300,)
    assert q["0.bias"].dtype == torch.float16  # below the threshold
    w = ref["0.weight"]
    step = w.abs().amax(1, keepdim=True) / 127
    other = torch.nn.Sequential(torch.nn.Linear(40, 300), torch.nn.BatchNorm1d(300))
    load_compact_state(other, q)
    err = (other[0].weight.detach() - w).abs()
    assert torch.all(err <= step / 2 + 1e-7) and err.max() > 0
    assert int(other[1].num_batches_tracked) == 1
    load_compact_state(other, half)
    assert torch.allclose(other[0].weight, w, atol=1e-3, rtol=1e-3)
