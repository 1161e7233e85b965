"""Strict loading of YAML files into frozen dataclasses.

Unknown keys are errors that list the valid ones; missing keys, wrong types and values outside their range name
the file and the key path (``envs/pi.yaml: budgets.latency_ms``). Never ``eval``; YAML is read with ``safe_load``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from autocompress.errors import ConfigError, did_you_mean
from autocompress.files import MAX_FILE_BYTES, read_text, short

T = TypeVar("T")
MAX_YAML_NODES = 200_000  # values after anchors and aliases are expanded ("billion laughs" stops here)


def read_yaml(path: Path, limit: int = MAX_FILE_BYTES) -> Any:
    """Parse a YAML file safely; syntax errors become one line naming the file and position. A file larger than
    ``limit``, one whose anchors expand to more than :data:`MAX_YAML_NODES` values or one that refers to itself
    is refused before it is built."""
    text = read_text(path, "YAML file", ConfigError, limit)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _count_nodes(root, path)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: must be valid YAML, but{where}: {problem}.") from None


def _count_nodes(root: yaml.Node | None, path: Path) -> None:
    """Walk the composed YAML graph as the loader would expand it: refuse cycles and alias explosions."""
    count = 0
    stack: list[tuple[yaml.Node | None, tuple[int, ...]]] = [(root, ())]
    while stack:
        node, above = stack.pop()
        if node is None:
            continue
        count += 1
        if count > MAX_YAML_NODES:
            raise ConfigError(
                f"{path}: must expand to at most {MAX_YAML_NODES} values, but its anchors and aliases expand to "
                "more; write the values out."
            )
        if id(node) in above:
            raise ConfigError(f"{path}: an anchor must not contain an alias of itself, but one does; write it out.")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, (*above, id(node))) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((child, (*above, id(node))) for pair in node.value for child in pair)


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types; ``where`` prefixes error messages."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of {_keys(cls)}, but got {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown key '{key}'; valid keys are {', '.join(fields)}.{did_you_mean(str(key), fields)}"
            )
    hints = get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = convert(hints[name], data[name], f"{where}.{name}" if ":" in where else f"{where}: {name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: the required key '{name}' is missing.")
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _keys(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def convert(hint: Any, value: Any, where: str) -> Any:
    """Check and convert one value against a type hint."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(get_args(hint)):
            return None
        errors = []
        for option in options:
            try:
                return convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)  # type: ignore[arg-type]
    if origin in (dict, Mapping, typing.Mapping):
        key_hint, value_hint = get_args(hint) or (Any, Any)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, but got {short(value)}.")
        return {convert(key_hint, k, where): convert(value_hint, v, f"{where}.{k}") for k, v in value.items()}
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, but got {short(value)}.")
        (item_hint, *_) = get_args(hint) or (Any,)
        items = [convert(item_hint, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    return _scalar(hint, value, where)


def _scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, but got {short(value)}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"{where} must be a number, but got {short(value)}; give the number alone, its unit is in the key."
            )
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, but got {short(value)}.")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, but got {short(value)}.")
        return value
    if typing.get_origin(hint) is typing.Literal:
        if value not in get_args(hint):
            choices = [str(c) for c in get_args(hint)]
            raise ConfigError(
                f"{where} must be one of {', '.join(choices)}, but got {short(value)}."
                + did_you_mean(str(value), choices)
            )
        return value
    return value


def load_config(cls: type[T], path: Path) -> T:
    """Read a YAML file into dataclass ``cls``; every error names the file."""
    return from_mapping(cls, read_yaml(path), str(path))


def require(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok`` (for ``__post_init__`` checks)."""
    if not ok:
        raise ConfigError(message)
