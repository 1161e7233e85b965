"""CIFAR-10 readers for the official binary layout and the python (pickle) layout.

The binary layout (``cifar-10-batches-bin/*.bin``) is preferred: it is read with numpy and needs no unpickling.
The python layout (``cifar-10-batches-py/``, as torchvision writes it) is read with a restricted unpickler that
accepts only the documented format (a dict of ``data``/``labels`` holding numpy arrays and lists) and refuses any
other object, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np

from autocompress.errors import DataError

log = logging.getLogger(__name__)

RECORD_BYTES = 1 + 3 * 32 * 32
BIN_DIR = "cifar-10-batches-bin"
PY_DIR = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
DATA_DIR_ENV = "AUTOCOMPRESS_DATA_DIR"

Arrays = tuple[np.ndarray, np.ndarray]


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """Return the data directory from the argument or the ``AUTOCOMPRESS_DATA_DIR`` variable."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not chosen:
        raise DataError(
            "cifar10 needs a data directory, but neither data_dir nor the AUTOCOMPRESS_DATA_DIR variable is set; "
            "set data_dir to a folder holding cifar-10-batches-bin/ or cifar-10-batches-py/, or allow download.",
            params=("data_dir", "download"),
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(
            f"the CIFAR-10 data directory must exist, but '{path}' is not a directory; check data_dir.",
            params=("data_dir",),
        )
    return path


def read_binary_file(path: Path) -> Arrays:
    """Read one file of the binary layout into (images uint8 N×3×32×32, labels int64 N)."""
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES:
        raise DataError(
            f"a CIFAR-10 binary file must hold whole records of {RECORD_BYTES} bytes, but '{path}' has {size} bytes; "
            "the file is truncated or not CIFAR-10 — download it again."
        )
    raw = np.fromfile(path, np.uint8).reshape(-1, RECORD_BYTES)
    labels = raw[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(
            f"CIFAR-10 labels must lie in 0..9, but '{path}' holds label {labels.max()}; the file is corrupt."
        )
    return raw[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that admits only what the documented CIFAR-10 python format contains."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not part of the CIFAR-10 format")


def read_python_file(path: Path) -> Arrays:
    """Read one file of the python layout with the restricted unpickler."""
    try:
        obj = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"'{path}' is not a CIFAR-10 python batch ({exc}); download it again.") from None
    if not isinstance(obj, dict):
        raise DataError(f"a CIFAR-10 python batch must be a dict, but '{path}' holds {type(obj).__name__}.")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"a CIFAR-10 python batch must hold 'data' as uint8 N×3072, but '{path}' does not.")
    if labels is None or len(labels) != len(data):
        raise DataError(f"a CIFAR-10 python batch must hold one label per image, but '{path}' does not.")
    return data.reshape(-1, 3, 32, 32).copy(), np.asarray(labels, dtype=np.int64)


def _read_layout(folder: Path, suffix: str, reader: type | object) -> tuple[Arrays, Arrays]:
    missing = [n + suffix for n in [*TRAIN_FILES, TEST_FILE] if not (folder / (n + suffix)).is_file()]
    if missing:
        raise DataError(
            f"a CIFAR-10 folder must hold {', '.join(n + suffix for n in [*TRAIN_FILES, TEST_FILE])}, "
            f"but '{folder}' lacks {', '.join(missing)}; download the dataset again."
        )
    parts = [reader(folder / (n + suffix)) for n in TRAIN_FILES]  # type: ignore[operator]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = reader(folder / (TEST_FILE + suffix))  # type: ignore[operator]
    return train, test


def load_cifar10(data_dir: str | os.PathLike[str] | None, download: bool = False) -> tuple[Arrays, Arrays]:
    """Load CIFAR-10 (train, test) as uint8 arrays, choosing the layout found in ``data_dir``.

    Args:
        data_dir: Folder holding ``cifar-10-batches-bin/`` or ``cifar-10-batches-py/`` (or one of those folders
            itself). ``None`` reads ``AUTOCOMPRESS_DATA_DIR``.
        download: Fetch the python layout through torchvision into ``data_dir`` when neither layout is present.
    """
    if download and data_dir is not None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    root = resolve_data_dir(data_dir)
    layout = _find_layout(root)
    if layout is None and download:
        _download(root)
        layout = _find_layout(root)
    if layout is None:
        raise DataError(
            f"CIFAR-10 must be in '{root / BIN_DIR}' (binary layout) or '{root / PY_DIR}' (python layout), "
            "but neither exists; point data_dir at the folder that holds one, or allow download.",
            params=("data_dir", "download"),
        )
    folder, binary = layout
    log.debug("reading CIFAR-10 %s layout from %s", "binary" if binary else "python", folder)
    if binary:
        return _read_layout(folder, ".bin", read_binary_file)
    return _read_layout(folder, "", read_python_file)


def _find_layout(root: Path) -> tuple[Path, bool] | None:
    """Return (folder, is_binary) for the first layout found; the binary layout wins."""
    for folder in (root / BIN_DIR, root):
        if folder.is_dir() and (folder.name == BIN_DIR or (folder / "data_batch_1.bin").exists()):
            return folder, True
    for folder in (root / PY_DIR, root):
        if folder.is_dir() and (folder.name == PY_DIR or (folder / "data_batch_1").exists()):
            return folder, False
    return None


def _download(root: Path) -> None:
    try:
        from torchvision.datasets import CIFAR10
    except ImportError:
        raise DataError(
            "download needs torchvision; install it with pip install 'autocompress[vision]'.", params=("download",)
        ) from None
    log.info("downloading CIFAR-10 into %s", root)
    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as exc:  # network errors come in many types; the user needs one line.
        raise DataError(
            f"downloading CIFAR-10 into '{root}' failed ({exc}); check the network or copy it there."
        ) from None
