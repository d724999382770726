"""Datasets by name: mirror -> md5 -> writable cache -> tensors.

Every loader returns an :class:`ImageData` whose ``x`` is a float32 tensor of
shape ``(N, C, H, W)`` scaled to ``[0, 1]`` and whose ``y`` is an int64 tensor
of class labels.  Labels are for evaluation only: no method in this book sees
them during training.

Where the files come from, in this order:

1. the writable cache ``DCL_DATA_DIR`` (default ``~/.cache/dcl/data``), when it
   already holds a copy whose md5 is right;
2. a read-only *mirror* folder named by ``DCL_DATA_MIRROR`` laid out as
   torchvision lays out its roots (``MNIST/raw/train-images-idx3-ubyte.gz``,
   ``USPS/usps.h5`` ...).  Files are md5-checked, copied into the cache under
   a temporary name and renamed only once verified, so a corrupted archive
   never leaves a poisoned cache behind;
3. the internet, through torchvision's own downloader and md5 list, when
   ``download=True`` (the default is ``True`` only when no mirror is set).

Anything missing raises :class:`DataNotFoundError` naming the files, their
md5 sums and where to put them.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ._io import atomic_path, user_cache

__all__ = [
    "DATASETS",
    "DataError",
    "DataNotFoundError",
    "DataIntegrityError",
    "ImageData",
    "Resource",
    "cache_dir",
    "load_dataset",
    "md5sum",
    "subset_indices",
]


class DataError(RuntimeError):
    """Base class for data problems (missing or corrupted files)."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A required file is neither in the cache nor in the mirror."""


class DataIntegrityError(DataError, ValueError):
    """A file exists but its md5 does not match the expected one."""


@dataclass(frozen=True)
class Resource:
    """One original archive: its file name, md5 and download URLs."""

    filename: str
    md5: str
    urls: tuple[str, ...] = ()


@dataclass
class ImageData:
    """Images and labels of one split of one dataset.

    Attributes
    ----------
    x : Tensor (N, C, H, W), float32 in [0, 1]
    y : Tensor (N,), int64 class labels (evaluation only)
    name, split : what was loaded
    indices : positions of the rows in the full split (after ``subset``)
    classes : number of classes
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    split: str
    indices: np.ndarray
    classes: int

    def __len__(self) -> int:
        return self.x.shape[0]

    def flat(self) -> torch.Tensor:
        """The images as a ``(N, C*H*W)`` matrix."""
        return self.x.reshape(len(self), -1)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# Files: md5, cache, mirror
# ---------------------------------------------------------------------------

def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The md5 hex digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """The writable data cache: ``$DCL_DATA_DIR`` or ``~/.cache/dcl/data``."""
    return user_cache("DCL_DATA_DIR", "data")


def mirror_dir() -> Path | None:
    """The read-only mirror named by ``$DCL_DATA_MIRROR``, or ``None``."""
    env = os.environ.get("DCL_DATA_MIRROR")
    return Path(env).expanduser() if env else None


def _atomic_copy(src: Path, dst: Path, md5: str) -> None:
    """Copy ``src`` to ``dst`` through a temporary file verified before rename."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        got = md5sum(tmp)
        if got != md5:
            raise DataIntegrityError(
                f"{src} has md5 {got}, expected {md5}: the file is corrupted or "
                f"not the original archive. Replace it with the original file."
            )


def _download(res: Resource, dst: Path) -> None:
    """Download through torchvision's downloader (which checks the md5)."""
    from torchvision.datasets.utils import download_url

    errors = []
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmpdir:
        for url in res.urls:
            try:
                download_url(url, tmpdir, filename=res.filename, md5=res.md5)
                tmp = Path(tmpdir) / res.filename
                if tmp.exists() and md5sum(tmp) == res.md5:
                    os.replace(tmp, dst)
                    return
                errors.append(f"{url}: md5 mismatch")
            except Exception as exc:  # network errors differ across versions
                errors.append(f"{url}: {exc}")
    raise DataNotFoundError(
        f"could not download {res.filename}: " + "; ".join(errors)
    )


def _missing_message(dataset: str, folder: str, resources: list[Resource]) -> str:
    lines = "\n".join(f"  {folder}/{r.filename}  (md5 {r.md5})" for r in resources)
    mirror = mirror_dir()
    where = (
        f"DCL_DATA_MIRROR is set to {mirror}, which lacks them."
        if mirror
        else "DCL_DATA_MIRROR is not set."
    )
    return (
        f"dataset {dataset!r}: missing file(s)\n{lines}\n"
        f"Put them under a folder laid out as above and point DCL_DATA_MIRROR at it "
        f"(e.g. DCL_DATA_MIRROR=../shared/data), or copy them into the cache "
        f"{cache_dir()} at the same relative paths, or pass download=True when online. "
        f"{where}"
    )


