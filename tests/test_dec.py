"""DEC: the soft assignment, the target and the loss against independent computations, the
step against its equation, the loop's contracts (target refresh, stopping, resume),
quality against its k-means start, bad input."""
import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from dcl_lib.data import load_dataset
from dcl_lib.methods.dec import (DEC, ClusterLayer, DECConfig, dec_loss, soft_assign,
                                 target_distribution, train_dec, update_dec)
from dcl_lib.nets import MLPAutoencoder


def _q(seed=0, n=40, k=4):
    g = torch.Generator().manual_seed(seed)
    z, mu = torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(k, 3, generator=g,
                                                                            dtype=torch.float64)
    return z, mu


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_soft_assignment_is_the_normalised_student_t_kernel(alpha):
    z, mu = _q()
    zn, mn = z.numpy(), mu.numpy()
    kern = (1 + ((zn[:, None] - mn[None]) ** 2).sum(-1) / alpha) ** (-(alpha + 1) / 2)
    ref = kern / kern.sum(1, keepdims=True)
    assert np.allclose(soft_assign(z, mu, alpha).numpy(), ref, atol=1e-12)


def test_target_is_q_squared_over_frequency_and_the_depict_chapter_s():
    from dcl_lib.methods.depict import depict_target

    z, mu = _q()
    q = soft_assign(z, mu).numpy()
    w = q ** 2 / q.sum(0)
    ref = w / w.sum(1, keepdims=True)
    p = target_distribution(torch.tensor(q))
    assert np.allclose(p.numpy(), ref, atol=1e-12)
    assert torch.allclose(p, depict_target(torch.tensor(q), "dec"), atol=1e-12)
    # sharper than q where q is already confident: the largest entry of every row grows
    assert (p.max(1).values >= torch.tensor(q).max(1).values - 1e-12).all()


def test_loss_is_the_mean_row_kl_of_p_to_q():
    z, mu = _q()
    q = soft_assign(z, mu)
    p = target_distribution(q)
    ref = np.mean([entropy(a, b) for a, b in zip(p.numpy(), q.numpy())])
    assert float(dec_loss(q, p)) == pytest.approx(ref, rel=1e-10)


def test_the_step_moves_the_encoder_and_the_centres_by_the_kl_gradient():
    """update_dec against its equation written out: one SGD step of lr 1 moves every
    parameter (the encoder's and the centres) by minus its gradient; p is held fixed."""
    torch.manual_seed(0)
    ae = MLPAutoencoder(12, (8,), 3)
    x = torch.rand(16, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mu0 = ae.encode(x)[:4].clone()
    enc_b = MLPAutoencoder(12, (8,), 3)
    enc_b.load_state_dict(ae.state_dict())
    layer_a, layer_b = ClusterLayer(mu0), ClusterLayer(mu0)
    with torch.no_grad():
        p = target_distribution(layer_a(ae.encode(x)))
    params = list(ae.encoder.parameters()) + list(layer_a.parameters())
    loss = update_dec(ae.encoder, layer_a, torch.optim.SGD(params, lr=1.0), x, p)
    q = soft_assign(enc_b.encode(x), layer_b.mu)
    ref = (p * (p.log() - q.log())).sum(1).mean()
    assert float(loss) == pytest.approx(ref.item(), rel=1e-6)
    ref.backward()
    for a, b in zip(params, list(enc_b.encoder.parameters()) + list(layer_b.parameters())):
        assert b.grad is not None and float(b.grad.abs().sum()) > 0
        assert torch.allclose(a, b.detach() - b.grad, atol=1e-6)


def _digits_case(**kw):
    d = load_dataset("digits")
    X = d.flat()
    torch.manual_seed(0)
    ae = MLPAutoencoder(64, (64, 64), 10)
    opt = torch.optim.Adam(ae.parameters(), 1e-3)
    for _ in range(300):  # a quick pretraining (reconstruction only)
        b = torch.randint(len(X), (128,), generator=torch.Generator().manual_seed(_))
        loss = torch.nn.functional.binary_cross_entropy(ae(X[b])[1], X[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    ae.eval()
    cfg = dataclasses.replace(DECConfig(), **{"hidden": (64, 64), "update_interval": 20,
                                              "dec_batch": 64, "kmeans_n_init": 5,
                                              "max_steps": 600, **kw})
    return X, d.y, ae, cfg


def test_the_target_is_refreshed_every_update_interval_steps_and_tol_stops(monkeypatch):
    import dcl_lib.methods.dec as dec

    X, y, ae, cfg = _digits_case()
    calls = []
    orig = dec.target_distribution
    monkeypatch.setattr(dec, "target_distribution", lambda q: (calls.append(1), orig(q))[1])
    _, _, h = train_dec(X, ae, dataclasses.replace(cfg, max_steps=100, tol=0.0), verbose=False)
    assert h["step"] == [0, 20, 40, 60, 80, 100] and len(calls) == 6
    assert h.scalars["stopped_by"] == "max_steps"
    _, _, h = train_dec(X, ae, dataclasses.replace(cfg, tol=0.5), verbose=False)
    assert h["step"] == [0, 20] and h["changed"][1] < 0.5 and h.scalars["stopped_by"] == "tol"


def test_dec_improves_on_its_k_means_start():
    """The method against its own start on scikit-learn's digits (measured with this
    pretraining, seeds 0-2: 0.499 -> 0.533, 0.473 -> 0.508, 0.494 -> 0.542)."""
    from dcl_lib.metrics import cluster_acc

    X, y, ae, cfg = _digits_case()
    enc, layer, h = train_dec(X, ae, cfg, seed=0, y=y, verbose=False)
    final = cluster_acc(y, layer(enc(X)).argmax(1).numpy())
    assert final >= h.scalars["kmeans_acc"] + 0.015, (h.scalars["kmeans_acc"], final)
    assert not any(p.requires_grad is False for p in ae.parameters())  # the input unchanged


def test_estimator_reuses_a_given_autoencoder_and_predicts_its_labels():
    X, y, ae, cfg = _digits_case(max_steps=40)
    est = DEC(10, cfg, random_state=1).fit(X, autoencoder=ae)
    assert np.array_equal(est.predict(X), est.labels_)
    assert np.allclose(est.predict_proba(X).sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="larger than the number of samples"):
        DEC(5000, cfg).fit(X, autoencoder=ae)
    bad = X.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        DEC(10, cfg).fit(bad, autoencoder=ae)


def test_the_runner_records_the_shared_autoencoder_s_training(tmp_path, monkeypatch):
    """As every method on the shared codes: a live training's seconds, and the same seconds
    from a run that loads the network from the model cache (so a seed's cost counts it)."""
    from dcl_lib.runner import run

    monkeypatch.setenv("DCL_MODEL_CACHE", str(tmp_path / "models"))
    small = {"hidden": (32,), "epochs": 2, "max_steps": 30, "update_interval": 10,
             "kmeans_n_init": 2}
    rec = run("dec", "digits", "quick", seed=0, out_dir=tmp_path, overrides=small)
    again = run("dec", "digits", "quick", seed=0, out_dir=tmp_path / "again", overrides=small)
    assert (rec["metrics"]["autoencoder_cached"], again["metrics"]["autoencoder_cached"]) \
        == (0.0, 1.0)
    assert again["metrics"]["autoencoder_seconds"] == rec["metrics"]["autoencoder_seconds"] > 0
    assert again["metrics"]["acc"] == rec["metrics"]["acc"]
