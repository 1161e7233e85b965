"""A user's own data: .npz files, image folders, plugins, sequences, shifts by input kind and drift given as data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autocompress.compress.evaluator import PolicyEvaluator
from autocompress.compress.policy import Policy
from autocompress.data import BatchIterator, DatasetSplits, Normalizer, dataset_info, load_dataset
from autocompress.data.drift import DriftData
from autocompress.data.shifts import Shift
from autocompress.errors import AutoCompressError
from autocompress.models import load_model

PLUGIN = '''
import numpy as np
from autocompress.data import DatasetSpec


def waves(n_per_class=40, length=64, seed=0):
    """Three classes of noisy 3-channel sine waves that differ in frequency (a stand-in for an IMU)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / length
    xs, ys = [], []
    for label, freq in enumerate((2.0, 5.0, 9.0)):
        for _ in range(n_per_class):
            phase = rng.uniform(0, 2 * np.pi, (3, 1))
            xs.append(3.0 * np.sin(2 * np.pi * freq * t + phase) + 1.5 + rng.normal(0, 0.3, (3, length)))
            ys.append(label)
    x, y = np.asarray(xs, np.float32), np.asarray(ys)
    order = rng.permutation(len(y))
    return x[order], y[order]


def load():
    x, y = waves()
    xt, yt = waves(10, seed=1)
    return DatasetSpec(train=(x, y), test=(xt, yt), name="waves")


def not_a_spec():
    return {"train": None}
