"""DEPICT: targets and objective against independent computations, the network's
shapes, the two pathways, determinism, runner."""
import dataclasses

import numpy as np
import pytest
import torch

from dcl_lib.data import load_dataset
from dcl_lib.methods.depict import (DEPICT, DepictConfig, DepictNet, agglomerative_init,
                                    depict_objective, depict_target, reconstruction_loss)
from dcl_lib.runner import run


def _p(seed=0, n=300, k=6):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64) * 2, 1)


def test_targets_against_numpy():
    P = _p()
    p = P.numpy()
    q_sqrt = p / np.sqrt(p.sum(0))
    q_sqrt /= q_sqrt.sum(1, keepdims=True)
    q_dec = p ** 2 / p.sum(0)
    q_dec /= q_dec.sum(1, keepdims=True)
    assert np.allclose(depict_target(P, "sqrt").numpy(), q_sqrt)
    assert np.allclose(depict_target(P, "dec").numpy(), q_dec)


def test_objective_against_numpy():
    P, Q = _p(1), _p(2)
    q, p = Q.numpy(), P.numpy()
    f = q.mean(0)
    ref = (q * np.log(q / p)).sum() / len(q) + (f * np.log(f * q.shape[1])).sum()
    assert float(depict_objective(Q, P)) == pytest.approx(ref, rel=1e-10)


def test_closed_form_beats_perturbations():
    P = _p(3)
    Q = depict_target(P, "sqrt")
    base = float(depict_objective(Q, P))
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        noisy = torch.softmax(torch.log(Q) + 0.05 * torch.randn(Q.shape, generator=g, dtype=Q.dtype), 1)
        assert float(depict_objective(noisy, P)) > base
    assert base < float(depict_objective(P, P))  # better than Q = P


def test_sqrt_target_does_not_sharpen_balanced_predictions():
    """With balanced cluster frequencies p/sqrt(f) is P itself; p^2/f is sharper."""
    P = torch.softmax(torch.randn(1000, 4, dtype=torch.float64), 1)
    P = P[:, torch.randperm(4)]
    ent = lambda A: float(-(A * A.log()).sum(1).mean())
    assert ent(depict_target(P, "sqrt")) == pytest.approx(ent(P), abs=0.02)
    assert ent(depict_target(P, "dec")) < ent(P) - 0.05


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 16, 16), (1, 8, 8)])
def test_network_shapes_and_pathways(shape):
    net = DepictNet(shape, 10, channels=8)
    x = torch.rand(5, *shape) * 2 - 1
    clean = net.encode(x)
    assert clean[-1].shape == (5, 10) and float(clean[-1].detach().abs().max()) <= 1
    recon = net.decode(clean[-1])
    assert [r.shape for r in recon] == [c.shape for c in clean[:3]]
    # the clean pathway is deterministic, the corrupted one is not
    assert torch.equal(net.encode(x)[-1], clean[-1])
    assert not torch.equal(net.encode(x, corrupt=True)[-1], clean[-1])
    assert float(reconstruction_loss(clean, recon).detach()) > 0


def test_head_initialised_on_normalised_centroids():
    net = DepictNet((1, 16, 16), 3, channels=4)
    C = torch.tensor([[3.0, 0, 0], [0, 2.0, 0], [1.0, 1.0, 0]])
    net.init_head(C)
    assert torch.allclose(net.head.weight.norm(dim=1), torch.ones(3))
    assert torch.equal(net.head.bias, torch.zeros(3))


def _tiny():
    return DepictConfig(channels=16, lr=1e-3, batch_size=64, pretrain_epochs=10, warmup_epochs=2,
                        epochs=2, kmeans_n_init=3)


def test_fit_is_deterministic_and_beats_chance():
    d = load_dataset("digits")
    a = DEPICT(10, _tiny(), random_state=0).fit(d.x, y_eval=d.y)
    b = DEPICT(10, _tiny(), random_state=0).fit(d.x)
    assert np.array_equal(a.labels_, b.labels_)
    assert a.predict_proba(d.x).shape == (1797, 10)
    assert set(a.history_["phase"]) == {"pretrain", "warmup", "cluster"}
    from dcl_lib.metrics import cluster_acc
    assert cluster_acc(d.y, a.labels_) > 0.3


