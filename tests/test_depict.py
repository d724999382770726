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


def test_fit_is_deterministic():
    d = load_dataset("digits")
    a = DEPICT(10, _tiny(), random_state=0).fit(d.x, y_eval=d.y)
    b = DEPICT(10, _tiny(), random_state=0).fit(d.x)
    assert np.array_equal(a.labels_, b.labels_)
    assert a.predict_proba(d.x).shape == (1797, 10)
    assert set(a.history_["phase"]) == {"pretrain", "warmup", "cluster"}


def test_self_training_improves_on_its_k_means_start():
    """The method against its own start (k-means on the pretrained embedding): 10
    warm-up and 15 main-loop epochs on scikit-learn's digits raise ACC on every seed
    (measured, seeds 0-2: 0.662 -> 0.687, 0.773 -> 0.810, 0.681 -> 0.699)."""
    from dcl_lib.metrics import cluster_acc

    d = load_dataset("digits")
    cfg = DepictConfig(channels=16, lr=1e-3, batch_size=64, pretrain_epochs=30, warmup_epochs=10,
                       warmup_patience=10, epochs=15, kmeans_n_init=3)
    gains = []
    for seed in range(3):
        est = DEPICT(10, cfg, random_state=seed).fit(d.x, y_eval=d.y)
        gains.append(cluster_acc(d.y, est.labels_) - est.history_.scalars["init_acc"])
    assert min(gains) > 0 and np.mean(gains) >= 0.01, gains


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


def test_optimal_target_where_the_plain_iteration_oscillates():
    """Every row p = (0.7, 0.3): the plain fixed-point iteration alternates between p and
    the uniform rows for ever; the minimiser is q ∝ sqrt(p) (all rows equal, so f = q and
    the objective is sum_k q_k log(q_k^2 / (p_k / K))), which the damped update reaches."""
    from dcl_lib.methods.depict import depict_optimal_target

    p = torch.tensor([[0.7, 0.3]], dtype=torch.float64).repeat(50, 1)
    q = depict_optimal_target(p)
    root = p.sqrt() / p.sqrt().sum(1, keepdim=True)
    assert torch.allclose(q, root, atol=1e-12)
    with pytest.raises(RuntimeError, match="did not converge"):
        depict_optimal_target(p, damping=1.0, max_iter=1000)
    for d in (0.0, 1.5):
        with pytest.raises(ValueError, match="damping"):
            depict_optimal_target(p, damping=d)


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
    # the export is named by the images it was pretrained on: another dataset's is not taken
    per_data = dataclasses.replace(base, pretrained=str(tmp_path / "{data}-seed{seed}.pt"))
    save_checkpoint(tmp_path / "digits-all-seed0.pt", {"net": compact_state(net)})
    assert pretrained_path(per_data, 0, "digits-all") == tmp_path / "digits-all-seed0.pt"
    with pytest.raises(FileNotFoundError, match="--dataset usps --split all --profile quick"):
        pretrained_path(per_data, 0, "usps-all")
    with pytest.raises(ValueError, match="dataset-split"):
        pretrained_path(per_data, 0, "usps")


# That the clustering phases improve on their own starting point (k-means on the committed
# pretrained network, then the agglomerative start, then the main loop) is asserted by
# chapter 04 under nbval, on the quick profile's full schedule: a short copy of that run
# here cost 94 s of CI for the same three inequalities.


# -- the step against its equation ---------------------------------------------------------

def _step_case(seed=0):
    torch.manual_seed(seed)
    net = DepictNet((1, 8, 8), 4, channels=6)
    ref = DepictNet((1, 8, 8), 4, channels=6)
    ref.load_state_dict(net.state_dict())
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    q = torch.softmax(torch.randn(12, 4, generator=torch.Generator().manual_seed(2)), 1)
    return net, ref, x, q


