"""The ``autocompress`` command: argument parsing, logging set-up, and one-line errors with exit code 1."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from autocompress.cli.common import OneLineParser, UsageError
from autocompress.errors import AutoCompressError

log = logging.getLogger("autocompress")


def _verb_modules() -> list[ModuleType]:
    from autocompress.cli import (
        compare_cmd,
        doctor_cmd,
        evaluate_cmd,
        export_cmd,
        list_cmd,
        profile_cmd,
        search_cmd,
        simulate_cmd,
        train_cmd,
    )

    return [
        list_cmd,
        train_cmd,
        evaluate_cmd,
        search_cmd,
        export_cmd,
        simulate_cmd,
        compare_cmd,
        profile_cmd,
        doctor_cmd,
    ]


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


DATA_PARALLEL = ("train", "export")  # verbs that split their training over torchrun's ranks (autocompress.distributed)


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
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and args.verb not in DATA_PARALLEL:
            raise UsageError(
                f"under torchrun only {', '.join(DATA_PARALLEL)} runs data-parallel, but got '{args.verb}' (each "
                "rank would run it whole, into the same folders); run it as one process (README: Training on "
                "several GPUs or machines)."
            )
        runner: Callable[[argparse.Namespace], int] = args.run
        return runner(args)
    except AutoCompressError as exc:
        if debug:
            raise
        print(f"error: {in_flags(exc, args_list)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; completed work is saved — rerun with --resume to continue.", file=sys.stderr)
        return 130
    except OSError as exc:  # the file system said no: one line naming the file, not a traceback
        if debug:
            raise
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1


def os_error_line(exc: OSError) -> str:
    """One line for an error of the file system: what must hold, the file, how to go on."""
    name = f"'{exc.filename}'" if exc.filename else "a file"
    if exc.errno == errno.ENOSPC:
        return (
            f"writing {name} needs free disk space, but the disk is full; free some space and run the same "
            "command again (an export leaves its earlier output as it was, a search resumes)."
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"{name} must be writable (or readable), but the system refused it ({exc.strerror}); choose a "
            "folder you can write."
        )
    if exc.errno == errno.ENAMETOOLONG:
        return (
            f"a file name must be within the system's length limit, but {name[:120]} is too long; choose a "
            "shorter path."
        )
    return f"the file system refused {name[:200]} ({exc.strerror or exc}); check the path and its folder."


def in_flags(exc: AutoCompressError, argv: Sequence[str]) -> str:
    """The error's message with the parameters it names written as the flags of the verb that ran
    (``run_dir`` → ``--run-dir``); the library speaks Python, the command line speaks flags."""
    message = str(exc)
    if not exc.params:
        return message
    flags = _verb_flags(argv)
    # quoted parts are values (paths, names) the user gave: a file named trace.csv keeps its name
    parts = re.split(r"('[^']*')", message)
    for param in exc.params:
        if param in flags:
            pattern = rf"(?<![\w./-]){re.escape(param)}(?![\w/-])"
            parts = [p if p.startswith("'") else re.sub(pattern, flags[param], p) for p in parts]
    return "".join(parts)


def _verb_flags(argv: Sequence[str]) -> dict[str, str]:
    """Parameter name → its long flag, for the verb named in ``argv``."""
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    verb = next((a for a in argv if a in verbs.choices), None)
    if verb is None:
        return {}
    flags = {}
    for action in verbs.choices[verb]._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long:
            flags[action.dest] = long[0]
    return flags