def test_bad_input():
    with pytest.raises(ValueError, match="scaled to \\[0, 1\\]"):
        DEPICT(2, _tiny()).fit(torch.full((10, 1, 16, 16), 255.0))
    with pytest.raises(ValueError, match="must be 4-D"):
        DEPICT(2, _tiny()).fit(np.zeros((10, 256)))
    with pytest.raises(ValueError, match="target must be one of"):
        depict_target(_p(), "square")
    with pytest.raises(ValueError, match="init must be one of"):
        DEPICT(2, dataclasses.replace(_tiny(), init="ward")).fit(torch.rand(10, 1, 16, 16))
    with pytest.raises(ValueError, match="init_neighbors must be in"):
        agglomerative_init(torch.randn(10, 2), 2, n_neighbors=10)


def test_agglomerative_init_partitions_along_the_neighbour_graph():
    """Two moons (noise 0.05, one connected 20-NN graph): Ward restricted to the graph
    merges only neighbours and beats k-means, whose two balls cut both moons (measured
    0.837 against 0.750); exactly K non-empty clusters, their means, deterministic."""
    from sklearn.datasets import make_moons
    from dcl_lib.metrics import cluster_acc
    from dcl_lib.methods.kmeans import KMeans

    x, y = make_moons(1000, noise=0.05, random_state=0)
    z = torch.as_tensor(x)
    labels, means = agglomerative_init(z, 2, n_neighbors=20)
    km = KMeans(2, n_init=5, random_state=0, dtype=torch.float64).fit(z)
    assert cluster_acc(y, km.labels_) < 0.76
    assert cluster_acc(y, labels.numpy()) > 0.82
    assert torch.bincount(labels, minlength=2).min() > 0
    for k in range(2):
        assert torch.allclose(means[k], z[labels == k].mean(0))
    assert torch.equal(labels, agglomerative_init(z, 2, n_neighbors=20)[0])


def test_runner_depict(tmp_path):
    rec = run("depict", "digits", "quick", seed=0, out_dir=tmp_path,
              overrides={"channels": 8, "pretrain_epochs": 2, "warmup_epochs": 1, "epochs": 1,
                         "pretrained": None})
    assert rec["checkpoint"] and rec["history"]["phase"][0] == "pretrain"
    assert "kmeans_init_acc" in rec["metrics"]


def test_unfitted_estimators_say_so():
    from sklearn.exceptions import NotFittedError

    from dcl_lib.methods.clustergan import ClusterGAN

    x = torch.rand(2, 1, 28, 28)
    for call in (DEPICT(2).predict, DEPICT(2).transform, ClusterGAN(2).transform):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call(x)


def test_nonfinite_loss_stops_at_the_end_of_the_epoch():
    from dcl_lib.methods.depict import DepictConfig, fit_depict
    from dcl_lib.train import NonFiniteLossError

    x = torch.rand(40, 1, 28, 28) * 2 - 1  # synthetic: checks the guard only
    x[3, 0, 5, 5] = float("nan")
    cfg = DepictConfig(n_clusters=3, channels=4, batch_size=16, pretrain_epochs=2, warmup_epochs=1,
                       epochs=1, kmeans_n_init=1)
    with pytest.raises(NonFiniteLossError, match=r"'recon' became nan at epoch 1 \(mean over the epoch's minibatches\); pretraining"):
        fit_depict(x, cfg, seed=0, device="cpu", verbose=False)


def test_main_loop_refreshes_its_targets_from_the_latest_clean_pass(monkeypatch):
    """Every minibatch of main-loop epoch t is trained on Q computed from the clean pass
    that ended epoch t-1 (rows of that minibatch): targets never refreshed, or refreshed
    from a stale pass, fail here."""
    import dcl_lib.methods.depict as D

    events = []
    orig_pass, orig_update, orig_batches = D.cluster_pass, D.update_network, D.minibatches

    def spy_pass(net, X, *a):
        out = orig_pass(net, X, *a)
        events.append(("pass", out[1].clone()))
        return out

    def spy_batches(n, bs, g):
        parts = orig_batches(n, bs, g)
        events.append(("batches", parts))
        return parts

    def spy_update(net, opt, x, cfg, target):
        events.append(("update", None if target is None else target.clone()))
        return orig_update(net, opt, x, cfg, target)

    monkeypatch.setattr(D, "cluster_pass", spy_pass)
    monkeypatch.setattr(D, "minibatches", spy_batches)
    monkeypatch.setattr(D, "update_network", spy_update)
    d = load_dataset("digits")
    cfg = DepictConfig(channels=8, lr=1e-3, batch_size=256, pretrain_epochs=1, warmup_epochs=0,
                       epochs=4, kmeans_n_init=2, stop_tol=0.0)
    D.fit_depict(D.to_signed(d.x), cfg, seed=0, device="cpu", verbose=False)
    last_p, batches, checked, epochs_seen = None, None, 0, set()
    for kind, value in events:
        if kind == "pass":
            last_p = value
        elif kind == "batches":
            batches, j = value, 0
        elif value is not None and value.dim() == 2:  # a soft target: the main loop
            expected = D.depict_target(last_p, cfg.target)[batches[j]]
            assert torch.allclose(value, expected, atol=1e-6)
            epochs_seen.add(id(batches))
            checked += 1
            j += 1
        else:
            j += 1
    assert checked == 4 * len(batches) and len(epochs_seen) == 4