def fetch(dataset: str, folder: str, res: Resource, download: bool | None) -> Path:
    """Return a verified local copy of ``res`` in the cache, fetching it if needed.

    Order: cache (md5 ok) -> mirror (md5 checked, atomic copy) -> download.
    A cached copy with a wrong md5 is deleted and fetched again.
    """
    dst = cache_dir() / folder / res.filename
    if dst.exists():
        if md5sum(dst) == res.md5:
            return dst
        dst.unlink()  # poisoned cache: never reuse
    mirror = mirror_dir()
    if mirror is not None:
        src = mirror / folder / res.filename
        if src.exists():
            _atomic_copy(src, dst, res.md5)
            return dst
    if download is None:
        download = mirror is None
    if download and res.urls:
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            _download(res, dst)
        except DataNotFoundError as exc:  # offline: say what to put where
            raise DataNotFoundError(f"{exc}\n{_missing_message(dataset, folder, [res])}") from None
        return dst
    raise DataNotFoundError(_missing_message(dataset, folder, [res]))


def _present(folder: str, res: Resource) -> bool:
    """Whether ``res`` is in the cache or the mirror (not checked here: fetch checks)."""
    mirror = mirror_dir()
    return (cache_dir() / folder / res.filename).exists() or (
        mirror is not None and (mirror / folder / res.filename).exists())


def fetch_all(dataset: str, folder: str, resources: list[Resource], download: bool | None
              ) -> list[Path]:
    """:func:`fetch` for several files; when some are missing and cannot be downloaded,
    the error names all of them at once (not only the first)."""
    missing = [r for r in resources if not _present(folder, r)]
    if missing and not (mirror_dir() is None if download is None else download):
        raise DataNotFoundError(_missing_message(dataset, folder, missing))
    try:
        return [fetch(dataset, folder, r, download) for r in resources]
    except DataNotFoundError as exc:  # a download failed (offline): every missing file, once
        first = str(exc).splitlines()[0]
        raise DataNotFoundError(f"{first}\n{_missing_message(dataset, folder, missing)}") from None


def _extracted(archive: Path, opener: Callable, suffix: str) -> Path:
    """Decompress ``archive`` next to itself once (atomically); return the path."""
    out = archive.with_name(archive.name[: -len(suffix)])
    if out.exists():
        return out
    with atomic_path(out) as tmp, opener(archive, "rb") as f_in, open(tmp, "wb") as f_out:
        shutil.copyfileobj(f_in, f_out)
    return out


