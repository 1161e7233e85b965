"""The ``autocompress`` command: argument parsing, logging set-up, and one-line errors with exit code 1."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import NoReturn

from autocompress.errors import AutoCompressError

log = logging.getLogger("autocompress")


class UsageError(AutoCompressError):
    """Bad command-line flags."""


class OneLineParser(argparse.ArgumentParser):
    """argparse parser whose errors become :class:`UsageError` (one line, exit 1) instead of exit 2 with usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}; see '{self.prog} --help'.")


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


def _verb_modules() -> list[ModuleType]:
    from autocompress.cli import (
        compare_cmd,
        doctor_cmd,
        evaluate_cmd,
        export_cmd,
        list_cmd,
        profile_cmd,
        search_cmd,
        train_cmd,
    )

    return [list_cmd, train_cmd, evaluate_cmd, search_cmd, export_cmd, compare_cmd, profile_cmd, doctor_cmd]


def build_parser() -> OneLineParser:
    """The full parser with one sub-command per verb module."""
    from autocompress import __version__

    parser = OneLineParser(
        prog="autocompress",
        description="Fit trained networks to IoT devices: search pruning, quantization, split and adaptation policies.",
    )
    parser.add_argument("--version", action="version", version=f"autocompress {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=OneLineParser)
    for module in _verb_modules():
        module.add_parser(sub)
    return parser


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if not debug else "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("autocompress")
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list or bool(os.environ.get("AUTOCOMPRESS_DEBUG"))
    try:
        parser = build_parser()
        args = parser.parse_args(args_list)
        _configure_logging(args.debug, args.quiet)
        if args.verb is None:
            parser.print_help()
            return 0
        runner: Callable[[argparse.Namespace], int] = args.run
        return runner(args)
    except AutoCompressError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; completed work is saved — rerun with --resume to continue.", file=sys.stderr)
        return 130
