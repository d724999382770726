"""Data loaders: real files from the mirror, md5 checks, clear errors, subsets."""
import bz2
import gzip
import io
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import torch

from dcl_lib import data
from dcl_lib.data import (DataIntegrityError, DataNotFoundError, load_dataset, md5sum,
                          subset_indices)


def test_mnist_train_from_mirror(mirror, isolated_cache, monkeypatch):
    d = load_dataset("mnist", "train")
    assert d.x.shape == (60000, 1, 28, 28) and d.x.dtype == torch.float32
    assert float(d.x.min()) == 0.0 and float(d.x.max()) == 1.0
    counts = torch.bincount(d.y, minlength=10).tolist()
    # the well-known MNIST training-set class counts
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    # the archives were verified and copied into the cache, not read in place
    cached = isolated_cache / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    assert md5sum(cached) == data.MNIST_FILES["train-images"].md5


def test_mnist_all_and_test(mirror):
    t = load_dataset("mnist", "test")
    a = load_dataset("mnist", "all")
    assert len(t) == 10000 and len(a) == 70000
    assert torch.equal(a.x[60000:], t.x) and torch.equal(a.y[60000:], t.y)


def test_fashion_and_usps(mirror):
    f = load_dataset("fashion-mnist", "test")
    assert f.x.shape == (10000, 1, 28, 28)
    assert torch.bincount(f.y).tolist() == [1000] * 10
    u = load_dataset("usps", "all")
    assert u.x.shape == (9298, 1, 16, 16)
    assert 0.0 <= float(u.x.min()) and float(u.x.max()) <= 1.0
    assert len(load_dataset("usps", "train")) == 7291


def test_usps_torchvision_test_split(mirror):
    u = load_dataset("usps-torchvision", "test")
    assert u.x.shape == (2007, 1, 16, 16)
    assert set(u.y.unique().tolist()) == set(range(10))
    assert 0.0 <= float(u.x.min()) and float(u.x.max()) <= 1.0


def test_usps_torchvision_train_missing_offline(mirror, isolated_cache):
    with pytest.raises(DataNotFoundError, match="usps.bz2"):
        load_dataset("usps-torchvision", "train")


def test_digits_needs_no_file():
    d = load_dataset("digits", "all")
    assert d.x.shape == (1797, 1, 8, 8)
    assert float(d.x.max()) == 1.0


def test_md5_table_matches_torchvision():
    import torchvision.datasets as tvd

    ours = {r.filename: r.md5 for r in data.MNIST_FILES.values()}
    assert ours == {fn: md5 for fn, md5 in tvd.MNIST.resources}
    ours = {r.filename: r.md5 for r in data.FASHION_FILES.values()}
    assert ours == {fn: md5 for fn, md5 in tvd.FashionMNIST.resources}
    assert data.CIFAR10.md5 == tvd.CIFAR10.tgz_md5
    for split, (url, fn, md5) in tvd.USPS.split_list.items():
        assert (data.USPS_TV_FILES[split].filename, data.USPS_TV_FILES[split].md5) == (fn, md5)


def _fake_mirror(tmp_path, mirror, corrupt: str | None = None):
    fake = tmp_path / "mirror" / "MNIST" / "raw"
    fake.mkdir(parents=True)
    for f in (mirror / "MNIST" / "raw").iterdir():
        shutil.copy(f, fake / f.name)
    if corrupt:
        p = fake / corrupt
        b = bytearray(p.read_bytes())
        b[1000] ^= 0xFF
        p.write_bytes(bytes(b))
    return tmp_path / "mirror"


def test_corrupted_archive_is_refused_and_not_cached(mirror, isolated_cache, tmp_path, monkeypatch):
    fake = _fake_mirror(tmp_path, mirror, corrupt="t10k-images-idx3-ubyte.gz")
    monkeypatch.setenv("DCL_DATA_MIRROR", str(fake))
    with pytest.raises(DataIntegrityError) as e:
        load_dataset("mnist", "test")
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and data.MNIST_FILES["test-images"].md5 in msg
    raw = isolated_cache / "MNIST" / "raw"
    # nothing poisoned left behind: no copy of the bad archive, no temporary files
    assert not (raw / "t10k-images-idx3-ubyte.gz").exists()
    assert not list(raw.glob("*.part"))