def test_update_network_is_the_step_of_its_equation():
    """minimise -(1/B) sum_i sum_k q_ik log p~_ik + sum_l w_l ||z^l - z_hat^l||^2 / |z^l|,
    written out here: p~ from the *corrupted* code, z_hat decoded from the corrupted code,
    z^l from the clean pathway with gradients (the config's default, as the official
    code), w_0 = 1 and w_l = hidden_weight for the hidden layers.  One SGD step of lr 1
    moves each parameter by minus its gradient."""
    import torch.nn.functional as F

    from dcl_lib.methods.depict import update_network

    cfg = DepictConfig(n_clusters=4, channels=6, hidden_weight=0.1, recon_weight=0.5)
    assert cfg.detach_targets is False
    net, ref, x, q = _step_case()
    torch.manual_seed(7)  # the corrupted pathway's dropout masks
    rec, ce = update_network(net, torch.optim.SGD(net.parameters(), lr=1.0), x, cfg, q)
    ref.train()
    clean = ref.encode(x)
    torch.manual_seed(7)
    noisy = ref.encode(x, corrupt=True)
    recon = ref.decode(noisy[-1])
    w = [1.0, cfg.hidden_weight, cfg.hidden_weight]
    rec_ref = sum(w[l] * ((recon[l] - clean[l]) ** 2).mean() for l in range(3))
    ce_ref = -(q * F.log_softmax(ref.head(noisy[-1]), 1)).sum(1).mean()
    assert float(rec) == pytest.approx(float(rec_ref.detach()), rel=1e-5)
    assert float(ce) == pytest.approx(float(ce_ref.detach()), rel=1e-5)
    (cfg.recon_weight * rec_ref + ce_ref).backward()
    for (name, pa), pb in zip(net.named_parameters(), ref.parameters()):
        assert torch.allclose(pa, pb.detach() - pb.grad, atol=1e-6), name


def test_detached_targets_change_the_step_and_only_through_the_hidden_targets():
    """detach_targets=True stops the gradient through the clean hidden targets: the
    encoder's first layer then gets another gradient, the head the same one."""
    from dcl_lib.methods.depict import update_network

    grads = {}
    for detach in (False, True):
        cfg = DepictConfig(n_clusters=4, channels=6, detach_targets=detach)
        net, _, x, q = _step_case()
        opt = torch.optim.SGD(net.parameters(), lr=0.0)
        torch.manual_seed(7)
        update_network(net, opt, x, cfg, q)
        grads[detach] = {n: p.grad.clone() for n, p in net.named_parameters()}
    assert torch.allclose(grads[False]["head.weight"], grads[True]["head.weight"])
    assert not torch.allclose(grads[False]["conv1.weight"], grads[True]["conv1.weight"])