'''


def write_plugin(folder: Path) -> str:
    (folder / "wave_data.py").write_text(PLUGIN)
    return f"{folder / 'wave_data.py'}:load"


def digits_npz(path: Path, digits: DatasetSplits, **extra: np.ndarray) -> Path:
    np.savez(
        path,
        x_train=digits.train_x.numpy(),
        y_train=digits.train_y.numpy(),
        x_test=digits.test_x.numpy(),
        y_test=digits.test_y.numpy(),
        **extra,
    )
    return path


def digits_folder(root: Path, digits: DatasetSplits, per_class: int = 12) -> Path:
    from PIL import Image

    for part, (x, y) in {"train": (digits.train_x, digits.train_y), "test": (digits.test_x, digits.test_y)}.items():
        for label in range(3):
            folder = root / part / f"class{label}"
            folder.mkdir(parents=True)
            for i, index in enumerate(np.flatnonzero(y.numpy() == label)[:per_class]):
                Image.fromarray(x[index, 0].numpy()).save(folder / f"{i}.png")
    return root


def test_npz_dataset_keeps_uint8_images_and_holds_out_a_balanced_val(tmp_path: Path, digits: DatasetSplits) -> None:
    splits = load_dataset(str(digits_npz(tmp_path / "mine.npz", digits)))
    assert splits.info.dtype == "uint8" and splits.info.input_shape == (1, 8, 8) and splits.info.num_classes == 10
    assert splits.info.ref == str(tmp_path / "mine.npz") and splits.info.name == "mine"
    assert len(splits.val_y) + len(splits.train_y) == len(digits.train_y) + len(digits.val_y) - len(digits.val_y)
    assert splits.val_y.bincount().tolist() == [len(splits.val_y) // 10] * 10
    assert torch.equal(splits.test_x, digits.test_x)
    mean = splits.train_x.float().mean().item() / 255  # statistics come from the training data
    assert splits.info.mean is not None and abs(splits.info.mean[0] - mean) < 1e-4


def test_npz_with_its_own_val_split_and_statistics(tmp_path: Path, digits: DatasetSplits) -> None:
    path = digits_npz(
        tmp_path / "v.npz",
        digits,
        x_val=digits.val_x.numpy(),
        y_val=digits.val_y.numpy(),
        mean=np.array([0.5]),
        std=np.array([0.25]),
    )
    splits = load_dataset(str(path))
    assert torch.equal(splits.val_x, digits.val_x) and splits.info.mean == (0.5,) and splits.info.std == (0.25,)
    normalised = Normalizer(splits.info)(torch.full((1, 1, 8, 8), 255, dtype=torch.uint8))
    assert torch.allclose(normalised, torch.full_like(normalised, 2.0))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((4, 1, 8, 8))}, "missing y_train"),
        (
            {
                "x_train": np.zeros((4, 64)),
                "y_train": np.zeros(4, int),
                "x_test": np.zeros((2, 64)),
                "y_test": np.zeros(2, int),
            },
            "must hold inputs N×C×L or N×C×H×W",
        ),
        (
            {
                "x_train": np.full((4, 1, 9), np.nan),
                "y_train": np.arange(4) % 2,
                "x_test": np.zeros((2, 1, 9)),
                "y_test": np.zeros(2, int),
            },
            "must be finite",
        ),
        (
            {
                "x_train": np.zeros((4, 1, 9)),
                "y_train": np.arange(4) % 2,
                "x_test": np.zeros((2, 1, 7)),
                "y_test": np.zeros(2, int),
            },
            "every split",
        ),
        (
            {
                "x_train": np.zeros((4, 1, 9)),
                "y_train": np.full(4, 0.5),
                "x_test": np.zeros((2, 1, 9)),
                "y_test": np.zeros(2, int),
            },
            "must be integers",
        ),
    ],
)
def test_malformed_npz_gives_one_clear_error(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(AutoCompressError, match=message) as info:
        load_dataset(str(tmp_path / "bad.npz"))
    assert "\n" not in str(info.value)


def test_unreadable_and_missing_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(AutoCompressError, match="must be a numpy .npz archive"):
        load_dataset(str(tmp_path / "junk.npz"))
    with pytest.raises(AutoCompressError, match="does not; check the path"):
        load_dataset(str(tmp_path / "absent.npz"))


def test_image_folder_reads_class_folders(tmp_path: Path, digits: DatasetSplits) -> None:
    splits = load_dataset(str(digits_folder(tmp_path / "imgs", digits)))
    assert splits.info.num_classes == 3 and splits.info.input_shape == (1, 8, 8) and splits.info.dtype == "uint8"
    assert len(splits.test_y) == 36 and len(splits.train_y) + len(splits.val_y) == 36
    first = digits.test_x[np.flatnonzero(digits.test_y.numpy() == 0)[0]]
    assert torch.equal(splits.test_x[0], first)


def test_image_folder_with_mixed_sizes_is_refused(tmp_path: Path, digits: DatasetSplits) -> None:
    from PIL import Image

    root = digits_folder(tmp_path / "imgs", digits)
    Image.new("L", (9, 9)).save(root / "train" / "class0" / "odd.png")
    with pytest.raises(AutoCompressError, match="must have one size"):
        load_dataset(str(root))


def test_plugin_dataset_of_float_sequences(tmp_path: Path) -> None:
    splits = load_dataset(write_plugin(tmp_path))
    info = splits.info
    assert (info.kind, info.dtype, info.input_shape, info.num_classes, info.name) == (
        "series",
        "float32",
        (3, 64),
        3,
        "waves",
    )
    batch, _ = next(iter(BatchIterator(splits.train_x, splits.train_y, info, 32, augment=True)))
    assert batch.shape == (32, 3, 64) and abs(float(batch.mean())) < 0.3 and 0.7 < float(batch.std()) < 1.3


def test_plugin_that_returns_something_else_is_refused(tmp_path: Path) -> None:
    spec = write_plugin(tmp_path).replace(":load", ":not_a_spec")
    with pytest.raises(AutoCompressError, match="must return autocompress.data.DatasetSpec"):
        load_dataset(spec)
    with pytest.raises(AutoCompressError, match="must be importable"):
        load_dataset("no_such_module_here:load")


def test_basic_motions_is_a_real_offline_sensor_dataset() -> None:
    splits = load_dataset("basic-motions")
    assert splits.info.describe_input() == "float32 sequences 6×100" and splits.info.num_classes == 4
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (32, 8, 40)
    assert splits.test_y.bincount().tolist() == [10, 10, 10, 10]


def test_image_shifts_are_refused_on_sequences_and_sensor_shifts_work() -> None:
    info = dataset_info("basic-motions")
    x = load_dataset("basic-motions").val_x
    with pytest.raises(AutoCompressError, match="works on uint8 images only, but dataset 'basic-motions' holds"):
        Shift.parse("brightness:3").apply(x, 0, info)  # type: ignore[union-attr]
    noisy = Shift.parse("noise:5").apply(x, 0, info)  # type: ignore[union-attr]
    assert noisy.dtype == torch.float32 and noisy.shape == x.shape
    assert 0.4 < float((noisy - x).std() / x.std()) < 0.8  # 0.6 channel standard deviations of noise
    shifted = Shift.parse("offset:5").apply(x, 0, info)  # type: ignore[union-attr]
    assert torch.allclose((shifted - x).mean(dim=(0, 2)), torch.tensor(info.std), rtol=1e-4)


def test_shift_plugin_is_called_in_the_data_units(tmp_path: Path, digits: DatasetSplits) -> None:
    (tmp_path / "my_shift.py").write_text(
        "def invert(x, severity, generator):\n    return 1.0 - x\n\n"
        "def shrink(x, severity, generator):\n    return x[:1]\n"
    )
    shift = Shift.parse(f"{tmp_path / 'my_shift.py'}:invert:2")
    assert isinstance(shift, Shift) and str(shift).endswith("invert:2")
    assert torch.equal(shift.apply(digits.val_x[:4], 0, digits.info), 255 - digits.val_x[:4])
    with pytest.raises(AutoCompressError, match="must return a tensor of its input's shape"):
        Shift.parse(f"{tmp_path / 'my_shift.py'}:shrink:1").apply(digits.val_x[:4])  # type: ignore[union-attr]


def fog(x: torch.Tensor, strength: int) -> torch.Tensor:
    """A drift that is not built in: a bright veil over the digits (contrast loss toward a light grey)."""
    f = x.float() / 255
    return ((f * (1 - 0.15 * strength) + 0.12 * strength).clamp(0, 1) * 255).round().to(torch.uint8)


def test_adaptation_on_the_users_target_data_recovers_a_new_drift(tmp_path: Path, digits: DatasetSplits) -> None:
    model = load_model("digits-cnn", 10, digits.info.input_shape, "digits", pretrained=True)
    evaluator = PolicyEvaluator(model, digits.info, digits.val_x, digits.val_y, digits.train_x)
    scores, plain, adapted = [], [], []
    for strength in (1, 2, 3):
        path = tmp_path / f"fog{strength}.npz"
        target = fog(digits.train_x[-500:], strength)  # unlabelled images of the drifted domain
        np.savez(path, x=fog(digits.test_x, strength).numpy(), y=digits.test_y.numpy(), x_target=target.numpy())
        drift = Shift.parse(f"data:{path}")
        assert isinstance(drift, DriftData)
        plain.append(evaluator.evaluate(Policy("digits-cnn"), drift).accuracy)
        adapted.append(evaluator.evaluate(Policy("digits-cnn", adapt="adabn"), drift).accuracy)
        scores.append(evaluator.drift(drift))
    assert scores[0] < scores[1] < scores[2]  # the drift score rises with the drift's strength
    assert plain[2] < 0.5 and adapted[2] > plain[2] + 0.3  # AdaBN on the user's target data recovers it


def test_drift_data_must_match_the_dataset(tmp_path: Path, digits: DatasetSplits) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 8, 8), np.uint8), y=np.zeros(4, int))
    drift = Shift.parse(f"data:{tmp_path / 'd.npz'}")
    with pytest.raises(AutoCompressError, match="must hold the dataset's inputs"):
        drift.check(digits.info)
    np.savez(tmp_path / "e.npz", x=np.zeros((4, 1, 8, 8), np.uint8))
    with pytest.raises(AutoCompressError, match="must hold x and y"):
        Shift.parse(f"data:{tmp_path / 'e.npz'}")


def test_the_env_takes_a_plugin_dataset_of_sequences(tmp_path: Path) -> None:
    import gymnasium as gym

    from autocompress import ENV_ID
    from autocompress.models import build_model

    weights = tmp_path / "w.pt"
    torch.save(build_model("sensor-cnn", 3, (3, 64)).state_dict(), weights)
    env = gym.make(ENV_ID, model="sensor-cnn", dataset=write_plugin(tmp_path), weights=str(weights), space="prune")
    env.reset(seed=0)
    done, info = False, {}
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        done = terminated or truncated
    assert 0.0 <= info["accuracy"] <= 1.0 and info["macs_ratio"] <= 1.0
