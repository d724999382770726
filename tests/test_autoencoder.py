"""The dense autoencoder: it learns, it is deterministic on CPU, its runner method works."""
import dataclasses
import json

import pytest
import torch

from dcl_lib.data import load_dataset
from dcl_lib.methods.autoencoder import AutoencoderConfig, encode, train_autoencoder
from dcl_lib.nets import MLPAutoencoder, mlp
from dcl_lib.runner import run
from dcl_lib.train import load_checkpoint


def test_mlp_shapes_and_layers():
    net = mlp([8, 5, 3])
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear"]
    ae = MLPAutoencoder(64, (32, 16), 4)
    with torch.no_grad():
        z, x_hat = ae(torch.rand(7, 1, 8, 8))
    assert z.shape == (7, 4) and x_hat.shape == (7, 64)
    assert float(x_hat.min()) >= 0 and float(x_hat.max()) <= 1


def test_training_lowers_reconstruction_and_is_deterministic():
    X = load_dataset("digits").flat()[:600]
    cfg = AutoencoderConfig(hidden=(64, 32), latent_dim=5, epochs=8, batch_size=64)
    m1, h1 = train_autoencoder(X, cfg, seed=3)
    m2, h2 = train_autoencoder(X, cfg, seed=3)
    assert h1["loss/recon"][-1] < 0.8 * h1["loss/recon"][0]
    assert h1["loss/recon"] == h2["loss/recon"] and h1["step"] == list(range(1, 9))
    assert torch.equal(encode(m1, X), encode(m2, X))
    assert encode(m1, X).shape == (600, 5)


def test_runner_gmm_ae_on_digits(tmp_path):
    rec = run("gmm-ae", "digits", "quick", seed=0, out_dir=tmp_path,
              overrides={"hidden": (64,), "epochs": 3, "n_init": 1})
    saved = json.loads((tmp_path / "gmm-ae" / "digits-all-quick-seed0.json").read_text())
    assert saved["config"]["hidden"] == [64] and len(saved["history"]["loss/recon"]) == 3
    assert saved["metrics"]["acc"] > 0.3
    ck = load_checkpoint(tmp_path / "gmm-ae" / saved["checkpoint"])
    assert ck["means"].shape == (10, 10) and ck["encoder"]["0.weight"].dtype == torch.float16
    assert rec["metrics"] == saved["metrics"]


def test_runner_gmm_pixels_and_pca(tmp_path):
    pca = run("gmm", "digits", "quick", seed=0, out_dir=tmp_path, overrides={"pca_dim": 20})
    pix = run("gmm", "digits", "quick", seed=0, out_dir=tmp_path / "p",
              overrides={"features": "pixels", "covariance_type": "diag", "reg_covar": 1e-2})
    assert pca["metrics"]["acc"] > 0.5 and pix["metrics"]["acc"] > 0.4


