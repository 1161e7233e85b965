import pickle
from pathlib import Path

import numpy as np
import pytest

from autocompress.data import load_dataset
from autocompress.data.cifar import RECORD_BYTES, load_cifar10
from autocompress.errors import DataError

NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _records(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return images, labels.astype(np.uint8)


def write_binary(root: Path, per_file: int = 20) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate(NAMES):
        images, labels = _records(per_file, i)
        np.concatenate([labels[:, None], images], 1).tofile(folder / f"{name}.bin")
        written[name] = (images, labels)
    return written


def write_python(root: Path, per_file: int = 20) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate(NAMES):
        images, labels = _records(per_file, i)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": images}, handle)
        written[name] = (images, labels)
    return written


@pytest.mark.parametrize("writer", [write_binary, write_python])
def test_both_layouts_read_identically(tmp_path: Path, writer) -> None:
    written = writer(tmp_path)
    (train_x, train_y), (_, test_y) = load_cifar10(tmp_path)
    assert train_x.shape == (100, 3, 32, 32) and train_x.dtype == np.uint8
    expected = np.concatenate([written[n][0] for n in NAMES[:5]]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(train_x, expected)
    np.testing.assert_array_equal(test_y, written["test_batch"][1])
    assert train_y.dtype == np.int64


def test_binary_layout_is_preferred_over_python(tmp_path: Path) -> None:
    write_binary(tmp_path, per_file=10)
    write_python(tmp_path, per_file=20)
    (train_x, _), _ = load_cifar10(tmp_path)
    assert len(train_x) == 50


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_binary(tmp_path)
    monkeypatch.setenv("AUTOCOMPRESS_DATA_DIR", str(tmp_path))
    splits = load_dataset("cifar10", val_size=20)
    assert len(splits.val_y) == 20 and len(splits.train_y) == 80 and len(splits.test_y) == 20


def test_missing_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a directory"):
        load_cifar10(tmp_path / "nope")


def test_no_data_dir_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOCOMPRESS_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="data_dir"):
        load_cifar10(None)


def test_empty_folder_names_both_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-10-batches-bin.*cifar-10-batches-py"):
        load_cifar10(tmp_path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    write_binary(tmp_path)
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match=r"lacks data_batch_3\.bin"):
        load_cifar10(tmp_path)


def test_wrong_size_file_says_so(tmp_path: Path) -> None:
    write_binary(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=f"whole records of {RECORD_BYTES} bytes"):
        load_cifar10(tmp_path)


def test_python_layout_refuses_foreign_objects(tmp_path: Path) -> None:
    write_python(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": Evil()}, handle)
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)


def test_real_cifar_splits(cifar) -> None:
    assert len(cifar.train_y) == 45000 and len(cifar.val_y) == 5000 and len(cifar.test_y) == 10000
    assert cifar.val_y.bincount().tolist() == [500] * 10
