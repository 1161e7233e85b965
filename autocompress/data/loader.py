"""Batched input pipeline on in-memory tensors: uint8 or float images N×C×H×W and sequences N×C×L.

torchvision's per-image PIL transforms cost more than a ResNet-20 forward pass on 2 cores, so normalisation and
augmentation (random crop with padding and horizontal flip for images, random time shift for sequences) run here as
tensor ops on whole batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from autocompress.data.datasets import DatasetInfo
from autocompress.distributed import World


class Normalizer:
    """Turn stored inputs (uint8 pixels or floats, any rank) into normalised float32 tensors.

    ``(x * info.scale - mean) / std`` per channel; a dataset marked already normalised only gets the scale.
    """

    def __init__(self, info: DatasetInfo, device: torch.device | str = "cpu") -> None:
        channels = info.input_shape[0]
        shape = (1, channels, *([1] * (len(info.input_shape) - 1)))
        mean = torch.tensor(info.mean if info.mean is not None else [0.0] * channels, dtype=torch.float64)
        std = torch.tensor(info.std if info.std is not None else [1.0] * channels, dtype=torch.float64)
        self.scale = (info.scale / std).float().view(shape).to(device)
        self.shift = (mean / std).float().view(shape).to(device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.scale - self.shift


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Randomly crop (after zero padding) and horizontally flip each image of a uint8 batch.

    Args:
        images: Batch of shape N×C×H×W.
        padding: Pixels of zero padding on each side before cropping back to H×W; 0 disables the crop.
        generator: Source of randomness, so runs are reproducible.
        flip: Also flip half of the images left-right (not for digits, where a mirrored 2 is no 2).
    """
    n, c, h, w = images.shape
    dev = images.device
    if padding > 0:
        padded = torch.nn.functional.pad(images, (padding,) * 4)
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        batch = torch.arange(n, device=dev)[:, None, None, None]
        chans = torch.arange(c, device=dev)[None, :, None, None]
        images = padded[batch, chans, rows, cols]
    if not flip:
        return images
    mask = (torch.rand(n, generator=generator) < 0.5).to(dev)[:, None, None, None]
    return torch.where(mask, images.flip(3), images)


def random_time_shift(series: torch.Tensor, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each sequence of a batch (N×C×L) by a random number of steps in [-steps, steps], repeating its edge
    values into the gap (a sensor window that starts a little earlier or later)."""
    n, c, length = series.shape
    if steps <= 0:
        return series
    padded = torch.nn.functional.pad(series.float(), (steps, steps), mode="replicate").to(series.dtype)
    offset = torch.randint(0, 2 * steps + 1, (n,), generator=generator).to(series.device)
    index = (offset[:, None] + torch.arange(length, device=series.device))[:, None, :].expand(n, c, length)
    return padded.gather(2, index)


def augment_batch(batch: torch.Tensor, info: DatasetInfo, generator: torch.Generator) -> torch.Tensor:
    """The training augmentation of a dataset's kind: crop and flip for images, a time shift for sequences."""
    if info.kind == "series":
        return random_time_shift(batch, info.augment_padding, generator)
    return random_crop_flip(batch, info.augment_padding, generator, info.augment_flip)


class BatchIterator:
    """Iterate over (normalised inputs, labels) batches of in-memory data.

    Args:
        images: Inputs as stored (uint8 or float, N×C×H×W or N×C×L), on the device the batches should live on.
        labels: int64 tensor N.
        info: Dataset facts (normalisation, augmentation padding).
        batch_size: Images per batch.
        shuffle: Draw a new permutation each epoch.
        augment: Apply the dataset's augmentation (:func:`augment_batch`).
        seed: Seed of the generator behind shuffling and augmentation.
        drop_last: Skip the last incomplete batch (keeps BatchNorm statistics stable in training).
        world: In a torchrun job, this rank's place: every rank draws the same permutation and augmentation and
            gets its contiguous slice of each global batch (:attr:`global_count` says how large that batch was); a
            last batch smaller than the world is skipped. ``None``: all of every batch, as in one process.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        info: DatasetInfo,
        batch_size: int,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        world: World | None = None,
    ) -> None:
        self.world = world if world is not None and world.active else None
        self.global_count = 0
        self.images, self.labels, self.info = images, labels, info
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.normalize = Normalizer(info, images.device)

    def __len__(self) -> int:
        n = len(self.labels)
        if self.world is not None and not self.drop_last and 0 < n % self.batch_size < self.world.size:
            return n // self.batch_size  # a last batch some ranks would get nothing of
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            batch, labels = self.images[idx], self.labels[idx]
            if self.augment:
                batch = augment_batch(batch, self.info, self.generator)
            self.global_count = len(idx)
            if self.world is not None:  # the whole batch was drawn and augmented as one process would: a slice
                part = self.world.shard(len(idx))
                batch, labels = batch[part], labels[part]
            yield self.normalize(batch), labels
