"""Reading the files users (and earlier runs) hand in: size-limited, UTF-8, every failure one line naming the file.

Standard library only: the on-device runtime reads its package's manifest with these too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autocompress.errors import ConfigError

MAX_FILE_BYTES = 8 * 2**20  # a preset, policy, trace or run-folder file a user writes: 8 MiB is far above any real one


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error lines (a value may be a 50 MB string)."""
    text = repr(value[: limit + 1] if isinstance(value, (str, bytes)) else value)
    return text if len(text) <= limit else text[: limit - 5] + "…" + text[-4:]


def why(exc: BaseException, limit: int = 70) -> str:
    """``Type: first words`` of an exception, for the parenthesis of an error line (libraries' messages run long)."""
    first = (str(exc).splitlines() or [""])[0].strip()
    first = first if len(first) <= limit else first[: limit - 1].rsplit(" ", 1)[0] + "…"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def read_text(path: Path, what: str, error: type[Exception] = ConfigError, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a user's file, or one line saying why not: missing, a folder, too large, binary."""
    if not path.exists():
        raise error(f"the {what} '{path}' must exist, but it does not; check the path.")
    if not path.is_file():
        raise error(f"the {what} '{path}' must be a file, but it is a folder or a device; check the path.")
    size = path.stat().st_size
    if size > limit:
        raise error(
            f"the {what} '{path}' must be at most {limit // 2**20} MiB, but it is {size / 2**20:.0f} MiB; "
            "is it the file you meant?"
        )
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"the {what} '{path}' must be UTF-8 text, but byte {exc.start} is not; is it binary?") from None


def read_json(path: Path, what: str, error: type[Exception] = ConfigError, limit: int = MAX_FILE_BYTES) -> Any:
    """Parse a JSON file a user (or an earlier run) wrote; every way it can be wrong is one line naming it."""
    text = read_text(path, what, error, limit)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(
            f"the {what} '{path}' must be valid JSON, but line {exc.lineno} column {exc.colno}: {exc.msg}."
        ) from None
    except RecursionError:
        raise error(f"the {what} '{path}' must be JSON of a sane depth, but it is nested too deeply.") from None
