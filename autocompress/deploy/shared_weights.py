"""Weights several configurations of an adaptive package share (the on-device side: numpy and onnx, no torch).

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

:func:`materialize` rebuilds a complete ONNX model from them (what the runtime loads into onnxruntime);
``onnx.save(materialize(...), "model.onnx")`` gives a file any runtime reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autocompress.errors import AutoCompressError

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


def load_store(package: str | Path) -> dict[str, np.ndarray]:
    """The package's shared tensors (empty when the package shares nothing)."""
    path = Path(package) / SHARED_FILE
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def materialize(config_dir: str | Path, file: str, store: Mapping[str, np.ndarray]) -> Any:
    """The complete ONNX model of a configuration's ``file`` (e.g. ``model.shared.onnx``), its shared
    initializers filled in from ``store`` (see :func:`load_store`)."""
    import onnx
    from onnx import numpy_helper

    folder = Path(config_dir)
    model = onnx.load(str(folder / file))
    refs_path = folder / REFS_FILE
    refs = json.loads(refs_path.read_text()).get(file, {}) if refs_path.is_file() else {}
    for name, ref in refs.items():
        if ref["tensor"] not in store:
            raise AutoCompressError(
                f"the shared store must hold '{ref['tensor']}' for {folder / file}, but it does not; export the "
                "package again."
            )
        model.graph.initializer.append(numpy_helper.from_array(take(store[ref["tensor"]], ref["index"]), name))
    return model


def fill_state_dict(
    state: dict[str, Any], refs: Mapping[str, Mapping[str, Any]], store: Mapping[str, np.ndarray]
) -> None:
    """Put the shared tensors a ``model.pt`` refers to back into its state dict (as torch tensors)."""
    import torch

    for name, ref in refs.items():
        if ref["tensor"] not in store:
            raise AutoCompressError(
                f"the shared store (shared.npz of the package) must hold '{ref['tensor']}', but it does not or is "
                "missing; a configuration's model.pt works only inside its package."
            )
        state[name] = torch.from_numpy(np.ascontiguousarray(take(store[ref["tensor"]], ref["index"])))