def test_optimal_target_satisfies_the_kkt_conditions_and_beats_the_closed_form():
    """Independent check of the minimiser: at the optimum of the convex objective,
    log q_ik - log p_ik + log f_k is constant along each row (the multiplier), and a
    general-purpose optimiser started elsewhere does not go lower."""
    from dcl_lib.methods.depict import depict_optimal_target

    g = torch.Generator().manual_seed(3)
    p = torch.softmax(2 * torch.randn(300, 6, generator=g, dtype=torch.float64)
                      + torch.randn(1, 6, generator=g, dtype=torch.float64), 1)
    q = depict_optimal_target(p)
    kkt = torch.log(q) - torch.log(p) + torch.log(q.mean(0))
    assert float((kkt - kkt.mean(1, keepdim=True)).abs().max()) < 1e-9
    best = float(depict_objective(q, p))
    assert best < float(depict_objective(depict_target(p, "sqrt"), p))
    A = torch.zeros_like(p, requires_grad=True)  # start from uniform rows
    opt = torch.optim.LBFGS([A], max_iter=2000, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        o = depict_objective(torch.softmax(A, 1), p)
        o.backward()
        return o
    opt.step(closure)
    assert float(depict_objective(torch.softmax(A.detach(), 1), p)) >= best - 1e-10


def test_pretrained_network_replaces_pretraining(tmp_path, monkeypatch):
    """A committed pretrained export is loaded instead of pretraining (the history has no
    pretraining epoch and names the file); DCL_RETRAIN=1 pretrains live; a missing file
    says how to make it."""
    from dcl_lib.methods.depict import PRETRAIN_COMMAND, fit_depict, pretrained_path
    from dcl_lib.train import compact_state, save_checkpoint

    d = load_dataset("digits")
    x = d.x[:300] * 2 - 1
    base = DepictConfig(channels=4, batch_size=64, pretrain_epochs=2, warmup_epochs=1, epochs=1,
                        kmeans_n_init=1)
    net, _ = fit_depict(x, dataclasses.replace(base, warmup_epochs=0, epochs=0), 0, "cpu",
                        verbose=False)
    save_checkpoint(tmp_path / "pre-seed0.pt", {"net": compact_state(net)})
    cfg = dataclasses.replace(base, pretrained=str(tmp_path / "pre-seed{seed}.pt"))
    _, h = fit_depict(x, cfg, 0, "cpu", verbose=False)
    assert "pretrain" not in h["phase"] and h["pretrained_from"].endswith("pre-seed0.pt")
    monkeypatch.setenv("DCL_RETRAIN", "1")
    assert pretrained_path(cfg, 0) is None
    _, h = fit_depict(x, cfg, 0, "cpu", verbose=False)
    assert h["phase"].count("pretrain") == 2
    monkeypatch.delenv("DCL_RETRAIN")
    with pytest.raises(FileNotFoundError, match="make it with"):
        fit_depict(x, cfg, 1, "cpu", verbose=False)  # no pre-seed1.pt
    with pytest.raises(ValueError, match="does not fit this network"):
        fit_depict(x, dataclasses.replace(cfg, channels=8), 0, "cpu", verbose=False)
    assert "--set pretrained=None" in PRETRAIN_COMMAND


# That the clustering phases improve on their own starting point (k-means on the committed
# pretrained network, then the agglomerative start, then the main loop) is asserted by
# chapter 04 under nbval, on the quick profile's full schedule: a short copy of that run
# here cost 94 s of CI for the same three inequalities.
