"""Dataset registry and deterministic train / val / test splits held in memory as uint8 tensors."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from autocompress.data.cifar import load_cifar10
from autocompress.errors import DataError, unknown_name_error

SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: its input shape, classes and normalisation constants."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_size: int
    needs_data_dir: bool
    description: str
    augment_padding: int
    augment_flip: bool


@dataclass(frozen=True)
class DatasetSplits:
    """The three splits of a dataset as uint8 images (N×C×H×W) and int64 labels.

    The val split is held out from the training set; searches score on it. The test split is only for final reports.
    """

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (images, labels) of ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise unknown_name_error("split", name, ["train", "val", "test"])
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        name="digits",
        input_shape=(1, 8, 8),
        num_classes=10,
        mean=(0.3052,),
        std=(0.3757,),
        val_size=180,
        needs_data_dir=False,
        description="scikit-learn's bundled 8x8 handwritten digits (1,797 images), offline",
        augment_padding=1,
        augment_flip=False,
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        input_shape=(3, 32, 32),
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        val_size=5000,
        needs_data_dir=True,
        description="CIFAR-10 32x32 colour images, 10 classes (--data-dir or AUTOCOMPRESS_DATA_DIR)",
        augment_padding=4,
        augment_flip=True,
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """Return the static facts of a dataset by name, with a "did you mean" for unknown names."""
    if name not in DATASETS:
        raise unknown_name_error("dataset", name, DATASETS)
    return DATASETS[name]


def _load_digits() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = 360
    test, train = order[:n_test], order[n_test:]
    return (images[train], labels[train]), (images[test], labels[test])


def _holdout(x: np.ndarray, y: np.ndarray, val_size: int) -> tuple[np.ndarray, ...]:
    """Split a class-balanced val set of ``val_size`` images off the training set, deterministically."""
    rng = np.random.default_rng(SPLIT_SEED)
    classes = np.unique(y)
    per_class = val_size // len(classes)
    if per_class * len(classes) != val_size or any((y == c).sum() <= per_class for c in classes):
        raise DataError(
            f"a val split of {val_size} images must take the same number from each of {len(classes)} classes and "
            f"leave training images, but the training set has {len(y)} images; use a larger dataset."
        )
    val_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes])
    val_idx.sort()
    mask = np.ones(len(y), bool)
    mask[val_idx] = False
    return x[mask], y[mask], x[val_idx], y[val_idx]


LOADERS: dict[str, Callable[..., tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]] = {
    "digits": lambda data_dir, download: _load_digits(),
    "cifar10": load_cifar10,
}


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    val_size: int | None = None,
) -> DatasetSplits:
    """Load a dataset's train / val / test splits into memory.

    Args:
        name: ``digits`` or ``cifar10``.
        data_dir: Folder with the dataset files (cifar10); ``None`` reads ``AUTOCOMPRESS_DATA_DIR``.
        download: Allow a download through torchvision when the files are missing.
        val_size: Images held out of the training set for validation (default: the dataset's, 5,000 for CIFAR-10).
    """
    info = dataset_info(name)
    (train_x, train_y), (test_x, test_y) = LOADERS[name](data_dir, download)
    tx, ty, vx, vy = _holdout(train_x, train_y, info.val_size if val_size is None else val_size)
    as_t = torch.from_numpy
    return DatasetSplits(info, as_t(tx), as_t(ty), as_t(vx), as_t(vy), as_t(test_x), as_t(test_y))
