"""A user's own drift, given as data: labelled inputs from the drifted domain (what accuracy is measured on) and,
optionally, unlabelled inputs from it (what AdaBN/TENT adapt on and the drift score sees).

Written ``data:SOURCE`` wherever a shift is accepted (``evaluate --shift``, an env preset's ``context.shifts``),
SOURCE being a ``.npz`` file holding ``x`` and ``y`` (and optionally ``x_target``) or a plugin
``package.module:factory`` / ``file.py:factory`` returning a :class:`DriftSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocompress.data.datasets import DatasetInfo
from autocompress.data.sources import npz_arrays
from autocompress.errors import DataError
from autocompress.plugins import import_object, is_plugin_spec

NPZ_KEYS = "x and y (optional x_target)"


@dataclass
class DriftSpec:
    """What a drift plugin returns: labelled drifted inputs ``x``, ``y`` and optional unlabelled ``target`` inputs
    from the same domain (default: ``x`` itself, as TENT adapts on the test stream)."""

    x: Any
    y: Any
    target: Any | None = None


@dataclass(frozen=True, eq=False)
class DriftData:
    """A drift given as data (see the module docstring); behaves like a shift wherever one is taken."""

    source: str
    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    target: torch.Tensor = field(repr=False)

    def __str__(self) -> str:
        return f"data:{self.source}"

    @classmethod
    def load(cls, source: str) -> DriftData:
        """Read a ``.npz`` (x, y, optional x_target) or call a plugin returning a :class:`DriftSpec` (cached)."""
        if not is_plugin_spec(source):
            source = str(Path(source).expanduser().resolve())
        stamp = Path(source).stat().st_mtime if Path(source).is_file() else 0.0
        key = (source, stamp)
        if key not in _CACHE:
            spec = _call(source) if is_plugin_spec(source) else _read(source)
            x, y = _array(spec.x, "x", source), _array(spec.y, "y", source)
            target = _array(spec.target, "x_target", source) if spec.target is not None else x
            if y.ndim != 1 or len(y) != len(x) or len(y) == 0 or not np.issubdtype(y.dtype, np.integer):
                raise DataError(
                    f"the drift data '{source}' must hold N inputs x and N integer labels y, but has x "
                    f"{'×'.join(map(str, x.shape))} and y {y.dtype} {'×'.join(map(str, y.shape))}.",
                    params=("shift",),
                )
            if target.shape[1:] != x.shape[1:]:
                raise DataError(
                    f"x_target of '{source}' must have x's shape per example {x.shape[1:]}, but has "
                    f"{target.shape[1:]}.",
                    params=("shift",),
                )
            as_t = torch.from_numpy
            _CACHE[key] = cls(source, as_t(x), as_t(y.astype(np.int64)), as_t(target))
        return _CACHE[key]

    def check(self, info: DatasetInfo) -> None:
        """The drifted inputs must look like the dataset's (shape, dtype, labels in range)."""
        stored = "uint8" if self.images.dtype == torch.uint8 else "float32"
        if tuple(self.images.shape[1:]) != tuple(info.input_shape) or stored != info.dtype:
            raise DataError(
                f"the drift data '{self.source}' must hold the dataset's inputs ({info.describe_input()}), but holds "
                f"{stored} {'×'.join(map(str, self.images.shape[1:]))}; store it as the training data is stored.",
                params=("shift",),
            )
        if int(self.labels.max()) >= info.num_classes or int(self.labels.min()) < 0:
            raise DataError(
                f"the labels of drift data '{self.source}' must lie in 0..{info.num_classes - 1}, but range "
                f"{int(self.labels.min())}..{int(self.labels.max())}.",
                params=("shift",),
            )


_CACHE: dict[tuple[str, float], DriftData] = {}


def _read(path: str) -> DriftSpec:
    arrays = npz_arrays(path, "a drift data file", NPZ_KEYS, "shift")
    if "x" not in arrays or "y" not in arrays:
        raise DataError(
            f"'{path}' must hold {NPZ_KEYS}, but holds {', '.join(sorted(arrays)) or 'nothing'}.", params=("shift",)
        )
    return DriftSpec(arrays["x"], arrays["y"], arrays.get("x_target"))


def _call(spec: str) -> DriftSpec:
    factory = import_object(spec, "a drift data factory", "mypkg.drift:night")
    result = factory()
    if not isinstance(result, DriftSpec):
        raise DataError(
            f"the drift factory '{spec}' must return autocompress.data.drift.DriftSpec, but returned "
            f"{type(result).__name__}.",
            params=("shift",),
        )
    return result


def _array(value: Any, what: str, source: str) -> np.ndarray:
    array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if what != "y" and array.dtype != np.uint8:
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise DataError(f"{what} of drift data '{source}' must be finite, but holds NaN or infinity.")
    return array