def test_cached_autoencoder_is_the_live_one_and_its_key_sees_every_input(tmp_path, monkeypatch):
    """A cache hit must be indistinguishable from training live: the same weights, the
    same history, and torch's global generator left where training leaves it (dropout
    draws from it).  Any change of data, config or seed misses; DCL_RETRAIN=1 and an
    unreadable file train again."""
    from dcl_lib.methods import autoencoder as A

    monkeypatch.setenv("DCL_MODEL_CACHE", str(tmp_path))
    monkeypatch.delenv("DCL_RETRAIN", raising=False)
    X = load_dataset("digits").flat()[:400]
    cfg = AutoencoderConfig(hidden=(32,), latent_dim=4, epochs=3, batch_size=64)
    live, h_live = train_autoencoder(X, cfg, seed=5, verbose=False)
    after_live = torch.rand(3)

    m1, h1 = A.cached_autoencoder(X, cfg, seed=5, verbose=False)  # a miss: trains, saves
    assert h1.scalars["cached_from"] is None and len(list(tmp_path.glob("*.pt"))) == 1
    assert torch.equal(torch.rand(3), after_live)
    m2, h2 = A.cached_autoencoder(X, cfg, seed=5, verbose=False)  # a hit
    assert h2.scalars["cached_from"] == str(next(tmp_path.glob("*.pt")))
    assert torch.equal(torch.rand(3), after_live)  # the generator as after live training
    for m in (m1, m2):
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(),
                                                       live.state_dict().values()))
    assert h2["loss/recon"] == h_live["loss/recon"] and h2["step"] == h_live["step"]
    assert not m2.training
    torch.set_default_dtype(torch.float64)  # a chapter may set it (chapter 01 does): the
    try:                                    # network stays float32, as when trained live
        m3, _ = A.cached_autoencoder(X, cfg, seed=5, verbose=False)
    finally:
        torch.set_default_dtype(torch.float32)
    assert all(p.dtype == torch.float32 for p in m3.parameters())

    def no_training(*a, **k):
        raise AssertionError("trained although the cache holds this network")

    monkeypatch.setattr(A, "train_autoencoder", no_training)
    A.cached_autoencoder(X, cfg, seed=5, verbose=False)
    key = A._cache_key
    base = key(X, cfg, 5, torch.device("cpu"))
    assert base != key(X, cfg, 6, torch.device("cpu"))
    assert base != key(X, AutoencoderConfig(hidden=(32,), latent_dim=4, epochs=4,
                                            batch_size=64), 5, torch.device("cpu"))
    X2 = X.clone()
    X2[0, 0] += 1e-3
    assert base != key(X2, cfg, 5, torch.device("cpu"))
    with monkeypatch.context() as m:  # another thread count or vector unit rounds otherwise
        m.setattr(torch, "get_num_threads", lambda: 7)
        assert base != key(X, cfg, 5, torch.device("cpu"))
    own = torch.backends.cpu.get_cpu_capability()
    other = next(c for c in ("AVX512", "AVX2", "DEFAULT") if c != own)
    with monkeypatch.context() as m:  # a capability other than this machine's own
        m.setattr(torch.backends.cpu, "get_cpu_capability", lambda: other)
        assert base != key(X, cfg, 5, torch.device("cpu"))
    assert base == key(X.clone(), cfg, 5, torch.device("cpu"))
    for env, content in (("1", None), ("0", b"not a checkpoint")):
        monkeypatch.setenv("DCL_RETRAIN", env)
        if content:
            next(tmp_path.glob("*.pt")).write_bytes(content)
        with pytest.raises(AssertionError, match="trained although"):
            A.cached_autoencoder(X, cfg, seed=5, verbose=False)


def test_the_denoising_step_reconstructs_the_clean_input():
    """update_autoencoder against its equation written out: the input is masked (a fraction
    zeroed, the survivors not rescaled), the target is the clean x."""
    import torch.nn.functional as F

    from dcl_lib.methods.autoencoder import update_autoencoder

    x = torch.rand(32, 64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    a = MLPAutoencoder(64, (16,), 3)
    b = MLPAutoencoder(64, (16,), 3)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(5)
    loss = update_autoencoder(a, torch.optim.SGD(a.parameters(), lr=1.0), x, input_dropout=0.5)
    torch.manual_seed(5)  # the same mask
    x_in = F.dropout(x, 0.5) * 0.5
    assert (x_in == 0).float().mean() > 0.3 and torch.equal(x_in[x_in != 0], x[x_in != 0])
    ref = F.binary_cross_entropy(b(x_in)[1], x)
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-6)
    ref.backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb.detach() - pb.grad, atol=1e-6), n  # one SGD step, lr 1


