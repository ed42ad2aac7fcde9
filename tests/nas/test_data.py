from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.tasks._data import (
    MNIST_MEAN,
    MNIST_STD,
    _split_indices,
    load_digits,
    load_mnist,
    load_mnist_resized,
)


def test_mnist_loads_28x28_split_4000_1000() -> None:
    split = load_mnist()
    X, y = split.train
    Xv, yv = split.val
    assert X.shape == (4000, 1, 28, 28) and Xv.shape == (1000, 1, 28, 28)
    assert X.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) == set(range(10)) and set(yv.tolist()) == set(range(10))
    # standardised with the usual MNIST constants: background is (0 - mean) / std
    assert float(X.min()) == pytest.approx(-MNIST_MEAN / MNIST_STD, rel=1e-5)
    assert abs(float(X.mean())) < 0.2
    assert split.num_classes == 10


def test_split_is_deterministic_and_disjoint() -> None:
    a, b = load_mnist(), load_mnist()
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.val[1], b.val[1])
    assert a.fingerprint() == b.fingerprint()
    train_idx, val_idx = _split_indices(5000, 1000, seed=0)
    assert len(set(train_idx) & set(val_idx)) == 0 and len(train_idx) + len(val_idx) == 5000
    other = load_mnist(seed=1)
    assert other.fingerprint() != a.fingerprint()


def test_resized_mnist_keeps_split_and_labels_at_64x64() -> None:
    small, big = load_mnist(), load_mnist_resized(64)
    assert big.train[0].shape == (4000, 1, 64, 64) and big.val[0].shape == (1000, 1, 64, 64)
    assert torch.equal(small.train[1], big.train[1]) and torch.equal(small.val[1], big.val[1])
    # the same images: downsampling the 64x64 ones comes back close to the originals
    back = torch.nn.functional.interpolate(big.val[0][:50], size=(28, 28), mode="area")
    same = float((back - small.val[0][:50]).abs().mean())
    other = float((back - small.val[0][50:100]).abs().mean())
    assert same < 0.3 * other
    assert big.fingerprint() != small.fingerprint()


def test_digits_loads_8x8() -> None:
    split = load_digits()
    assert split.train[0].shape == (1437, 1, 8, 8) and split.val[0].shape == (360, 1, 8, 8)
    assert split.train[1].dtype == torch.int64
    full = torch.cat([split.train[0], split.val[0]])
    assert float(full.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(full.std()) == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("n_val", [0, 5000, -1])
def test_split_size_checked(n_val: int) -> None:
    with pytest.raises(ValueError, match="n_val must be in"):
        _split_indices(5000, n_val, seed=0)


def test_split_indices_sorted() -> None:
    train_idx, val_idx = _split_indices(100, 10, seed=3)
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(val_idx) > 0)