# ---------------------------------------------------------------------------
# Parsers (no torchvision dataset classes: their internals change by version)
# ---------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Read an (uncompressed) IDX file as used by MNIST and Fashion-MNIST."""
    data = path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataIntegrityError(f"{path} is not an IDX file")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise DataIntegrityError(f"{path}: unsupported IDX dtype 0x{dtype_code:02x}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataIntegrityError(f"{path}: header says {shape}, found {arr.size} values")
    return arr.reshape(shape)


def read_usps_libsvm(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's USPS files: ``label idx:value ...`` with values in [-1, 1]."""
    xs, ys = [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            ys.append(int(float(parts[0])) - 1)  # labels 1..10 -> 0..9
            row = np.zeros(256, dtype=np.float32)
            for item in parts[1:]:
                k, v = item.split(":")
                row[int(k) - 1] = float(v)
            xs.append(row)
    x = (np.stack(xs) + 1.0) / 2.0
    return x.reshape(-1, 1, 16, 16), np.asarray(ys, dtype=np.int64)


# ---------------------------------------------------------------------------
# Dataset registry
# ---------------------------------------------------------------------------

_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
               "http://yann.lecun.com/exdb/mnist/")
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def _mnist_like(files: dict[str, tuple[str, str]], bases: tuple[str, ...]):
    return {k: Resource(fn, md5, tuple(b + fn for b in bases)) for k, (fn, md5) in files.items()}


# md5 sums are torchvision's (``torchvision.datasets.MNIST.resources`` etc.);
# tests/test_data.py checks they still agree with the installed torchvision.
MNIST_FILES = _mnist_like({
    "train-images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test-images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test-labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}, _MNIST_URLS)
FASHION_FILES = _mnist_like({
    "train-images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train-labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    "test-images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    "test-labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}, (_FASHION_URL,))
_USPS_TV_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/"
USPS_TV_FILES = {
    "train": Resource("usps.bz2", "ec16c51db3855ca6c91edd34d0e9b197", (_USPS_TV_URL + "usps.bz2",)),
    "test": Resource("usps.t.bz2", "8ea070ee2aca1ac39742fdd1ef5ed118", (_USPS_TV_URL + "usps.t.bz2",)),
}
# The Hastie USPS (7,291 train + 2,007 test) as an HDF5 file; it has no
# canonical download URL, so it is mirror-only.
USPS_H5 = Resource("usps.h5", "355df6b942eb766252e0340bc019b0b9")
CIFAR10 = Resource(
    "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
)


def _load_idx_pair(dataset, folder, files, part, download):
    imgs, labs = fetch_all(dataset, folder, [files[f"{part}-images"], files[f"{part}-labels"]],
                           download)
    x = read_idx(_extracted(imgs, gzip.open, ".gz"))
    y = read_idx(_extracted(labs, gzip.open, ".gz"))
    if x.shape[0] != y.shape[0]:
        raise DataIntegrityError(f"{dataset} {part}: {x.shape[0]} images but {y.shape[0]} labels")
    return x[:, None].astype(np.float32) / 255.0, y.astype(np.int64)


def _loader_mnist_like(dataset: str, folder: str, files: dict):
    def load(split: str, download):
        return _load_idx_pair(dataset, folder, files, "train" if split == "train" else "test", download)
    return load


def _load_usps_h5(split: str, download):
    import h5py

    path = fetch("usps", "USPS", USPS_H5, download=False)
    with h5py.File(path, "r") as f:
        g = f[split]
        x = np.asarray(g["data"], dtype=np.float32).reshape(-1, 1, 16, 16)
        y = np.asarray(g["target"], dtype=np.int64)
    return x, y


def _load_usps_tv(split: str, download):
    path = fetch("usps-torchvision", "USPS", USPS_TV_FILES[split], download)
    return read_usps_libsvm(_extracted(path, bz2.open, ".bz2"))


def _load_digits(split: str, download):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    return x, d.target.astype(np.int64)


def _load_cifar10(split: str, download):
    archive = fetch("cifar10", "CIFAR10", CIFAR10, download)
    out = archive.parent / "cifar-10-batches-py"
    if not out.exists():
        tmp = Path(tempfile.mkdtemp(prefix="cifar.", dir=archive.parent))
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = [m for m in tar.getmembers()
                           if m.isfile() and m.name.startswith("cifar-10-batches-py/")
                           and ".." not in m.name]
                for m in members:
                    f = tar.extractfile(m)
                    target = tmp / m.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(f.read())
            os.replace(tmp / "cifar-10-batches-py", out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for n in names:
        with open(out / n, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d["labels"], dtype=np.int64))
    return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)


@dataclass(frozen=True)
class DatasetSpec:
    loader: Callable
    splits: tuple[str, ...]  # the native splits; "all" concatenates them
    classes: int
    description: str


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(_loader_mnist_like("mnist", "MNIST/raw", MNIST_FILES), ("train", "test"), 10,
                         "MNIST handwritten digits, 28x28, 60,000 + 10,000"),
    "fashion-mnist": DatasetSpec(_loader_mnist_like("fashion-mnist", "FashionMNIST/raw", FASHION_FILES),
                                 ("train", "test"), 10,
                                 "Fashion-MNIST clothing, 28x28, 60,000 + 10,000"),
    "usps": DatasetSpec(_load_usps_h5, ("train", "test"), 10,
                        "USPS digits (Hastie HDF5), 16x16, 7,291 + 2,007"),
    "usps-torchvision": DatasetSpec(_load_usps_tv, ("train", "test"), 10,
                                    "USPS digits in torchvision's libsvm format, 16x16"),
    "digits": DatasetSpec(_load_digits, ("all",), 10,
                          "scikit-learn's 8x8 digits, 1,797 images (no file needed)"),
    "cifar10": DatasetSpec(_load_cifar10, ("train", "test"), 10,
                           "CIFAR-10, 32x32 RGB, 50,000 + 10,000"),
}


def subset_indices(n: int, size: int | None, seed: int) -> np.ndarray:
    """A seeded, label-free random subset of ``range(n)``, sorted.

    ``size=None`` or ``size >= n`` returns every index.
    """
    if size is None or size >= n:
        return np.arange(n)
    if size <= 0:
        raise ValueError(f"subset size must be positive, got {size}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False))


def load_dataset(
    name: str,
    split: str | None = None,
    subset: int | None = None,
    seed: int = 0,
    download: bool | None = None,
) -> ImageData:
    """Load a dataset by name.

    Parameters
    ----------
    name : one of ``DATASETS`` (``mnist``, ``fashion-mnist``, ``usps``,
        ``usps-torchvision``, ``digits``, ``cifar10``).
    split : ``train``, ``test`` or ``all`` (the native splits concatenated,
        train first); default ``train`` (``all`` for ``digits``, which has
        no other).
    subset : if given, a seeded random subset of this many images, drawn
        without looking at labels.
    seed : seed of that subset.
    download : allow downloading; default: only when no mirror is configured.

    Returns
    -------
    ImageData with ``x`` float32 in [0, 1], shape (N, C, H, W).
    """
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    spec = DATASETS[key]
    split = split or spec.splits[0]
    allowed = spec.splits if spec.splits == ("all",) else spec.splits + ("all",)
    if split not in allowed:
        raise ValueError(f"dataset {key!r} has splits {list(allowed)}, not {split!r}")
    if subset is not None and (not isinstance(subset, (int, np.integer)) or subset <= 0):
        raise ValueError(f"subset must be a positive integer or None, got {subset!r}")
    parts = spec.splits if split == "all" else (split,)
    xs, ys = zip(*(spec.loader(p, download) for p in parts))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    idx = subset_indices(len(x), subset, seed)
    return ImageData(
        x=torch.from_numpy(np.ascontiguousarray(x[idx])),
        y=torch.from_numpy(np.ascontiguousarray(y[idx])),
        name=key, split=split, indices=idx, classes=spec.classes,
    )
