"""What the command modules share: the one-line usage error, the parser that raises it, and common flags."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from autocompress.errors import AutoCompressError


class UsageError(AutoCompressError):
    """Bad command-line flags."""


class OneLineParser(argparse.ArgumentParser):
    """argparse parser whose errors become :class:`UsageError` (one line, exit 1) instead of exit 2 with usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}; see '{self.prog} --help'.")


def seed_value(text: str) -> int:
    """argparse ``type`` of ``--seed``: an integer numpy and torch accept (0 <= seed < 2**32)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be an integer, but got '{text[:40]}'") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"0 <= --seed < 2**32 must hold, but got {text[:40]}")
    return value


DATASET_HELP = (
    "digits, cifar10, basic-motions, a .npz file, an image folder (train/ and test/ of class folders) or "
    "package.module:factory returning a DatasetSpec (see: autocompress list datasets)"
)


def add_common_data_args(parser: argparse.ArgumentParser) -> None:
    """The flags every verb that reads a dataset shares."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the dataset (CIFAR-10: cifar-10-batches-bin/ or cifar-10-batches-py/); "
        "default: $AUTOCOMPRESS_DATA_DIR",
    )
    parser.add_argument("--download", action="store_true", help="allow downloading the dataset through torchvision")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op threads; validates the value."""
    import torch

    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads >= 1 must hold, but got {threads}.")
    torch.set_num_threads(threads)


def join_torchrun(device: str | None) -> Any:
    """Under torchrun, join the job on ``device`` (a torch device name) and leave the log to rank 0; returns this
    process's :class:`~autocompress.distributed.World` (the single one without torchrun)."""
    import logging

    from autocompress import distributed
    from autocompress.models.training import resolve_device

    here = distributed.world()
    if here.active:
        distributed.setup(resolve_device(device or "cpu"))
        if not here.main:
            logging.getLogger("autocompress").setLevel(logging.WARNING)
    return here


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--model/--pretrained/--weights/--dataset, shared by the verbs that load a trained model (``required``
    false: the verb checks them itself, e.g. where a listing flag needs neither)."""
    p.add_argument("--model", required=required, help="zoo name, torchvision:<name> or package.module:factory")
    p.add_argument("--dataset", required=required, help=DATASET_HELP)
    p.add_argument("--pretrained", action="store_true", help="load the weights shipped with autocompress")
    p.add_argument("--weights", default=None, help="load a state dict or training checkpoint (weights_only)")
