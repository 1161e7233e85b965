"""Weights several configurations of an adaptive package share (the on-device side: numpy only).

In a shared package (``export --adaptive --share-weights``) the configurations are nested: every channel group of a
smaller configuration keeps a subset of the channels of one *union* model (each group keeps the most channels any
configuration keeps), so most of a configuration's tensors are slices of the union model's. The package stores
the union's tensors once, in ``shared.npz``; each configuration's files keep only what is theirs (BatchNorm
statistics re-estimated for it, weights rounded to fewer bits) and a reference for every tensor they share: which
tensor of the store, and per axis the positions it keeps (``None``: all of them).

Layout::

    DIR/shared.npz                      the union model's tensors (no pickle)
    DIR/configs/cK/model.shared.onnx    the ONNX file without its shared initializers (likewise head/tail files)
    DIR/configs/cK/shared.json          {file name: {initializer name: {"tensor": key, "index": [...]}}}

A configuration whose weights are rounded to fewer bits refers to the union's float tensor too: its reference adds
``"bits"`` and, per output row, the ``"clip"`` ratio of the rounding scale, and :func:`resolve` rounds the slice the
way :func:`autocompress.compress.quantization.quantize_weight` did (per-row symmetric scale ``clip × max|w| /
(2^(bits-1) - 1)``, float32 throughout; 16 bits: a float16 round trip) — so rounded configurations share the store
instead of keeping private copies. The export checks every rebuilt tensor for exact equality.

:func:`materialize` rebuilds a complete ONNX model from them (the bytes the runtime loads into onnxruntime);
``Path("model.onnx").write_bytes(materialize(...))`` gives a file any runtime reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from autocompress.deploy.manifest import inside
from autocompress.deploy.onnx_wire import add_initializers
from autocompress.errors import AutoCompressError
from autocompress.files import read_json, short, why

SHARED_FILE = "shared.npz"
REFS_FILE = "shared.json"
SUFFIX = ".shared.onnx"

Index = Sequence[Sequence[int] | None]


def take(tensor: np.ndarray, index: Index) -> np.ndarray:
    """The slice of ``tensor`` that keeps, on each axis, the positions ``index`` names (``None``: all)."""
    if len(index) != tensor.ndim:
        raise AutoCompressError(f"a shared reference must index every axis of its tensor {tensor.shape}, got {index}.")
    grids = [
        np.arange(n) if ix is None else np.asarray(ix, dtype=np.int64)
        for n, ix in zip(tensor.shape, index, strict=True)
    ]
    return tensor[np.ix_(*grids)] if grids else tensor


def round_rows(weight: np.ndarray, bits: int, clip: Sequence[float] | None) -> np.ndarray:
    """``weight`` rounded to ``bits`` per output row (axis 0) with each row's ``clip`` ratio, in float32 (see the
    module's docstring); 16 bits: a float16 round trip, 32: unchanged."""
    weight = np.asarray(weight, dtype=np.float32)
    if bits >= 32:
        return weight
    if bits == 16:
        return weight.astype(np.float16).astype(np.float32)
    flat = weight.reshape(weight.shape[0], -1)
    qmax = np.float32(2 ** (bits - 1) - 1)
    ratio = np.asarray(clip if clip is not None else [1.0] * flat.shape[0], dtype=np.float32).reshape(-1, 1)
    if ratio.shape[0] != flat.shape[0]:
        raise AutoCompressError(
            f"a rounded shared reference needs one clip ratio per row ({flat.shape[0]}), but has {ratio.shape[0]}."
        )
    absmax = np.maximum(np.abs(flat).max(axis=1, keepdims=True), np.float32(1e-12))
    scale = absmax * ratio / qmax
    return (np.clip(np.round(flat / scale), -qmax, qmax) * scale).astype(np.float32).reshape(weight.shape)


def resolve(store: Mapping[str, np.ndarray], ref: Mapping[str, object]) -> np.ndarray:
    """The tensor a reference names: the slice of the store's tensor, rounded when the reference says so."""
    sliced = take(store[str(ref["tensor"])], ref["index"])  # type: ignore[arg-type]
    if "bits" in ref:
        return round_rows(sliced, int(ref["bits"]), ref.get("clip"))  # type: ignore[arg-type,call-overload]
    return sliced


def load_store(package: str | Path) -> dict[str, np.ndarray]:
    """The package's shared tensors (empty when the package shares nothing)."""
    path = Path(package) / SHARED_FILE
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception as exc:  # numpy raises zip, pickle and value errors for a damaged archive
        raise AutoCompressError(
            f"the package's shared weights '{path}' must be the numpy archive export wrote, but cannot be read "
            f"({why(exc, 40)}); export the package again."
        ) from None


def materialize(config_dir: str | Path, file: str, store: Mapping[str, np.ndarray]) -> bytes:
    """The complete ONNX model (protobuf bytes) of a configuration's ``file`` (e.g. ``model.shared.onnx``), its
    shared initializers filled in from ``store`` (see :func:`load_store`); a plain file is returned as it is."""
    folder = Path(config_dir)
    data = inside(folder, file, "a configuration's file").read_bytes()
    if not file.endswith(SUFFIX):
        return data
    refs_path = folder / REFS_FILE
    table = read_json(refs_path, "package's shared-weight references", AutoCompressError) if refs_path.is_file() else {}
    refs = table.get(file, {}) if isinstance(table, dict) else None
    if not isinstance(refs, dict):
        raise AutoCompressError(f"'{refs_path}' must map each file to its references, but does not; export again.")
    arrays = {}
    for name, ref in refs.items():
        if not isinstance(ref, dict) or ref.get("tensor") not in store:
            raise AutoCompressError(
                f"the shared store must hold the tensor {short(ref)} names for {folder / file}, but it does not; "
                "export the package again."
            )
        try:
            arrays[name] = resolve(store, ref)
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise AutoCompressError(
                f"the shared reference of '{name[:60]}' in '{refs_path}' must lie inside its tensor, but does not "
                f"({why(exc, 40)}); export the package again."
            ) from None
    return add_initializers(data, arrays)