def test_cluster_pass_gives_each_image_a_distribution_over_clusters():
    from dcl_lib.methods.depict import cluster_pass

    net, _, x, _ = _step_case()
    z, p = cluster_pass(net, x)
    assert p.shape == (12, 4) and torch.allclose(p.sum(1), torch.ones(12), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(p, torch.softmax(net.head(net.encode(x)[-1]), 1), atol=1e-6)


def test_the_defaults_of_the_targets_and_the_reconstruction():
    """depict_target's default is the paper's map; reconstruction_loss's defaults are the
    official hidden weight 0.1 with the hidden targets detached (layers 1 and 2: neither
    passes a gradient to the clean pathway)."""
    p = _p()
    assert torch.equal(depict_target(p), depict_target(p, "sqrt"))
    g = torch.Generator().manual_seed(0)
    clean = [torch.rand(4, 1, 8, 8, generator=g)] + [torch.rand(4, 3, generator=g).requires_grad_()
                                                     for _ in range(3)]
    recon = [t.requires_grad_() for t in (torch.rand(4, 1, 8, 8, generator=g),
                                          torch.rand(4, 3, generator=g), torch.rand(4, 3, generator=g))]
    loss = reconstruction_loss(clean, recon)
    ref = sum(w * ((r - c.detach()) ** 2).mean() for w, r, c in zip((1.0, 0.1, 0.1), recon, clean))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    loss.backward()
    assert clean[1].grad is None and clean[2].grad is None
    loss = reconstruction_loss(clean, recon, detach_targets=False)
    loss.backward()
    assert clean[1].grad is not None and clean[2].grad is not None


# ---------------------------------------------------------------------------
# The official schedule (the `paper` profile): held-out early stops, fresh Adam per phase
# ---------------------------------------------------------------------------

def _paper_tiny(**kw):
    base = dict(channels=8, lr=1e-3, batch_size=128, pretrain_epochs=40, pretrain_patience=2,
                holdout=0.2, warmup_epochs=6, warmup_patience=2, epochs=2, kmeans_n_init=2,
                fresh_optimizer=True)
    return DepictConfig(**{**base, **kw})


def _weights(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def _assert_trained_outside_the_heldout(x, batches, holdout, epochs):
    """The minibatches ``batches`` of ``epochs`` epochs covered exactly the images outside
    the held-out split of seed 0, and no held-out image."""
    from dcl_lib.methods.depict import holdout_split

    _, held = holdout_split(len(x), holdout, 0)
    held_images = x[held].reshape(len(held), -1)
    seen = torch.cat(batches).reshape(-1, held_images.shape[1])
    assert len(seen) == epochs * (len(x) - len(held))
    assert not (torch.cdist(seen, held_images) == 0).any()


def test_the_paper_profile_is_the_official_schedule():
    cfg = DepictConfig.for_profile("paper")
    assert (cfg.channels, cfg.lr, cfg.batch_size) == (50, 1e-4, 100)
    assert (cfg.pretrain_epochs, cfg.pretrain_patience, cfg.holdout) == (4000, 100, 0.1)
    assert (cfg.warmup_epochs, cfg.warmup_patience, cfg.epochs, cfg.stop_tol) == (1000, 6, 4000, 1e-7)
    assert cfg.init == "acpic" and cfg.fresh_optimizer and cfg.pretrained is None
    for bad, match in (({"holdout": 0.5}, "holdout"), ({"holdout": -0.1}, "holdout"),
                       ({"pretrain_patience": -1}, "pretrain_patience"),
                       ({"pretrain_patience": 5, "holdout": 0.0}, "held-out")):
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(cfg, **bad).validate()


def test_holdout_split_is_a_seeded_partition():
    from dcl_lib.methods.depict import holdout_split

    rows, held = holdout_split(1000, 0.1, seed=3)
    assert len(held) == 100 and len(rows) == 900
    assert torch.equal(torch.sort(torch.cat([rows, held])).values, torch.arange(1000))
    again = holdout_split(1000, 0.1, seed=3)
    assert torch.equal(rows, again[0]) and torch.equal(held, again[1])
    assert not torch.equal(held, holdout_split(1000, 0.1, seed=4)[1])


def test_heldout_reconstruction_is_the_clean_pathways_loss():
    """Against an independent computation: every layer's mean squared error between the
    clean activations and the decoding of the clean code, the hidden ones weighted."""
    from dcl_lib.methods.depict import heldout_reconstruction, to_signed

    x = to_signed(load_dataset("digits").x[:150])
    net = DepictNet((1, 8, 8), 10, 4, (0.5, 0.5, 0.0))  # dropout that eval must switch off
    cfg = DepictConfig(hidden_weight=0.3)
    got = heldout_reconstruction(net, x, cfg, batch_size=40)
    net.eval()
    with torch.no_grad():
        h1 = net.encode(x)
        rec = net.decode(h1[-1])
    want = sum(w * float(((a - b) ** 2).mean())
               for w, a, b in zip((1.0, 0.3, 0.3), h1[:3], rec))
    assert got == pytest.approx(want, rel=1e-5)


def test_pretraining_stops_on_the_heldout_loss_and_restores_the_best_weights(monkeypatch):
    """A scripted held-out loss (best at epoch 3, then worse): with patience 2 the
    pretraining trains epochs 1-6 (three without improvement) and starts the clustering
    from the weights it had after epoch 3; the pretraining trains on the other rows only."""
    import dcl_lib.methods.depict as D

    script = iter([5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9])
    snapshots, trained_rows = [], []
    x = D.to_signed(load_dataset("digits").x[:400])
    orig_update = D.update_network

    def scripted(net, X, cfg, batch_size=1000):
        snapshots.append(_weights(net))
        return next(script)

    def spy_update(net, opt, xb, cfg, target):
        if target is None:
            trained_rows.append(xb)
        return orig_update(net, opt, xb, cfg, target)

    monkeypatch.setattr(D, "heldout_reconstruction", scripted)
    monkeypatch.setattr(D, "update_network", spy_update)
    seen_at_init = {}
    orig_init = D.DepictNet.init_head

    def spy_init(net, centres):
        seen_at_init.update(_weights(net))
        return orig_init(net, centres)

    monkeypatch.setattr(D.DepictNet, "init_head", spy_init)
    net, hist = D.fit_depict(x, _paper_tiny(), seed=0, device="cpu", verbose=False)
    assert hist.scalars["pretrain_epochs_run"] == 6 and len(snapshots) == 6
    assert hist.scalars["pretrain_best_heldout_recon"] == 3.0
    for k, v in snapshots[2].items():  # the weights after epoch 3
        assert torch.equal(seen_at_init[k], v), k
    _assert_trained_outside_the_heldout(x, trained_rows, 0.2, epochs=6)


def test_the_warmup_restores_its_best_weights_and_each_phase_gets_a_fresh_adam(monkeypatch):
    """With a held-out split the warm-up trains on the other images and its score is
    measured before its first epoch; a scripted NMI that never beats it makes the warm-up
    stop after `warmup_patience` epochs and hand the main loop the weights it started from.
    With fresh_optimizer, the first step of each phase sees Adam without moments; without
    it, with the previous phase's."""
    import dcl_lib.methods.depict as D

    x = D.to_signed(load_dataset("digits").x[:400])
    calls = {"n": 0}

    def scripted_nmi(a, b):
        calls["n"] += 1
        return 0.9 if calls["n"] == 1 else 0.5

    first_step, warmup_rows = {}, []
    orig_update = D.update_network

    def spy_update(net, opt, xb, cfg, target):
        phase = "pretrain" if target is None else ("warmup" if target.dim() == 1 else "cluster")
        if phase == "warmup":
            warmup_rows.append(xb)
        if phase not in first_step:
            steps = [float(s["step"]) for s in opt.state.values() if "step" in s]
            first_step[phase] = (max(steps) if steps else 0.0, _weights(net))
        return orig_update(net, opt, xb, cfg, target)

    monkeypatch.setattr(D, "nmi", scripted_nmi)
    monkeypatch.setattr(D, "update_network", spy_update)
    head = {}
    orig_init = D.DepictNet.init_head

    def spy_init(net, centres):
        orig_init(net, centres)
        head.update(_weights(net))

    monkeypatch.setattr(D.DepictNet, "init_head", spy_init)
    cfg = _paper_tiny(stop_tol=0.0)
    net, hist = D.fit_depict(x, cfg, seed=0, device="cpu", verbose=False)
    assert hist.series["phase"].count("warmup") == cfg.warmup_patience
    for k, v in first_step["cluster"][1].items():  # the main loop starts from the start
        assert torch.equal(head[k], v), k
    assert first_step["warmup"][0] == 0.0 and first_step["cluster"][0] == 0.0
    # the warm-up trains on the other images
    _assert_trained_outside_the_heldout(x, warmup_rows, cfg.holdout, cfg.warmup_patience)
    first_step.clear()
    calls["n"] = 0
    D.fit_depict(x, dataclasses.replace(cfg, fresh_optimizer=False), seed=0, device="cpu",
                 verbose=False)
    assert first_step["warmup"][0] > 0 and first_step["cluster"][0] > 0


def test_the_paper_schedule_resumes_to_the_straight_runs_labels(tmp_path):
    """Cut after every epoch and resumed (through the pretraining's patience, the warm-up's
    best weights and the fresh optimisers), the run ends where a straight run ends."""
    from dcl_lib.train import TrainState

    x = load_dataset("digits").x[:400]
    cfg = _paper_tiny(pretrain_epochs=8)
    straight = DEPICT(10, cfg, random_state=1).fit(x)
    path, cuts = tmp_path / "state.pt", 0
    while True:
        st = TrainState(path, every_s=0, budget_s=0, resume=True)
        est = DEPICT(10, cfg, random_state=1).fit(x, state=st)
        if st.stopped_at is None:
            break
        cuts += 1
    assert cuts >= 8
    assert np.array_equal(straight.labels_, est.labels_)
