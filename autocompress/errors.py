"""Exceptions raised for bad user input, and the "did you mean" helper.

Every error a user can cause is an :class:`AutoCompressError` whose message is one sentence: what must hold,
what was given, and how to fix it. The CLI prints that sentence on one line and exits with code 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AutoCompressError(Exception):
    """Base class of all errors caused by user input (bad names, files, values or data).

    Args:
        message: One sentence: what must hold, what was given, how to fix it. Parameters are named as the Python
            API names them (``run_dir``, ``finetune_epochs``).
        params: The parameters the message names; the CLI rewrites each into the flag that sets it
            (``run_dir`` → ``--run-dir``), so a library error speaks Python and the same error on the command line
            speaks flags.
    """

    def __init__(self, message: str, *, params: tuple[str, ...] = ()) -> None:
        # one line whatever a library's message quoted into it holds (YAML's and torch's run over several)
        super().__init__(" ".join(message.split()) if "\n" in message or "\r" in message else message)
        self.params = params


class ConfigError(AutoCompressError):
    """A configuration file or value does not follow its schema."""


class DataError(AutoCompressError):
    """A dataset is missing, malformed or of the wrong size."""


class PolicyError(AutoCompressError):
    """A compression policy is invalid for the model it is applied to."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or an empty string if none is close."""
    if len(name) > 100:
        return ""  # no choice is this long (and difflib on a megabyte string takes minutes)
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{matches[0]}'?" if matches else ""


def unknown_name_error(kind: str, name: str, choices: Iterable[str]) -> AutoCompressError:
    """Build the standard error for an unknown name: the choices, the given name, and the nearest match."""
    valid = sorted(choices)
    given = name if len(name) <= 80 else name[:70] + "…"
    return AutoCompressError(f"{kind} must be one of {', '.join(valid)}, but got '{given}'.{did_you_mean(name, valid)}")
