"""Import a user's object named ``package.module:attr`` or ``path/to/file.py:attr`` (datasets, shifts, models).

Entry points (importlib.metadata) name installed code; these specs also reach code in the working directory or in
a loose file, which is how users try their own dataset or shift before packaging it, so the working directory is
put on ``sys.path`` for the import (as ``python -m`` does).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from functools import cache
from pathlib import Path
from typing import Any

from autocompress.errors import AutoCompressError
from autocompress.files import why


def is_plugin_spec(spec: str) -> bool:
    """Whether ``spec`` looks like ``package.module:attr`` or ``file.py:attr`` rather than a built-in name."""
    module, sep, attr = spec.rpartition(":")
    return bool(sep and module and attr.isidentifier() and not Path(spec).exists())


BUILT_IN_SOURCES = ("torchvision",)  # ``torchvision:<name>`` names a built-in model family, not user code


def code_references(data: Any) -> list[str]:
    """Every string in ``data`` (a parsed JSON or YAML document, any depth) that names code to import."""
    if isinstance(data, str):
        head, _, tail = data.rpartition(":")
        spec = head if tail.isdigit() and ":" in head else data  # a shift plugin: package.module:function:severity
        module = spec.rpartition(":")[0]
        return [data] if is_plugin_spec(spec) and module not in BUILT_IN_SOURCES else []
    if isinstance(data, dict):
        return [ref for value in data.values() for ref in code_references(value)]
    if isinstance(data, list | tuple):
        return [ref for value in data for ref in code_references(value)]
    return []


def require_trust(data: Any, where: str, trust_code: bool) -> None:
    """Refuse to go on with a file that names code (``file.py:…``, ``pkg.mod:…``) unless the caller trusts it:
    opening a run folder or a package must not run whatever a .py file it names holds."""
    refs = code_references(data)
    if refs and not trust_code:
        named = ", ".join(f"'{ref}'" for ref in dict.fromkeys(refs))
        raise AutoCompressError(
            f"{where} names code to import ({named}), which runs only when the caller says so: allow it with "
            "trust_code if you trust where the file came from.",
            params=("trust_code",),
        )


@cache  # a file.py plugin is executed once per process, not once per call (shifts apply it to every batch)
def import_object(spec: str, what: str, example: str) -> Any:
    """Return the object ``spec`` names.

    Args:
        spec: ``package.module:attr`` or ``path/to/file.py:attr``.
        what: What the object is for, in the error message ("a dataset factory").
        example: An example spec for the error message.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise AutoCompressError(f"{what} must be given as package.module:name (e.g. {example}), but got '{spec}'.")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            loader_spec = importlib.util.spec_from_file_location(f"autocompress_plugin_{path.stem}", path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            cwd = str(Path.cwd())
            if cwd not in sys.path:
                sys.path.append(cwd)
            module = importlib.import_module(module_name)
        return getattr(module, attr)
    except Exception as exc:
        raise AutoCompressError(
            f"{what} must be importable as package.module:name or file.py:name (e.g. {example}), but '{spec}' is "
            f"not ({why(exc, 50)}); check the file or PYTHONPATH."
        ) from None
