"""Run folders, atomic file writes and the system report shared by training and search jobs."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from autocompress.errors import AutoCompressError

RUNS_ROOT_ENV = "AUTOCOMPRESS_RUNS_DIR"
REPORTED_PACKAGES = ["torch", "torchvision", "torch-pruning", "stable-baselines3", "gymnasium", "optuna", "onnxruntime"]


def runs_root() -> Path:
    """Folder that holds run folders: ``AUTOCOMPRESS_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get(RUNS_ROOT_ENV, "runs"))


def new_run_dir(exp: str, env: str, agent: str, seed: int, run_dir: str | os.PathLike[str] | None = None) -> Path:
    """Create ``runs/<exp>__<env>__<agent>__s<seed>__<YYYYmmdd-HHMMSS>`` (or ``run_dir``) and return it."""
    if run_dir is not None:
        path = Path(run_dir)
        if path.exists() and any(path.iterdir()):
            raise AutoCompressError(
                f"run_dir must be a new or empty folder, but '{path}' holds files; resume it to continue it.",
                params=("run_dir",),
            )
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = runs_root() / f"{exp}__{env}__{agent}__s{seed}__{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def existing_run_dir(path: str | os.PathLike[str], marker: str, purpose: str = "resume") -> Path:
    """Return an existing run folder for ``purpose`` (a parameter or verb), checking it holds ``marker``."""
    run = Path(path)
    if not (run / marker).is_file():
        raise AutoCompressError(
            f"{purpose} needs a run folder holding {marker}, but '{run}' does not; pass the folder a run created.",
            params=(purpose,),
        )
    return run


def refuse_links_out(folder: Path) -> None:
    """Refuse a run folder holding a file or folder (top level or ``checkpoints/``) that is a symlink leading out
    of it: resuming would append to, and exporting would read, a file elsewhere."""
    root = folder.resolve()
    for entry in [
        *folder.iterdir(),
        *((folder / "checkpoints").iterdir() if (folder / "checkpoints").is_dir() else []),
    ]:
        if entry.is_symlink() and root not in entry.resolve().parents:
            raise AutoCompressError(
                f"a run folder's files must lie inside it, but '{entry}' is a symlink to '{entry.resolve()}'; "
                "replace the link with the file."
            )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that a kill at any moment leaves either the old or the new content, never a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``not installed``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def system_report() -> dict[str, Any]:
    """Versions, cores and threads: what a bug report or a benchmark table needs to name the machine."""
    return {
        "autocompress": package_version("autocompress"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        **{name: package_version(name) for name in REPORTED_PACKAGES},
    }


def command_line() -> str:
    """The command that started this process, for the run folder."""
    prog = Path(sys.argv[0]).name
    return " ".join(["autocompress" if prog in ("__main__.py", "autocompress") else prog, *sys.argv[1:]])
