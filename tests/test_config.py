"""Strict YAML loading into frozen dataclasses: unknown keys, missing keys, wrong types and syntax errors name the
file and the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from autocompress.config import from_mapping, load_config, require
from autocompress.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    rate: float
    mode: Literal["fast", "slow"] = "fast"


@dataclass(frozen=True)
class Outer:
    name: str
    count: int = 1
    flags: list[int] = field(default_factory=list)
    inner: Inner | None = None
    table: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.count >= 1, f"count >= 1 must hold, but got {self.count}.")


def load(tmp_path: Path, text: str) -> Outer:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(Outer, path)


def test_a_valid_file_loads_typed(tmp_path: Path) -> None:
    value = load(tmp_path, "name: a\ncount: 3\nflags: [1, 2]\ninner: {rate: 2, mode: slow}\ntable: {x: 1}\n")
    assert value == Outer("a", 3, [1, 2], Inner(2.0, "slow"), {"x": 1.0})
    assert isinstance(value.inner.rate, float)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: a\ncuont: 2\n",
            "unknown key 'cuont'; valid keys are name, count, flags, inner, table. Did you",
        ),
        ("count: 2\n", "c.yaml: the required key 'name' is missing"),
        ("name: a\ncount: two\n", "c.yaml: count must be an integer, but got 'two'"),
        ("name: a\ncount: true\n", "count must be an integer"),
        ("name: a\nflags: 3\n", "flags must be a list"),
        ("name: a\ninner: {rate: fast}\n", "c.yaml: inner.rate must be a number"),
        ("name: a\ninner: {rate: 1, mode: quick}\n", "inner.mode must be one of fast, slow, but got 'quick'"),
        ("name: a\ncount: 0\n", "c.yaml: count >= 1 must hold, but got 0"),
        ("name: [a\n", "c.yaml: must be valid YAML, but line"),
        ("- a\n- b\n", "must be a mapping of name, count, flags, inner, table"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must exist"):
        load_config(Outer, tmp_path / "none.yaml")


def test_from_mapping_never_evaluates_strings() -> None:
    assert from_mapping(Outer, {"name": "__import__('os').system('false')"}, "x").name.startswith("__import__")