def test_poisoned_cache_is_replaced(mirror, isolated_cache):
    raw = isolated_cache / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    d = load_dataset("mnist", "test")
    assert len(d) == 10000
    assert md5sum(raw / "t10k-labels-idx1-ubyte.gz") == data.MNIST_FILES["test-labels"].md5


def test_missing_files_error_names_files_and_env(isolated_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("DCL_DATA_MIRROR", str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("fashion-mnist", "train")
    msg = str(e.value)
    assert "FashionMNIST/raw/train-images-idx3-ubyte.gz" in msg
    assert "8d4fb7e6c68d591d4c3dfef9ec88bf0d" in msg and "DCL_DATA_MIRROR" in msg
    assert "FashionMNIST/raw/train-labels-idx1-ubyte.gz" in msg  # every file, not the first


def test_offline_without_a_mirror_names_every_missing_file(isolated_cache, monkeypatch):
    """No mirror: the loader tries to download; offline, the error still says which files
    to put where (all of them), after the download's own failure."""
    import dcl_lib.data as data

    monkeypatch.delenv("DCL_DATA_MIRROR", raising=False)

    def offline(res, dst):
        raise DataNotFoundError(f"could not download {res.filename}: no network")

    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("mnist", "train")
    msg = str(e.value)
    assert msg.startswith("could not download train-images-idx3-ubyte.gz")
    for f, md5 in (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                   ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432")):
        assert f"MNIST/raw/{f}  (md5 {md5})" in msg
    assert "DCL_DATA_MIRROR is not set" in msg


def test_subset_is_seeded_label_free_and_sorted():
    a = subset_indices(1000, 100, seed=3)
    b = subset_indices(1000, 100, seed=3)
    c = subset_indices(1000, 100, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a) > 0) and len(np.unique(a)) == 100
    d = load_dataset("digits", "all", subset=100, seed=3)
    full = load_dataset("digits", "all")
    idx = subset_indices(1797, 100, seed=3)
    assert np.array_equal(d.indices, idx)
    assert torch.equal(d.x, full.x[idx]) and torch.equal(d.y, full.y[idx])


def _cifar_archive(path):
    """A tiny archive laid out like CIFAR-10's python version."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            blob = pickle.dumps({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                                 "labels": list(rng.integers(0, 10, 4))})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    path.write_bytes(buf.getvalue())


def test_cifar10_code_path_on_a_small_archive(tmp_path, isolated_cache, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "CIFAR10").mkdir(parents=True)
    arc = mirror / "CIFAR10" / "cifar-10-python.tar.gz"
    _cifar_archive(arc)
    monkeypatch.setenv("DCL_DATA_MIRROR", str(mirror))
    # the real md5 refuses the small archive ...
    with pytest.raises(DataIntegrityError, match="c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", "train")
    # ... and with the registry pointed at its md5 the same code path loads it
    monkeypatch.setattr(data, "CIFAR10", data.Resource(data.CIFAR10.filename, md5sum(arc)))
    tr = load_dataset("cifar10", "train")
    te = load_dataset("cifar10", "test")
    assert tr.x.shape == (20, 3, 32, 32) and te.x.shape == (4, 3, 32, 32)
    assert tr.x.dtype == torch.float32 and float(tr.x.max()) <= 1.0


def test_usps_libsvm_parser(tmp_path):
    p = tmp_path / "u"
    p.write_text("3 1:-1 2:1 256:0\n10 5:0.5\n")
    x, y = data.read_usps_libsvm(p)
    assert y.tolist() == [2, 9]
    assert x.shape == (2, 1, 16, 16)
    assert x[0, 0, 0, 0] == 0.0 and x[0, 0, 0, 1] == 1.0 and x[0, 0, 15, 15] == 0.5
    assert x[1, 0, 0, 4] == 0.75 and x[1, 0, 0, 0] == 0.5


def test_idx_parser_rejects_garbage(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataIntegrityError, match="not an IDX file"):
        data.read_idx(p)
