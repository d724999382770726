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

from dcl_lib.config import resolve_profile
from dcl_lib.train import (NonFiniteLossError, check_finite, load_checkpoint,
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


# ---------------------------------------------------------------------------
# Loop helpers
# ---------------------------------------------------------------------------

def test_loss_window_weighted_means_and_the_nan_rule():
    from dcl_lib.train import LossWindow

    w = LossWindow()
    vals, weights = [1.0, 2.0, 4.0], [10, 10, 5]
    for i, (v, n) in enumerate(zip(vals, weights)):
        w.add(i + 1, weight=n, recon=torch.tensor(v))
    w.add(3, critic=torch.tensor(-1.0))
    means = w.means(3)
    assert means["recon"] == pytest.approx(np.average(vals, weights=weights))
    assert means["critic"] == -1.0 and w.means(4) == {}  # a new window after each mean
    w.add(5, critic=torch.tensor(1.0))
    w.add(6, critic=torch.tensor(float("inf")))
    with pytest.raises(NonFiniteLossError, match=r"'critic' became inf at step 6 \(mean over steps 5\.\.6\); try this"):
        w.means(6, hint="try this")


def test_history_standard_keys_time_to_acc_and_round_trip():
    from dcl_lib.train import History

    y = np.array([0, 0, 1, 1])
    h = History(y)
    h.log(1, np.array([0, 1, 0, 1]), {"critic": 2.0}, sizes=[2, 2])
    h.log(2, np.array([1, 1, 0, 0]), {"critic": 1.0}, sizes=[2, 2])
    assert h["acc"] == [0.5, 1.0] and h["loss/critic"] == [2.0, 1.0] and h["step"] == [1, 2]
    tta = h.time_to_acc(0.9)
    assert tta["step"] == 2 and tta["seconds"] == h["seconds"][1]
    assert h.time_to_acc(1.01) == {"target": 1.01, "seconds": None, "step": None}
    h2 = History()
    h2.load({**h.to_dict(), "elapsed": 100.0})
    assert h2.to_dict() == h.to_dict() and h2.elapsed() >= 100.0
    assert np.isnan(History().acc([0, 1]))  # no labels: NaN


def test_eval_mode_restores_each_submodule():
    from dcl_lib.train import eval_mode

    net = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(3))
    net[1].eval()  # mixed modes
    with eval_mode(net, None):
        assert not any(m.training for m in net.modules())
    assert net.training and net[0].training and not net[1].training


def test_batched_equals_one_pass_without_gradients():
    from dcl_lib.train import batched

    lin = torch.nn.Linear(5, 3)
    X = torch.randn(101, 5)
    z, p = batched(lambda x: (lin(x), torch.softmax(lin(x), 1)), X, batch_size=16, nets=(lin,))
    assert torch.allclose(z, lin(X)) and not z.requires_grad and p.shape == (101, 3)


def test_minibatches_partition_and_random_batch():
    from dcl_lib.train import minibatches, random_batch, seeded_generator

    parts = minibatches(103, 10, seeded_generator(0))
    assert [len(p) for p in parts] == [10] * 10 + [3]
    assert sorted(torch.cat(parts).tolist()) == list(range(103))
    again = minibatches(103, 10, seeded_generator(0))
    assert all(torch.equal(a, b) for a, b in zip(parts, again))  # seeded: same order
    b = random_batch(7, 7000, seeded_generator(1))
    assert b.min() >= 0 and b.max() <= 6 and len(b) == 7000
    # uniform over all n indices, the last one included: chi-square with 6 degrees of
    # freedom, 99.9 % quantile 22.5 (a draw that never yields n - 1 scores about 1170)
    counts = torch.bincount(b, minlength=7).double()
    assert float(((counts - 1000) ** 2 / 1000).sum()) < 22.5


def test_minibatches_are_shuffled_every_epoch():
    """Each epoch a fresh permutation: not the identity, not the previous epoch's."""
    from dcl_lib.train import minibatches, seeded_generator

    g = seeded_generator(0)
    e1, e2 = torch.cat(minibatches(200, 32, g)), torch.cat(minibatches(200, 32, g))
    ident = torch.arange(200)
    assert not torch.equal(e1, ident) and not torch.equal(e2, ident) and not torch.equal(e1, e2)
    # the first batch is a random sample: its mean index is near 99.5, not 15.5
    firsts = torch.stack([minibatches(200, 32, g)[0].double().mean() for _ in range(50)])
    assert abs(float(firsts.mean()) - 99.5) < 10


def test_dcgan_initialisation_is_n_0_0p02():
    from dcl_lib.nets import init_normal_

    conv = init_normal_(torch.nn.Sequential(torch.nn.Conv2d(64, 128, 4), torch.nn.Linear(1000, 200)))
    for m in conv:
        w = m.weight.detach()
        assert abs(float(w.mean())) < 1e-3 and abs(float(w.std()) - 0.02) < 0.0005
        assert float(m.bias.detach().abs().max()) == 0.0


