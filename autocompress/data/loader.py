"""Batched input pipeline on in-memory uint8 tensors.

torchvision's per-image PIL transforms cost more than a ResNet-20 forward pass on 2 cores, so normalisation and
augmentation (random crop with padding, horizontal flip) run here as tensor ops on whole batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from autocompress.data.datasets import DatasetInfo


class Normalizer:
    """Turn uint8 images into normalised float32 tensors with the dataset's mean and std."""

    def __init__(self, info: DatasetInfo, device: torch.device | str = "cpu") -> None:
        shape = (1, len(info.mean), 1, 1)
        self.scale = (1.0 / (255.0 * torch.tensor(info.std))).view(shape).to(device)
        self.shift = (torch.tensor(info.mean) / torch.tensor(info.std)).view(shape).to(device)

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


class BatchIterator:
    """Iterate over (normalised images, labels) batches of in-memory uint8 data.

    Args:
        images: uint8 tensor N×C×H×W (on the device the batches should live on).
        labels: int64 tensor N.
        info: Dataset facts (normalisation, augmentation padding).
        batch_size: Images per batch.
        shuffle: Draw a new permutation each epoch.
        augment: Apply random crop and flip.
        seed: Seed of the generator behind shuffling and augmentation.
        drop_last: Skip the last incomplete batch (keeps BatchNorm statistics stable in training).
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
    ) -> None:
        self.images, self.labels, self.info = images, labels, info
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.normalize = Normalizer(info, images.device)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            batch = self.images[idx]
            if self.augment:
                batch = random_crop_flip(batch, self.info.augment_padding, self.generator, self.info.augment_flip)
            yield self.normalize(batch), self.labels[idx]
