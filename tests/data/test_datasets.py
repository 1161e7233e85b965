import pytest
import torch

from autocompress.data import BatchIterator, Normalizer, dataset_info, load_dataset, random_crop_flip
from autocompress.errors import AutoCompressError


def test_digits_splits_are_deterministic_complete_and_balanced(digits) -> None:
    again = load_dataset("digits")
    assert torch.equal(digits.val_x, again.val_x) and torch.equal(digits.test_y, again.test_y)
    assert (len(digits.train_y), len(digits.val_y), len(digits.test_y)) == (1257, 180, 360)
    assert digits.val_y.bincount().tolist() == [18] * 10
    assert len(digits.train_y) + len(digits.val_y) + len(digits.test_y) == 1797


def test_unknown_dataset_suggests_the_nearest() -> None:
    with pytest.raises(AutoCompressError, match="Did you mean 'cifar10'"):
        dataset_info("cifar-10")


def test_crop_and_flip_match_a_reference() -> None:
    images = (torch.arange(2 * 3 * 32 * 32) % 251).to(torch.uint8).reshape(2, 3, 32, 32)
    out = random_crop_flip(images, 4, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    oy, ox = torch.randint(0, 9, (2,), generator=gen), torch.randint(0, 9, (2,), generator=gen)
    flips = torch.rand(2, generator=gen) < 0.5
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(2):
        ref = padded[i, :, oy[i] : oy[i] + 32, ox[i] : ox[i] + 32]
        assert torch.equal(out[i], ref.flip(2) if flips[i] else ref)


def test_normalizer_matches_mean_and_std() -> None:
    info = dataset_info("cifar10")
    images = torch.full((1, 3, 2, 2), 128, dtype=torch.uint8)
    out = Normalizer(info)(images)
    expected = (128 / 255 - torch.tensor(info.mean)) / torch.tensor(info.std)
    torch.testing.assert_close(out[0, :, 0, 0], expected)


def test_batch_iterator_covers_every_image_once(digits) -> None:
    it = BatchIterator(digits.val_x, digits.val_y, digits.info, batch_size=64, shuffle=True, seed=1)
    labels = torch.cat([y for _, y in it])
    assert len(it) == 3 and sorted(labels.tolist()) == sorted(digits.val_y.tolist())
