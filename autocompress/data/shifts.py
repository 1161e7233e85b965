"""Input shifts, severities 1–5, as batched tensor ops, and a user's own drift.

Image shifts follow CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019) on uint8 images where the operation is the same;
brightness is applied in RGB rather than HSV, and blur is Gaussian (the defocus disk needs per-image PIL work).
``gaussian_noise``, ``gain`` and ``offset`` also apply to float data and sequences, scaled by each channel's
standard deviation (sensor noise, a gain error, a bias drift). A shift plugin ``package.module:function`` (or
``file.py:function``) is called as ``function(x, severity, generator)`` on float inputs in the dataset's units
(pixels in [0, 1]) and returns the shifted batch. ``data:SOURCE`` is a drift given as data instead (see
:mod:`autocompress.data.drift`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from autocompress.data.drift import DriftData
from autocompress.data.jpeg import jpeg_roundtrip
from autocompress.errors import AutoCompressError, did_you_mean
from autocompress.plugins import import_object

if TYPE_CHECKING:
    from autocompress.data.datasets import DatasetInfo
    from autocompress.data.drift import DriftData

ShiftFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]
ANY_KIND = frozenset({"gaussian_noise", "gain", "offset"})  # the rest need uint8 images


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
    return jpeg_roundtrip(x, [80, 65, 58, 50, 40][severity - 1])


def _gain(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    return x * [1.1, 1.2, 1.35, 1.5, 1.75][severity - 1]


def _offset(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    return x + [0.2, 0.4, 0.6, 0.8, 1.0][severity - 1]  # in channel standard deviations (see Shift._scaled)


SERIES_NOISE = [0.1, 0.2, 0.3, 0.45, 0.6]  # gaussian_noise on float data, in channel standard deviations

SHIFTS: dict[str, ShiftFn] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "brightness": _brightness,
    "contrast": _contrast,
    "gaussian_blur": _gaussian_blur,
    "pixelate": _pixelate,
    "jpeg": _jpeg,
    "gain": _gain,
    "offset": _offset,
}
ALIASES = {"noise": "gaussian_noise", "blur": "gaussian_blur", "jpeg_compression": "jpeg"}


@dataclass(frozen=True)
class Shift:
    """A named input shift (built-in or ``package.module:function``) at a severity from 1 (mild) to 5 (strong)."""

    name: str
    severity: int

    def __post_init__(self) -> None:
        if self.is_plugin:
            if not callable(import_object(self.name, "a shift plugin", "mypkg.drift:fog")):
                raise AutoCompressError(f"the shift plugin '{self.name}' must be a function (x, severity, generator).")
        elif self.name not in SHIFTS:
            choices = sorted([*SHIFTS, *ALIASES])
            raise AutoCompressError(
                f"a shift must be one of {', '.join(choices)}, package.module:function:severity or data:FILE, but "
                f"got '{self.name}'.{did_you_mean(self.name, choices)}"
            )
        if self.severity not in range(1, 6):
            raise AutoCompressError(
                f"1 <= severity <= 5 must hold, but got severity={self.severity} for '{self.name}'."
            )

    @property
    def is_plugin(self) -> bool:
        return ":" in self.name

    @classmethod
    def parse(cls, spec: str) -> Shift | DriftData:
        """Parse ``name:severity`` (e.g. ``noise:3``; aliases noise, blur, jpeg_compression),
        ``package.module:function:severity`` (a plugin) or ``data:SOURCE`` (a drift given as data)."""
        if spec.startswith("data:"):
            return DriftData.load(spec[len("data:") :])
        name, sep, level = spec.rpartition(":")
        if not sep or not name or not level.strip().isdigit():
            raise AutoCompressError(
                f"a shift must be written name:severity with severity 1..5 (e.g. noise:3), "
                f"package.module:function:severity or data:FILE, but got '{spec}'."
            )
        return cls(ALIASES.get(name.strip(), name.strip()), int(level))

    def __str__(self) -> str:
        return f"{self.name}:{self.severity}"

    def check(self, info: DatasetInfo) -> None:
        """Refuse an image-only shift on data that is not uint8 images, in one line."""
        if not self.is_plugin and self.name not in ANY_KIND and not info.is_pixel_image:
            raise AutoCompressError(
                f"the shift '{self}' works on uint8 images only, but dataset '{info.name}' holds "
                f"{info.describe_input()}; use {', '.join(sorted(ANY_KIND))}, a shift plugin "
                "(package.module:function:severity) or your own drift data (data:FILE).",
                params=("shift",),
            )

    def apply(self, images: torch.Tensor, seed: int = 0, info: DatasetInfo | None = None) -> torch.Tensor:
        """The shifted copy of a batch as stored (uint8 images when ``info`` is omitted), deterministic for a seed."""
        gen = torch.Generator().manual_seed(seed)
        fn: Any = import_object(self.name, "a shift plugin", "mypkg.drift:fog") if self.is_plugin else SHIFTS[self.name]
        if info is None or info.is_pixel_image:
            if info is not None:
                self.check(info)
            x = images.float() / 255.0
            out = self._scaled(fn, x, gen, info) if self.name == "offset" else self._call(fn, x, gen)
            return (out.clamp(0, 1) * 255.0).round().to(torch.uint8)
        self.check(info)
        x = images.float() * info.scale
        out = self._call(fn, x, gen) if self.is_plugin else self._scaled(fn, x, gen, info)
        if info.dtype == "uint8":
            return (out / info.scale).clamp(0, 255).round().to(torch.uint8)
        return out.float()

    def _scaled(self, fn: Any, x: torch.Tensor, gen: torch.Generator, info: DatasetInfo | None) -> torch.Tensor:
        """Built-in shifts on float data act in units of each channel's standard deviation."""
        shape = (1, x.shape[1], *([1] * (x.dim() - 2)))
        std = torch.tensor(info.std if info is not None and info.std is not None else [1.0] * x.shape[1]).view(shape)
        if self.name == "gaussian_noise":
            return x + torch.randn(x.shape, generator=gen) * SERIES_NOISE[self.severity - 1] * std
        return fn(x / std, self.severity, gen) * std

    def _call(self, fn: Any, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        out = fn(x, self.severity, gen)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise AutoCompressError(
                f"the shift '{self.name}' must return a tensor of its input's shape {tuple(x.shape)}, but returned "
                f"{getattr(out, 'shape', type(out).__name__)}."
            )
        if not torch.isfinite(out).all():
            raise AutoCompressError(f"the shift '{self}' must return finite values, but returned NaN or infinity.")
        return out
