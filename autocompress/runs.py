"""Run folders, atomic file writes and the system report shared by training and search jobs."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import filelock
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


LOCK_FILE = ".run.lock"


class FolderLock:
    """A folder held by one process: a second holder, in this process or another, is refused with one line naming
    the first. The operating system's file lock (``flock`` through `filelock
    <https://py-filelock.readthedocs.io>`_) goes with the process, so a killed holder leaves no stale lock; who holds
    it is written beside it, for the message.

    Args:
        lock: The lock file.
        purpose: What holds it (``search``, ``resume``, ``export``), for the message a second holder gets.
        refusal: The message's start, e.g. "a run folder is searched by one process at a time, but 'X'".
        advice: How to go on, the message's end.
    """

    def __init__(self, lock: Path, purpose: str, refusal: str, advice: str) -> None:
        self.path, self.owner = lock, lock.with_name(lock.name + ".owner.json")
        self._lock = filelock.FileLock(str(lock), timeout=0, thread_local=False)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise AutoCompressError(f"{refusal} is in use by {self._holder()}; {advice}", params=("run_dir",)) from None
        owner = {"pid": os.getpid(), "host": platform.node(), "purpose": purpose, "since": time.strftime("%H:%M:%S")}
        atomic_write_json(self.owner, owner)

    def _holder(self) -> str:
        try:
            owner = json.loads(self.owner.read_text())
            return f"process {owner['pid']} on {owner['host']} ({owner['purpose']} since {owner['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    @property
    def held(self) -> bool:
        return bool(self._lock.is_locked)

    def release(self) -> None:
        """Let the folder go (also done when the process ends, however it ends)."""
        if self._lock.is_locked:
            self.owner.unlink(missing_ok=True)
            self._lock.release()
            self.path.unlink(missing_ok=True)


def run_lock(folder: Path, purpose: str) -> FolderLock:
    """The lock a search or resume holds on its run folder (``.run.lock`` inside it) while it runs."""
    return FolderLock(
        folder / LOCK_FILE,
        purpose,
        f"a run folder is searched by one process at a time, but '{folder}'",
        "wait for it to finish (or stop it), then --resume.",
    )


EXPORT_MARKERS = ("report.json", "manifest.json", "controller.json")  # what an earlier export leaves in its folder


@contextlib.contextmanager
def atomic_folder(out: Path, keep_on_retry: Sequence[str] = ()) -> Iterator[Path]:
    """Build an output folder beside its final place and swap it in whole: a kill, a full disk or an error leaves
    the previous ``out`` as it was (or no ``out``), never a mix of old and new files.

    Yields the staging folder ``.<name>.partial`` next to ``out``; when the block ends without error, ``out`` (an
    earlier export) is renamed away, the staging folder renamed to ``out`` and the old one removed. A second
    process exporting into the same ``out`` meanwhile is refused in one line. On a failure the staging folder
    keeps only ``keep_on_retry`` (e.g. training checkpoints, resumed by the next attempt), or all it holds when the
    error has a true ``keep_output`` attribute (the files are wanted for inspection). ``out`` must be new,
    empty or an earlier export (it holds one of :data:`EXPORT_MARKERS`): a folder holding other files — a run
    folder, a home directory — is refused rather than replaced.
    """
    out = Path(out)
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(
        parent / f".{out.name}.lock",
        "export",
        f"an output folder is written by one export at a time, but '{out}'",
        "wait for it to finish, or export into another --out.",
    )
    staging, old = parent / f".{out.name}.partial", parent / f".{out.name}.old"
    try:
        if old.exists() and not out.exists():
            old.rename(out)  # a swap cut short by a kill: the previous output comes back
        shutil.rmtree(old, ignore_errors=True)
        if out.exists() and not out.is_dir():
            raise AutoCompressError(f"out must be a folder, but '{out}' is a file; choose a folder.", params=("out",))
        if out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in EXPORT_MARKERS):
            raise AutoCompressError(
                f"out must be a new folder or an earlier export's, but '{out}' holds other files "
                f"({', '.join(sorted(p.name for p in out.iterdir())[:4])}); choose another folder.",
                params=("out",),
            )
        _clear(staging, keep_on_retry)
        try:
            yield staging
        except BaseException as exc:
            if getattr(exc, "keep_output", False):
                raise  # the files are wanted for inspection (a failed verification): staging stays, out unchanged
            _clear(staging, keep_on_retry)
            if not any(staging.iterdir()):
                staging.rmdir()
            raise
        for name in keep_on_retry:
            shutil.rmtree(staging / name, ignore_errors=True)  # the output is complete: its training state goes
        if out.exists():
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        lock.release()


def _clear(staging: Path, keep: Sequence[str]) -> None:
    """Empty ``staging`` (creating it) but for the entries named ``keep``."""
    staging.mkdir(exist_ok=True)
    for entry in staging.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


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
