"""Shared fixtures: real small data (digits, a few hundred CIFAR-10 images) and a tiny trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from autocompress.data import DatasetSplits, load_dataset

# pytest-xdist's workers share the cores: each takes its share of threads (more would oversubscribe them)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
torch.set_num_threads(_THREADS)
# and so do the processes a test starts (the CLI by subprocess): their default is every core, and OpenMP threads
# spinning on cores another worker holds made a 2-second digits search take 7. A worker sets its share whatever the
# controller (which loads this file too, without a worker count) left in the environment.
if "PYTEST_XDIST_WORKER" in os.environ or "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)


@pytest.fixture(scope="session")
def digits() -> DatasetSplits:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The real CIFAR-10 folder from AUTOCOMPRESS_DATA_DIR (.ci/run sets it); tests needing it skip without it."""
    value = os.environ.get("AUTOCOMPRESS_DATA_DIR")
    if not value or not (Path(value) / "cifar-10-batches-bin").is_dir():
        pytest.skip("set AUTOCOMPRESS_DATA_DIR to a folder holding cifar-10-batches-bin/ to run CIFAR-10 tests")
    return Path(value)


@pytest.fixture(scope="session")
def cifar(cifar_dir: Path) -> DatasetSplits:
    return load_dataset("cifar10", cifar_dir)


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep run folders that tests create out of the repository's runs/."""
    monkeypatch.setenv("AUTOCOMPRESS_RUNS_DIR", str(tmp_path / "runs"))
