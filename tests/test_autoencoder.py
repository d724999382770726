"""The dense autoencoder: it learns, it is deterministic on CPU, its runner method works."""
import json

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
