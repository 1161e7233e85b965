"""The compression policy: a versioned JSON document (and a frozen dataclass) naming, per layer, the fraction of
output channels kept, the weight / activation bit-widths and the value of each registered technique that changes it
(:mod:`autocompress.compress.techniques`, e.g. ``rank``), plus the split point and the adaptation action.

```json
{"version": 1, "model": "resnet20",
 "default": {"keep": 1.0, "wbits": 32, "abits": 32},
 "layers": {"layer1.0.conv1": {"keep": 0.5, "wbits": 4, "abits": 8, "rank": 0.5}},
 "split": null, "adapt": "none", "round_to": 1}
```
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from autocompress.compress.adaptation import ADAPTATIONS, adaptation_choices, is_adaptation
from autocompress.compress.layers import LayerShape, LayerTable
from autocompress.compress.techniques import OFF, get_technique, technique_names, technique_shapes
from autocompress.errors import PolicyError, did_you_mean
from autocompress.files import read_json, short

POLICY_VERSION = 1
WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)
ACTIVATION_BITS = (8, 16, 32)
SPLIT_INPUT = "input"
SETTING_KEYS = ("keep", "wbits", "abits")
POLICY_KEYS = ("version", "model", "default", "layers", "split", "adapt", "round_to")


@dataclass(frozen=True)
class LayerSetting:
    """What one layer gets: the fraction of output channels kept, its weight / activation bit-widths and the values
    of registered techniques (:mod:`autocompress.compress.techniques`; a mapping or (name, value) pairs, kept
    sorted, values of 1 — the technique off — dropped)."""

    keep: float = 1.0
    wbits: int = 32
    abits: int = 32
    techniques: tuple[tuple[str, float], ...] | Mapping[str, float] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "techniques", _technique_values(self.techniques))
        keep_ok = isinstance(self.keep, (int, float)) and not isinstance(self.keep, bool)
        if not (keep_ok and 0 < self.keep <= 1 and math.isfinite(self.keep)):
            raise PolicyError(
                f"0 < keep <= 1 must hold, but got keep={short(self.keep)}; keep is the fraction of channels kept."
            )
        for name, bits, legal in (("wbits", self.wbits, WEIGHT_BITS), ("abits", self.abits, ACTIVATION_BITS)):
            if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or bits not in legal:
                raise PolicyError(
                    f"{name} must be an integer among {list(legal)}, but got {name}={short(bits)}; write it "
                    "without a decimal point."
                )
            object.__setattr__(self, name, int(bits))  # a numpy integer from an agent's decoding stays plain

    def technique(self, name: str) -> float:
        """The value of technique ``name`` (1: off)."""
        return dict(cast(tuple[tuple[str, float], ...], self.techniques)).get(name, OFF)

    @property
    def technique_values(self) -> dict[str, float]:
        return dict(cast(tuple[tuple[str, float], ...], self.techniques))

    @classmethod
    def from_dict(cls, data: Any, where: str) -> LayerSetting:
        keys = [*SETTING_KEYS, *technique_names()]
        if not isinstance(data, Mapping):
            raise PolicyError(f"{where} must be an object with keys {', '.join(keys)}, but got {short(data)}.")
        unknown = set(data) - set(keys)
        if unknown:
            key = sorted(map(str, unknown))[0]
            listed = ", ".join(keys)
            raise PolicyError(f"{where} may only hold {listed}, but has {short(key)}." + did_you_mean(key, keys))
        plain = {k: v for k, v in data.items() if k in SETTING_KEYS}
        try:
            return cls(**plain, techniques={k: v for k, v in data.items() if k not in SETTING_KEYS})
        except PolicyError as exc:
            raise PolicyError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, float | int]:
        techniques = {name: round(float(value), 6) for name, value in self.technique_values.items()}
        return {"keep": round(float(self.keep), 6), "wbits": self.wbits, "abits": self.abits, **techniques}


def _technique_values(values: Any) -> tuple[tuple[str, float], ...]:
    pairs = list(values.items()) if isinstance(values, Mapping) else list(values)
    out = []
    for name, value in pairs:
        get_technique(str(name))
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not (number and 0 < value <= 1 and math.isfinite(value)):
            raise PolicyError(
                f"0 < {name} <= 1 must hold, but got {name}={short(value)}; 1 leaves the layer as it is, smaller "
                "values make it cheaper."
            )
        if value < OFF:
            out.append((str(name), float(value)))
    return tuple(sorted(out))


@dataclass(frozen=True)
class Policy:
    """A compression policy for one model.

    Args:
        model: The model spec the policy was made for.
        default: Setting of every prunable layer not named in ``layers``.
        layers: Per-layer settings by module name.
        split: ``None`` (all on device), ``"input"`` (full offload) or the name of a cut point.
        adapt: ``none``, ``adabn`` or ``tent``: test-time adaptation run before inference.
        round_to: Channels kept are rounded to a multiple of this (a device property).
    """

    model: str
    default: LayerSetting = field(default_factory=LayerSetting)
    layers: Mapping[str, LayerSetting] = field(default_factory=dict)
    split: str | None = None
    adapt: str = "none"
    round_to: int = 1
    version: int = POLICY_VERSION

    def __post_init__(self) -> None:
        if self.split is not None and not isinstance(self.split, str):
            raise PolicyError(
                f"split must be null, 'input' or the name of a cut point, but got split={short(self.split)}; list "
                "the cut points with autocompress evaluate --list-splits."
            )
        if self.version != POLICY_VERSION:
            raise PolicyError(f"policy version must be {POLICY_VERSION}, but got {short(self.version)}.")
        if not is_adaptation(self.adapt):
            raise PolicyError(
                f"adapt must be one of {adaptation_choices()}, but got {short(self.adapt)}."
                + did_you_mean(str(self.adapt)[:100], ADAPTATIONS)
            )
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise PolicyError(f"round_to >= 1 must hold, but got round_to={short(self.round_to)}.")

    def setting(self, name: str) -> LayerSetting:
        """The setting of layer ``name`` (its own entry or the default)."""
        return self.layers.get(name, self.default)

    def group_keep(self, table: LayerTable) -> dict[int, float]:
        """Keep ratio of each channel group: the one of its leader (the group's first layer)."""
        return {g.id: self.setting(g.leader).keep for g in table.groups}

    def kept_channels(self, table: LayerTable) -> dict[int, int]:
        """Output channels each group of ``table`` keeps under this policy (rounded to ``round_to``)."""
        return table.kept_channels(self.group_keep(table), self.round_to)

    def technique_values(self, table: LayerTable) -> dict[str, dict[str, float]]:
        """Values of the techniques each layer of ``table`` gets (a default's only where the technique applies)."""
        values = {}
        for layer in table.layers:
            mine = {
                name: value
                for name, value in self.setting(layer.name).technique_values.items()
                if get_technique(name).applies_to(layer)
            }
            if mine:
                values[layer.name] = mine
        return values

    def shapes(self, table: LayerTable) -> list[LayerShape]:
        """Per-layer channels, MACs and parameters of ``table``'s layers under this policy."""
        return technique_shapes(table, self.kept_channels(table), self.technique_values(table))

    def macs(self, table: LayerTable) -> int:
        return sum(shape.macs for shape in self.shapes(table))

    def validate(self, table: LayerTable, cut_points: Sequence[str] | None = None) -> Policy:
        """Check the policy against a model's layer table (and its split points); return it unchanged."""
        self.check_names(table)
        for name, setting in self.layers.items():
            self._check_keep(table, name, setting)
            for technique in setting.technique_values:
                if not get_technique(technique).applies_to(table.by_name[name]):
                    raise PolicyError(
                        f"{technique} must name layers it applies to ({get_technique(technique).description}), but "
                        f"layer '{name}' is a {table.by_name[name].kind} layer it cannot change; remove its "
                        f"{technique}."
                    )
        if (
            self.split is not None
            and cut_points is not None
            and self.split != SPLIT_INPUT
            and self.split not in cut_points
        ):
            raise PolicyError(
                f"split must be null, 'input' or a valid cut point of the model, but got {short(self.split)}."
                f"{did_you_mean(self.split, cut_points)} List them with autocompress evaluate --list-splits."
            )
        return self

    def check_names(self, table: LayerTable) -> Policy:
        """Check that every layer the policy names is a layer of ``table`` (a name it lacks would be ignored and
        the layer the user meant left at the default); return the policy unchanged."""
        for name in self.layers:
            if name not in table.by_name:
                raise PolicyError(
                    f"policy layers must name prunable layers of the model, but {short(name)} is not one."
                    + did_you_mean(name, table.names)
                )
        return self

    def _check_keep(self, table: LayerTable, name: str, setting: LayerSetting) -> None:
        group = table.group_of(name)
        if setting.keep == 1.0:
            return
        if group is None or group.protected:
            raise PolicyError(
                f"layer '{name}' must keep all its output channels (it is protected or its outputs are the model's), "
                f"but the policy sets keep={setting.keep}; remove its keep or set it to 1.0."
            )
        leader_keep = self.setting(group.leader).keep
        if name != group.leader and setting.keep != leader_keep:
            raise PolicyError(
                f"layer '{name}' shares its output channels with '{group.leader}' (residual or depthwise coupling), "
                f"so its keep must equal {leader_keep}, but got {setting.keep}; set keep on '{group.leader}' only."
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model": self.model,
            "default": self.default.to_dict(),
            "layers": {name: s.to_dict() for name, s in self.layers.items()},
            "split": self.split,
            "adapt": self.adapt,
            "round_to": self.round_to,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def key(self) -> str:
        """A canonical string: equal for equal policies (used to cache evaluations)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any, source: str = "policy") -> Policy:
        """Build a policy from its JSON object, naming the first problem found."""
        if not isinstance(data, Mapping):
            raise PolicyError(f"{source} must be a JSON object, but got {type(data).__name__}.")
        unknown = set(data) - set(POLICY_KEYS)
        if unknown:
            key = sorted(unknown)[0]
            raise PolicyError(
                f"{source} may only hold the keys {', '.join(POLICY_KEYS)}, but has {short(key)}."
                + did_you_mean(key, POLICY_KEYS)
            )
        if "model" not in data:
            raise PolicyError(f"{source} must name its 'model', but has no 'model' key.")
        if not isinstance(data["model"], str) or not data["model"]:
            raise PolicyError(f"{source}: 'model' must be the model's name, but got {short(data['model'])}.")
        layers = data.get("layers") or {}
        if not isinstance(layers, Mapping):
            raise PolicyError(
                f"{source}: 'layers' must be an object of layer name to setting, but got {short(layers)}."
            )
        try:
            return cls(
                model=str(data["model"]),
                default=LayerSetting.from_dict(data.get("default", {}), f"{source}: 'default'"),
                layers={n: LayerSetting.from_dict(s, f"{source}: layer '{n}'") for n, s in layers.items()},
                split=data.get("split"),
                adapt=data.get("adapt", "none"),
                round_to=data.get("round_to", 1),
                version=data.get("version", POLICY_VERSION),
            )
        except PolicyError as exc:
            message = str(exc)
            raise PolicyError(message if message.startswith(source) else f"{source}: {message}") from None

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a policy JSON file."""
        path = Path(path)
        return cls.from_dict(read_json(path, "policy file", PolicyError), f"policy '{path}'")

    def save(self, path: str | Path) -> None:
        """Write the policy as JSON."""
        Path(path).write_text(self.to_json() + "\n")

    def with_changes(self, **changes: Any) -> Policy:
        """A copy with some fields replaced."""
        return Policy(**{**self.__dict__, **changes})