def test_make_adam_is_unfused_on_cpu():
    from dcl_lib.train import make_adam

    opt = make_adam(torch.nn.Linear(2, 2).parameters(), 1e-3, "cpu", betas=(0.5, 0.9))
    assert not opt.param_groups[0].get("fused") and opt.param_groups[0]["betas"] == (0.5, 0.9)


# ---------------------------------------------------------------------------
# TrainState: exact resume, bad files
# ---------------------------------------------------------------------------

def _tiny_loop(state, steps=12):
    """A loop with dropout (global RNG), a seeded generator and Adam, resumable per step."""
    from dcl_lib.train import History, seeded_generator

    torch.manual_seed(0)
    g = seeded_generator(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    hist = History()
    state.attach({"net": net}, {"opt": opt}, {"g": g}, hist)
    start = state.restore().get("step", 0)
    for step in range(start + 1, steps + 1):
        x = torch.randn(16, 3, generator=g)
        loss = (net(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.log(step, losses={"mse": float(loss.detach())})
        if state.checkpoint(step, final=step == steps, step=step):
            break
    return net, hist


def test_train_state_budget_stops_and_resume_is_exact(tmp_path):
    from dcl_lib.train import TrainState

    ref, ref_hist = _tiny_loop(TrainState())
    path = tmp_path / "s.train-state.pt"
    rounds = 0
    while True:  # budget 0: each call runs one step, saves and stops
        st = TrainState(path, every_s=1e9, identity={"seed": 0}, resume=True, budget_s=0.0)
        net, hist = _tiny_loop(st)
        rounds += 1
        if st.stopped_at is None:
            break
        assert st.stopped_at == rounds and hist["stopped_at"] == rounds
    assert rounds == 12
    for a, b in zip(ref.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    assert hist["loss/mse"] == ref_hist["loss/mse"] and hist["step"] == list(range(1, 13))


def test_train_state_refuses_truncated_foreign_and_other_runs(tmp_path):
    from dcl_lib.train import TrainState, TrainStateError

    path = tmp_path / "s.pt"
    st = TrainState(path, every_s=0, identity={"seed": 0, "config": {"lr": 0.1}})
    _tiny_loop(st, steps=2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainStateError, match="truncated or not a training state"):
        _tiny_loop(TrainState(path, identity={"seed": 0, "config": {"lr": 0.1}}, resume=True))
    torch.save({"model": {}}, path)
    with pytest.raises(TrainStateError, match="not a dcl training state"):
        _tiny_loop(TrainState(path, resume=True))
    path.write_bytes(data)
    with pytest.raises(TrainStateError, match=r"another run \(config: saved \{'lr': 0.1\}, now \{'lr': 0.2\}"):
        _tiny_loop(TrainState(path, identity={"seed": 0, "config": {"lr": 0.2}}, resume=True))


_FAULTS = """
import resource
import torch
from dcl_lib import _alloc
from dcl_lib.methods.vcami import VCAMIConfig, VCAMINets
from dcl_lib.train import CONV_EVAL_BATCH, batched, on_device

nets = on_device(VCAMINets((1, 28, 28), VCAMIConfig()), "cpu")
X = torch.rand(CONV_EVAL_BATCH * 40, 1, 28, 28, generator=torch.Generator().manual_seed(0))
encode = lambda b: nets.encode(b)[1]
batched(encode, X[:CONV_EVAL_BATCH * 20], CONV_EVAL_BATCH, nets=(nets,))  # the heap grows
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
batched(encode, X, CONV_EVAL_BATCH, nets=(nets,))
print(_alloc.applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("keep", ["1", "0"])
def test_import_keeps_freed_memory_so_evaluation_batches_do_not_page_fault(keep):
    """``import dcl_lib`` fixes glibc's mmap threshold and trims nothing: VCAMI's encoder
    over 40 batches of ``CONV_EVAL_BATCH`` images, after 20 that grew the heap, reuses
    most of the memory each batch freed (measured: 0 to 1,334 page faults a batch over
    a dozen runs).  The control leaves the settings off and pins glibc's starting mmap
    threshold, 128 KiB (``MALLOC_MMAP_THRESHOLD_``): every block above it is mapped and
    unmapped, about 36,281 page faults a batch in every run measured.  (Left dynamic, glibc's
    threshold follows the history of the process: 12,000-19,000 faults a batch in most
    runs here, 156 in one; too uncertain for a control.)"""
    env = dict(os.environ, DCL_KEEP_FREED_MEMORY=keep)
    if keep == "0":
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 2**10)
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    applied, per_batch = out[0] == "True", float(out[1])
    if keep == "1":
        assert applied and per_batch < 5000, per_batch
    else:  # the settings off: the control that shows the test can fail
        assert not applied and per_batch > 20000, per_batch
