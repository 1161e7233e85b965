"""A user's own dataset: a ``.npz`` file, an image folder, or a plugin returning a :class:`DatasetSpec`.

All three become the same :class:`DatasetSpec` and then the same in-memory :class:`DatasetSplits` as the built-in
datasets, so every verb, the env's kwargs and the Python API accept them alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocompress.data.datasets import DatasetInfo, DatasetSplits, _holdout
from autocompress.errors import DataError
from autocompress.files import short, why
from autocompress.plugins import import_object

ArrayPair = tuple[Any, Any]
log = logging.getLogger(__name__)
MIN_VAL_WARN = 50  # fewer validation images than this: a warning (the standard error of an accuracy is ~7 pt)
NPZ_KEYS = "x_train, y_train, x_test, y_test (optional x_val, y_val, mean, std, normalized)"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class DatasetSpec:
    """What a dataset plugin (``package.module:factory``) returns; a ``.npz`` file or image folder becomes one too.

    Each split is ``(inputs, labels)`` — numpy arrays or tensors — or a torch ``Dataset`` of ``(input, label)``
    pairs. Inputs are uint8 images N×C×H×W (pixels 0..255), float images N×C×H×W, or sequences N×C×L (float or
    uint8); labels are integers 0..num_classes-1.

    Args:
        train: The training split.
        test: The test split (final reports only).
        val: The validation split searches score on; ``None`` holds ``val_size`` examples out of ``train``.
        num_classes: Number of classes (default: the largest label + 1).
        name: Short name for run folders (default: the file or factory name).
        mean: Per-channel mean of the inputs (after /255 for uint8); ``None`` computes it from ``train``.
        std: Per-channel standard deviation, likewise.
        normalized: The inputs are already normalised: no mean or std is applied.
        augment: Augment in training and BatchNorm repair: random crop with padding and flips for images, random
            time shifts for sequences.
        val_size: Examples held out of ``train`` when ``val`` is ``None`` (default: 10 % rounded to a multiple of
            the class count).
    """

    train: ArrayPair | torch.utils.data.Dataset[Any]
    test: ArrayPair | torch.utils.data.Dataset[Any]
    val: ArrayPair | torch.utils.data.Dataset[Any] | None = None
    num_classes: int | None = None
    name: str | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    normalized: bool = False
    augment: bool = True
    val_size: int | None = None


def call_factory(spec: str) -> DatasetSpec:
    """Import and call a dataset factory; it must return a :class:`DatasetSpec`."""
    factory = import_object(spec, "a dataset factory", "mypkg.data:load")
    try:
        result = factory()
    except (Exception, SystemExit) as exc:
        what = f"exited (SystemExit {exc.code})" if isinstance(exc, SystemExit) else f"raised {type(exc).__name__}"
        raise DataError(
            f"the dataset factory '{spec}' must return a DatasetSpec, but it {what}: {str(exc)[:150]}.",
            params=("dataset",),
        ) from None
    if not isinstance(result, DatasetSpec):
        raise DataError(
            f"the dataset factory '{spec}' must return autocompress.data.DatasetSpec, but returned "
            f"{type(result).__name__}; wrap your arrays: DatasetSpec(train=(x, y), test=(x, y)).",
            params=("dataset",),
        )
    if result.name is None:
        result.name = spec.rpartition(":")[2]
    return result


def npz_arrays(path: str, what: str, keys: str, param: str) -> dict[str, np.ndarray]:
    """Every array of a user's ``.npz`` file (no pickles), with one-line errors naming ``what`` it should be."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{what} must exist, but '{path}' does not; check the path.", params=(param,))
    try:
        with np.load(file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:
        raise DataError(
            f"'{path}' must be a numpy .npz archive holding {keys}, but it cannot be read "
            f"({why(exc, 40)}); write it with numpy.savez.",
            params=(param,),
        ) from None


def read_npz(path: str) -> DatasetSpec:
    """Read a ``.npz`` with x_train, y_train, x_test, y_test and optional x_val, y_val, mean, std, normalized."""
    file = Path(path)
    arrays = npz_arrays(path, "a dataset file", NPZ_KEYS, "dataset")
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing or (("x_val" in arrays) != ("y_val" in arrays)):
        raise DataError(
            f"'{path}' must hold {NPZ_KEYS}, but it holds {', '.join(sorted(arrays)) or 'nothing'}"
            f"{' (missing ' + ', '.join(missing) + ')' if missing else ' (x_val and y_val go together)'}.",
            params=("dataset",),
        )
    val = (arrays["x_val"], arrays["y_val"]) if "x_val" in arrays else None
    for key in ("mean", "std"):
        if key in arrays and (arrays[key].ndim != 1 or not np.issubdtype(arrays[key].dtype, np.number)):
            raise DataError(
                f"'{path}' {key} must be one number per channel (a 1-D array), but is {arrays[key].dtype} of shape "
                f"{arrays[key].shape}.",
                params=("dataset",),
            )
    if "normalized" in arrays and (arrays["normalized"].size != 1 or arrays["normalized"].dtype.kind not in "biu"):
        raise DataError(
            f"'{path}' normalized must be one boolean (np.array(True)), but is {arrays['normalized'].dtype} of shape "
            f"{arrays['normalized'].shape}.",
            params=("dataset",),
        )
    return DatasetSpec(
        train=(arrays["x_train"], arrays["y_train"]),
        test=(arrays["x_test"], arrays["y_test"]),
        val=val,
        name=file.stem,
        mean=tuple(arrays["mean"].tolist()) if "mean" in arrays else None,
        std=tuple(arrays["std"].tolist()) if "std" in arrays else None,
        normalized=bool(arrays["normalized"]) if "normalized" in arrays else False,
    )


def read_image_folder(path: str) -> DatasetSpec:
    """Read ``path/train/<class>/*.png`` and ``path/test/<class>/*`` (and ``val/`` if present) as uint8 images.

    Class names are the sorted folder names of ``train/``; every image must have the same size (grayscale folders
    give one channel, anything else three).
    """
    root = Path(path)
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise DataError(
                f"an image folder must hold train/ and test/ with one sub-folder per class, but '{root / part}' "
                "does not exist.",
                params=("dataset",),
            )
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(
            f"'{root / 'train'}' must hold one folder per class (at least 2), but holds {len(classes)}.",
            params=("dataset",),
        )
    splits = {part: _read_images(root / part, classes) for part in ("train", "val", "test") if (root / part).is_dir()}
    return DatasetSpec(
        train=splits["train"], test=splits["test"], val=splits.get("val"), num_classes=len(classes), name=root.name
    )


def _read_images(folder: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image  # pillow comes with torchvision; only image folders need it

    unknown = sorted({p.name for p in folder.iterdir() if p.is_dir()} - set(classes))
    if unknown:
        raise DataError(
            f"the class folders of '{folder}' must be among train/'s ({', '.join(classes)}), but it also has "
            f"{', '.join(unknown)}.",
            params=("dataset",),
        )
    files = [
        (f, i)
        for i, c in enumerate(classes)
        for f in sorted((folder / c).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(f"'{folder}' must hold images ({', '.join(IMAGE_SUFFIXES)}), but holds none.")
    images, first = [], None
    for file, _ in files:
        with Image.open(file) as img:
            mode = "L" if img.mode in ("L", "1", "I;16") else "RGB"
            array = np.asarray(img.convert(mode))
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        first = first or (file, array.shape)
        if array.shape != first[1]:
            raise DataError(
                f"all images of an image folder must have one size and colour mode, but '{first[0]}' is "
                f"{'×'.join(map(str, first[1]))} and '{file}' is {'×'.join(map(str, array.shape))}; resize them first.",
                params=("dataset",),
            )
        images.append(array)
    return np.stack(images).astype(np.uint8), np.array([i for _, i in files], np.int64)


def _as_arrays(split: Any, what: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(split, torch.utils.data.Dataset):
        pairs = [split[i] for i in range(len(split))]  # type: ignore[arg-type]
        x = np.stack([np.asarray(p[0]) for p in pairs]) if pairs else np.zeros((0,))
        y = np.asarray([int(p[1]) for p in pairs])
    elif isinstance(split, tuple | list) and len(split) == 2:
        x, y = (s.numpy() if isinstance(s, torch.Tensor) else np.asarray(s) for s in split)
    else:
        raise DataError(
            f"the {what} split of '{source}' must be (inputs, labels) or a torch Dataset, but is "
            f"{type(split).__name__}.",
            params=("dataset",),
        )
    if x.ndim not in (3, 4) or len(x) != len(y) or y.ndim != 1 or len(y) == 0:
        raise DataError(
            f"the {what} split of '{source}' must hold inputs N×C×L or N×C×H×W and N labels, but has inputs "
            f"{'×'.join(map(str, x.shape))} and labels {'×'.join(map(str, y.shape))}; add the channel axis "
            "(x[:, None]) for single-channel data.",
            params=("dataset",),
        )
    if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)  # whole-number float labels (1.0, 2.0 — as many CSV and UCR exports hold) are taken
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        first = short(y[0].item() if y.dtype.kind in "biufcUS" else y[0])
        raise DataError(
            f"the {what} labels of '{source}' must be integers 0..classes-1, but are {y.dtype} "
            f"({'from ' + str(y.min()) if np.issubdtype(y.dtype, np.number) else 'e.g. ' + first}); map class names "
            "to integers first (np.unique(labels, return_inverse=True)).",
            params=("dataset",),
        )
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DataError(
                f"the {what} inputs of '{source}' must be finite, but hold NaN or infinity; clean them first.",
                params=("dataset",),
            )
    return x, y.astype(np.int64)


def from_spec(spec: DatasetSpec, ref: str, val_size: int | None = None) -> DatasetSplits:
    """Check a spec and turn it into in-memory splits with the facts (kind, statistics) the pipeline needs."""
    train = _as_arrays(spec.train, "train", ref)
    test = _as_arrays(spec.test, "test", ref)
    val = _as_arrays(spec.val, "val", ref) if spec.val is not None else None
    shape = train[0].shape[1:]
    for what, part in (("test", test), ("val", val)):
        if part is not None and (part[0].shape[1:] != shape or part[0].dtype != train[0].dtype):
            raise DataError(
                f"every split of '{ref}' must have the train split's inputs ({train[0].dtype} "
                f"{'×'.join(map(str, shape))}), but {what} has {part[0].dtype} "
                f"{'×'.join(map(str, part[0].shape[1:]))}.",
                params=("dataset",),
            )
    labels = np.concatenate([p[1] for p in (train, test, val) if p is not None])
    classes = spec.num_classes or int(train[1].max()) + 1  # a class the training split never shows is no class
    if labels.max() >= classes or len(np.unique(train[1])) < 2:
        parts = {"train": train, "test": test, "val": val}
        where = next((w for w, p in parts.items() if p is not None and p[1].max() >= classes), "train")
        raise DataError(
            f"'{ref}' must have labels 0..{classes - 1} (the classes of its train split"
            f"{'' if spec.num_classes is None else ', num_classes'}) and at least two classes in train, but its "
            f"{where} split has labels {labels.min()}..{labels.max()} ({len(np.unique(train[1]))} classes in train).",
            params=("dataset",),
        )
    if val is None:
        present = len(np.unique(train[1]))
        held = val_size or spec.val_size or max(present, len(train[1]) // 10 // present * present)
        tx, ty, vx, vy = _holdout(train[0], train[1], held)
        train, val = (tx, ty), (vx, vy)
    if len(val[1]) < MIN_VAL_WARN:
        log.warning(
            "'%s' leaves %d validation images: accuracies a search compares on so few differ by chance by about "
            "%.0f pt; give x_val/y_val or more training data",
            ref,
            len(val[1]),
            100 * 0.5 / max(1, len(val[1])) ** 0.5,
        )
    info = _info(spec, ref, train[0], classes, len(val[1]))
    as_t = torch.from_numpy
    return DatasetSplits(info, as_t(train[0]), as_t(train[1]), as_t(val[0]), as_t(val[1]), as_t(test[0]), as_t(test[1]))


def _info(spec: DatasetSpec, ref: str, x: np.ndarray, classes: int, val_size: int) -> DatasetInfo:
    image = x.ndim == 4
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    mean = std = None
    if not spec.normalized:
        axes = (0, 2, 3) if image else (0, 2)
        values = x.astype(np.float64) * scale
        mean = tuple(spec.mean) if spec.mean is not None else tuple(values.mean(axis=axes).round(6).tolist())
        std = (
            tuple(spec.std)
            if spec.std is not None
            else tuple(np.maximum(values.std(axis=axes), 1e-6).round(6).tolist())
        )
        if len(mean) != x.shape[1] or len(std) != x.shape[1] or min(std) <= 0:
            raise DataError(
                f"mean and std of '{ref}' must give one value per channel ({x.shape[1]}) and std > 0, but got "
                f"mean {short(list(mean))} and std {short(list(std))}.",
                params=("dataset",),
            )
    length = x.shape[-1]
    padding = (max(1, x.shape[-1] // 8) if image else max(1, length // 10)) if spec.augment else 0
    return DatasetInfo(
        name=spec.name or Path(ref).stem,
        input_shape=tuple(int(s) for s in x.shape[1:]),
        num_classes=classes,
        mean=mean,
        std=std,
        val_size=val_size,
        needs_data_dir=False,
        description=f"your own dataset from {ref}",
        augment_padding=padding,
        augment_flip=image and spec.augment,
        dtype="uint8" if x.dtype == np.uint8 else "float32",
        ref=ref,
    )