def test_the_recipe_options_build_and_train_what_they_say():
    """ae_loss='mse' has a linear output and minimises the squared error; ae_init='dec'
    draws every weight within sqrt(1/fan_in) with zero biases; ae_optimizer='sgd' uses
    momentum."""
    import dataclasses

    import torch.nn.functional as F

    from dcl_lib.methods.autoencoder import build_autoencoder, update_autoencoder

    cfg = AutoencoderConfig(hidden=(16,), latent_dim=3, ae_loss="mse", ae_optimizer="sgd", ae_init="dec",
                            lr=0.5, epochs=3, batch_size=32)
    torch.manual_seed(0)
    ae = build_autoencoder(64, cfg)
    assert not isinstance(ae.decoder[-1], torch.nn.Sigmoid)
    for m in ae.modules():
        if isinstance(m, torch.nn.Linear):
            assert float(m.weight.detach().abs().max()) <= (1 / m.in_features) ** 0.5
            assert float(m.bias.detach().abs().max()) == 0.0
    x = torch.rand(32, 64, generator=torch.Generator().manual_seed(1))
    ref = F.mse_loss(ae(x)[1], x)
    assert float(update_autoencoder(ae, torch.optim.SGD(ae.parameters(), lr=0.0), x, 0.0, "mse")) \
        == pytest.approx(float(ref.detach()), rel=1e-6)
    X = load_dataset("digits").flat()[:400]
    m, h = train_autoencoder(X, cfg, seed=0, verbose=False)
    assert h["loss/recon"][-1] < h["loss/recon"][0]
    for field, value in (("ae_loss", "l1"), ("ae_optimizer", "rmsprop"), ("ae_init", "he"),
                         ("ae_lr_schedule", "step")):
        with pytest.raises(ValueError, match=f"{field} must be"):
            train_autoencoder(X, dataclasses.replace(cfg, **{field: value}), verbose=False)


