"""Input shifts in the style of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), severities 1–5, as batched tensor
ops on uint8 images. Severity parameters follow the CIFAR-10-C code where the operation is the same; brightness is
applied in RGB rather than HSV, and blur is Gaussian (the defocus disk needs per-image PIL work)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from autocompress.errors import AutoCompressError, did_you_mean

ShiftFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


def _gaussian_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    sigma = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return x + torch.randn(x.shape, generator=gen) * sigma


def _shot_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    rate = [500, 250, 100, 75, 50][severity - 1]
    return torch.poisson(x * rate, generator=gen) / rate


def _brightness(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    return x + [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]


def _contrast(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    factor = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor + mean


def _gaussian_blur(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    sigma = [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1]
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(horizontal, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _pixelate(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    factor = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(h * factor)), max(1, int(w * factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


def _jpeg(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    from autocompress.data.jpeg import jpeg_roundtrip

    return jpeg_roundtrip(x, [80, 65, 58, 50, 40][severity - 1])


SHIFTS: dict[str, ShiftFn] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "brightness": _brightness,
    "contrast": _contrast,
    "gaussian_blur": _gaussian_blur,
    "pixelate": _pixelate,
    "jpeg": _jpeg,
}
ALIASES = {"noise": "gaussian_noise", "blur": "gaussian_blur", "jpeg_compression": "jpeg"}


@dataclass(frozen=True)
class Shift:
    """A named input shift at a severity from 1 (mild) to 5 (strong)."""

    name: str
    severity: int

    def __post_init__(self) -> None:
        if self.name not in SHIFTS:
            choices = sorted([*SHIFTS, *ALIASES])
            raise AutoCompressError(
                f"a shift must be one of {', '.join(choices)}, but got '{self.name}'.{did_you_mean(self.name, choices)}"
            )
        if self.severity not in range(1, 6):
            raise AutoCompressError(
                f"1 <= severity <= 5 must hold, but got severity={self.severity} for '{self.name}'."
            )

    @classmethod
    def parse(cls, spec: str) -> Shift:
        """Parse ``name:severity`` (e.g. ``noise:3``; aliases noise, blur, jpeg_compression)."""
        name, sep, level = spec.partition(":")
        if not sep or not level.strip().isdigit():
            raise AutoCompressError(
                f"a shift must be written name:severity with severity 1..5 (e.g. noise:3), but got '{spec}'."
            )
        return cls(ALIASES.get(name.strip(), name.strip()), int(level))

    def __str__(self) -> str:
        return f"{self.name}:{self.severity}"

    def apply(self, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """The shifted copy of a uint8 batch (N×C×H×W), deterministic for a seed."""
        gen = torch.Generator().manual_seed(seed)
        x = images.float() / 255.0
        out = SHIFTS[self.name](x, self.severity, gen)
        return (out.clamp(0, 1) * 255.0).round().to(torch.uint8)
