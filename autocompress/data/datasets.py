"""Datasets and deterministic train / val / test splits held in memory as tensors.

A dataset reference is one of: a built-in name (``list datasets``), a ``.npz`` file, an image folder
(``train/`` and ``test/`` of class folders) or a plugin ``package.module:factory`` (or ``file.py:factory``) that
returns a :class:`~autocompress.data.sources.DatasetSpec`. Inputs are uint8 images N×C×H×W, float images N×C×H×W,
or sequences N×C×L (float or uint8); :class:`DatasetInfo` says which, and the pipeline picks normalisation,
augmentation and shifts by it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autocompress.data.cifar import load_cifar10
from autocompress.errors import DataError, did_you_mean, unknown_name_error
from autocompress.plugins import is_plugin_spec

SPLIT_SEED = 0
KINDS = ("image", "series")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: its input shape and kind, classes and normalisation constants.

    Args:
        name: Short name (file stem for files and folders) used in run-folder names.
        input_shape: C×H×W for images, C×L for sequences.
        num_classes: Classes, labels 0..num_classes-1.
        mean: Per-channel mean in the data's units after ``scale`` (``None``: already normalised).
        std: Per-channel standard deviation, likewise.
        val_size: Examples held out of the training set for validation (when no val split is given).
        needs_data_dir: Whether loading needs ``data_dir`` (CIFAR-10).
        description: One line for ``list datasets``.
        augment_padding: Random-crop padding (images, pixels) or random time shift (sequences, steps); 0: none.
        augment_flip: Random horizontal flips (images only).
        dtype: ``uint8`` (pixels, scaled by 1/255) or ``float32`` (taken as they are).
        ref: The reference it was loaded from, as a run folder saves it (absolute for files).
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    val_size: int
    needs_data_dir: bool
    description: str
    augment_padding: int
    augment_flip: bool
    dtype: str = "uint8"
    ref: str = ""

    @property
    def kind(self) -> str:
        """``image`` (C×H×W) or ``series`` (C×L)."""
        return "image" if len(self.input_shape) == 3 else "series"

    @property
    def scale(self) -> float:
        """Factor from stored values to the units ``mean`` and ``std`` are in (1/255 for uint8 pixels)."""
        return 1.0 / 255.0 if self.dtype == "uint8" else 1.0

    @property
    def is_pixel_image(self) -> bool:
        """uint8 images, the only inputs the built-in image shifts (brightness, blur, JPEG, …) apply to."""
        return self.kind == "image" and self.dtype == "uint8"

    def describe_input(self) -> str:
        """``uint8 images 3×32×32`` or ``float32 sequences 6×100``, for messages."""
        what = "images" if self.kind == "image" else "sequences"
        return f"{self.dtype} {what} {'×'.join(map(str, self.input_shape))}"


@dataclass(frozen=True)
class DatasetSplits:
    """The three splits of a dataset as input tensors (uint8 or float32) and int64 labels.

    The val split is held out from the training set unless the dataset brings its own; searches score on it. The
    test split is only for final reports.
    """

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (inputs, labels) of ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise unknown_name_error("split", name, ["train", "val", "test"])
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        name="digits",
        ref="digits",
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
        ref="cifar10",
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
    "basic-motions": DatasetInfo(
        name="basic-motions",
        ref="basic-motions",
        input_shape=(6, 100),
        num_classes=4,
        mean=(2.5528, -1.3039, -1.0266, 0.0191, -0.024, -0.0558),
        std=(7.0723, 6.7941, 3.5464, 2.1119, 1.8208, 3.5166),
        val_size=8,
        needs_data_dir=False,
        description="smartwatch accelerometer + gyroscope, 6x100 at 10 Hz, 4 activities (80 recordings; "
        "UEA archive, shipped by sktime), offline",
        augment_padding=10,
        augment_flip=False,
        dtype="float32",
    ),
}


def _is_file_ref(ref: str) -> bool:
    return ref.endswith(".npz") or Path(ref).is_dir()


def canonical_ref(ref: str) -> str:
    """The reference a run folder saves: built-in names and plugins as given, files and folders as absolute paths."""
    if ref in DATASETS or is_plugin_spec(ref) or not _is_file_ref(ref):
        return ref
    return str(Path(ref).expanduser().resolve())


def dataset_info(ref: str, data_dir: str | os.PathLike[str] | None = None) -> DatasetInfo:
    """Return the facts of a dataset: static for built-in names, read from the data for files and plugins."""
    if ref in DATASETS:
        return DATASETS[ref]
    return load_dataset(ref, data_dir).info


def _load_digits() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = 360
    test, train = order[:n_test], order[n_test:]
    return (images[train], labels[train]), (images[test], labels[test])


def _load_basic_motions() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """BasicMotions (UEA): 40 + 40 recordings of a smartwatch's 3-axis accelerometer and gyroscope, 100 steps each.

    sktime ships the files in its wheel, so this works offline; labels are the activities in sorted order
    (badminton, running, standing, walking).
    """
    from sktime.datasets import load_basic_motions

    parts = []
    for split in ("train", "test"):
        x, y = load_basic_motions(split=split, return_type="numpy3D")
        parts.append((np.asarray(x, np.float32), np.asarray(y)))
    classes = sorted(set(parts[0][1]))
    return tuple((x, np.searchsorted(classes, y).astype(np.int64)) for x, y in parts)  # type: ignore[return-value]


def _holdout(x: np.ndarray, y: np.ndarray, val_size: int) -> tuple[np.ndarray, ...]:
    """Split a class-balanced val set of ``val_size`` examples off the training set, deterministically."""
    rng = np.random.default_rng(SPLIT_SEED)
    classes = np.unique(y)
    per_class = val_size // len(classes)
    if per_class * len(classes) != val_size or any((y == c).sum() <= per_class for c in classes):
        raise DataError(
            f"a val split of {val_size} examples must take the same number from each of {len(classes)} classes and "
            f"leave training examples, but the training set has {len(y)} examples; use a larger dataset or give "
            "a val split of its own.",
            params=("val_size",),
        )
    val_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes])
    val_idx.sort()
    mask = np.ones(len(y), bool)
    mask[val_idx] = False
    return x[mask], y[mask], x[val_idx], y[val_idx]


LOADERS: dict[str, Callable[..., tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]] = {
    "digits": lambda data_dir, download: _load_digits(),
    "cifar10": load_cifar10,
    "basic-motions": lambda data_dir, download: _load_basic_motions(),
}
_CACHE: dict[tuple[str, str | None, bool, int | None, float], DatasetSplits] = {}


def load_dataset(
    ref: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    val_size: int | None = None,
) -> DatasetSplits:
    """Load a dataset's train / val / test splits into memory (cached per reference and file time).

    Args:
        ref: A built-in name (``digits``, ``cifar10``, ``basic-motions``), a ``.npz`` file, an image folder, or
            ``package.module:factory`` / ``file.py:factory`` returning a
            :class:`~autocompress.data.sources.DatasetSpec`.
        data_dir: Folder with the dataset files (cifar10); ``None`` reads ``AUTOCOMPRESS_DATA_DIR``.
        download: Allow a download through torchvision when the files are missing (cifar10).
        val_size: Examples held out of the training set for validation (default: the dataset's; ignored when the
            dataset brings a val split).
    """
    ref = canonical_ref(ref)
    stamp = Path(ref).stat().st_mtime if _is_file_ref(ref) and Path(ref).exists() else 0.0
    key = (ref, None if data_dir is None else str(data_dir), download, val_size, stamp)
    if key not in _CACHE:
        _CACHE[key] = _load(ref, data_dir, download, val_size)
    return _CACHE[key]


def _load(ref: str, data_dir: str | os.PathLike[str] | None, download: bool, val_size: int | None) -> DatasetSplits:
    from autocompress.data import sources  # sources builds on this module's types: imported here, not in a circle

    if ref in DATASETS:
        info = DATASETS[ref]
        (train_x, train_y), (test_x, test_y) = LOADERS[ref](data_dir, download)
        tx, ty, vx, vy = _holdout(train_x, train_y, info.val_size if val_size is None else val_size)
        as_t = torch.from_numpy
        return DatasetSplits(info, as_t(tx), as_t(ty), as_t(vx), as_t(vy), as_t(test_x), as_t(test_y))
    if is_plugin_spec(ref):
        return sources.from_spec(sources.call_factory(ref), ref, val_size)
    if ref.endswith(".npz"):
        return sources.from_spec(sources.read_npz(ref), ref, val_size)
    if Path(ref).is_dir():
        return sources.from_spec(sources.read_image_folder(ref), ref, val_size)
    raise DataError(
        f"a dataset must be one of {', '.join(sorted(DATASETS))}, a .npz file, an image folder or "
        f"package.module:factory, but got '{ref}'{' (no such file)' if ref.endswith(('.npz', '/')) else ''}; "
        f"see autocompress list datasets.{did_you_mean(ref, DATASETS)}",
        params=("dataset",),
    )