def test_the_cosine_schedule_sets_each_epochs_learning_rate_and_resumes_on_it(tmp_path):
    """ae_lr_schedule='cosine': epoch e of E trains at lr (1 + cos(pi (e-1)/E)) / 2 (an
    independent formula, read from the optimiser inside the epoch); 'constant' keeps lr;
    a run stopped and resumed trains the same weights as one straight run."""
    import dataclasses
    import math

    from dcl_lib.methods import autoencoder as ae_mod
    from dcl_lib.train import TrainState

    cfg = AutoencoderConfig(hidden=(16,), latent_dim=3, lr=0.01, epochs=4, batch_size=100,
                            ae_lr_schedule="cosine")
    X = load_dataset("digits").flat()[:200]
    seen = []
    real = ae_mod.update_autoencoder

    def spy(model, opt, x, *a):
        seen.append(opt.param_groups[0]["lr"])
        return real(model, opt, x, *a)

    ae_mod.update_autoencoder = spy
    try:
        straight, _ = train_autoencoder(X, cfg, seed=0, verbose=False)
        const = dataclasses.replace(cfg, ae_lr_schedule="constant")
        train_autoencoder(X, const, seed=0, verbose=False)
    finally:
        ae_mod.update_autoencoder = real
    want = [0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert seen[:8] == pytest.approx([w for w in want for _ in range(2)], rel=1e-12)
    assert seen[8:] == [0.01] * 8
    cut = TrainState(tmp_path / "ae.pt", every_s=0, budget_s=0)  # stops after epoch 1
    train_autoencoder(X, cfg, seed=0, verbose=False, state=cut)
    assert cut.stopped_at == 1
    resumed, _ = train_autoencoder(X, cfg, seed=0, verbose=False,
                                   state=TrainState(tmp_path / "ae.pt", resume=True))
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_reconstruction_loss_against_its_formulas_and_an_unknown_name():
    from dcl_lib.methods.autoencoder import reconstruction_loss

    g = torch.Generator().manual_seed(0)
    x, x_hat = torch.rand(5, 7, generator=g), torch.rand(5, 7, generator=g) * 0.98 + 0.01
    bce = -(x * x_hat.log() + (1 - x) * (1 - x_hat).log()).mean()
    assert float(reconstruction_loss(x_hat, x, "bce")) == pytest.approx(float(bce), rel=1e-5)
    assert float(reconstruction_loss(x_hat, x, "mse")) == pytest.approx(
        float(((x_hat - x) ** 2).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="loss must be 'bce' or 'mse', got 'l1'"):
        reconstruction_loss(x_hat, x, "l1")


def test_a_cache_miss_trains_with_the_epoch_hook_and_a_hit_never_calls_it(tmp_path, monkeypatch):
    from dcl_lib.methods.autoencoder import cached_autoencoder

    monkeypatch.setenv("DCL_MODEL_CACHE", str(tmp_path))
    monkeypatch.delenv("DCL_RETRAIN", raising=False)
    cfg = AutoencoderConfig(hidden=(16,), latent_dim=3, epochs=3, batch_size=100)
    X = load_dataset("digits").flat()[:200]
    seen = []
    cached_autoencoder(X, cfg, 0, verbose=False, on_epoch=lambda e, m: seen.append(e))
    assert seen == [1, 2, 3]
    _, hist = cached_autoencoder(X, cfg, 0, verbose=False, on_epoch=lambda e, m: seen.append(e))
    assert seen == [1, 2, 3] and hist.scalars["cached_from"]


def test_ae_kmeans_runner_reloads_to_its_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("DCL_MODEL_CACHE", str(tmp_path / "models"))
    rec = run("ae-kmeans", "digits", "quick", seed=0, out_dir=tmp_path,
              overrides={"hidden": (32,), "epochs": 3, "kmeans_n_init": 2})
    from dcl_lib.results import reevaluate

    got, labels = reevaluate(tmp_path / "ae-kmeans" / "digits-all-quick-seed0.json")
    assert got["acc"] == pytest.approx(rec["metrics"]["acc"], abs=5e-4)
    assert rec["metrics"]["acc"] > 0.3  # digits' 10 classes: chance is 0.1
    # the training's seconds are recorded; a second run loads the network from the cache
    # and records the same training, so a seed's time counts it either way
    assert rec["metrics"]["autoencoder_cached"] == 0.0
    again = run("ae-kmeans", "digits", "quick", seed=0, out_dir=tmp_path / "again",
                overrides={"hidden": (32,), "epochs": 3, "kmeans_n_init": 2})
    assert again["metrics"]["autoencoder_cached"] == 1.0
    assert again["metrics"]["autoencoder_seconds"] == rec["metrics"]["autoencoder_seconds"]
    assert again["metrics"]["acc"] == rec["metrics"]["acc"]


def test_no_method_config_redefines_an_autoencoder_field():
    """The methods that cluster the shared autoencoder's codes extend its config; a field of
    theirs with an autoencoder field's name (GANMM's ``init``, DCAN's ``loss``) would
    silently replace the autoencoder's in ``autoencoder()`` and fail or change its
    training.  Every registered config that extends it hands back, at each profile, an
    autoencoder config that validates and carries the base defaults the profile leaves."""
    import dataclasses

    from dcl_lib.methods import get_spec, method_names

    base = {f.name: f.default for f in dataclasses.fields(AutoencoderConfig)}
    extended = []
    for name in method_names():
        cls = get_spec(name).config
        if not issubclass(cls, AutoencoderConfig):
            continue
        extended.append(name)
        for klass in cls.__mro__[:cls.__mro__.index(AutoencoderConfig)]:
            own = set(vars(klass).get("__annotations__", {}))
            assert not own & set(base), (name, klass.__name__, own & set(base))
        for profile in ("quick", "full"):
            cfg = cls.for_profile(profile)
            ae = cfg.autoencoder()
            ae.validate()
            pinned = AutoencoderConfig.profiles.get(profile, {})
            for field, default in base.items():
                if field not in pinned and field not in cls.profiles.get(profile, {}):
                    assert getattr(ae, field) == default, (name, profile, field)
    assert {"gmm-ae", "ganmm", "dcan", "dec", "ae-kmeans"} <= set(extended)


def test_both_profiles_train_the_autoencoder_with_one_recipe():
    """The quick profile is the full profile's recipe (DEC-keras': SGD at learning rate 1
    with momentum 0.9 on the squared error, no dropout, its initialisation) at its size:
    only the stack, the epochs and the batch differ (issue 37)."""
    q, f = (dataclasses.asdict(AutoencoderConfig.for_profile(p)) for p in ("quick", "full"))
    size = ("hidden", "epochs", "batch_size")
    assert {k: v for k, v in q.items() if k not in size} == \
        {k: v for k, v in f.items() if k not in size}
    assert (f["ae_optimizer"], f["ae_loss"], f["lr"], f["input_dropout"]) == ("sgd", "mse", 1.0, 0.0)
    assert all(q[k] != f[k] for k in size)
