"""A deployment: where the model runs (device, optional link and edge server), its budgets and the distribution of
contexts it meets. It is the one owner of "device + link + edge + context → cost model, hard limits, soft budgets",
used by the environment, export, ``evaluate`` and the benches.

How a context acts (AdaSpring/CAQ style): the battery level scales the energy budget (an emptier battery allows
less energy per inference) and raises the energy weight of the ``weighted`` reward; the free-memory fraction scales
the RAM a policy may use; the bandwidth scale multiplies the link's rates; a drawn latency budget replaces the
preset's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from autocompress import context_rules
from autocompress.compress.layers import LayerTable
from autocompress.config import from_mapping
from autocompress.env.context import Context
from autocompress.env.presets import ContextSpec, EnvPreset, load_env_preset
from autocompress.hardware.cost_model import CostModel
from autocompress.hardware.graph import GraphInfo
from autocompress.hardware.profiles import DeviceProfile, LinkProfile, load_device, load_link


@dataclass(frozen=True)
class Limits:
    """Hard limits of one episode (budgets after the context has adjusted them)."""

    hard: dict[str, float]
    ram_bytes: float
    flash_bytes: float


@dataclass(frozen=True)
class Deployment:
    """An environment preset with its device, link and edge profiles loaded.

    Args:
        preset: Budgets, reward and context distribution (and the profile names, for the record).
        device: Where the model, or the head of a split, runs.
        link: The link to the edge server (``None``: no offloading possible).
        edge: The edge server that runs the tail of a split.
    """

    preset: EnvPreset
    device: DeviceProfile
    link: LinkProfile | None = None
    edge: DeviceProfile | None = None

    @classmethod
    def from_preset(cls, preset: str | EnvPreset, budgets: dict[str, Any] | None = None) -> Deployment:
        """Load a preset (name, path or object), override its budgets, and load the profiles it names."""
        loaded = preset if isinstance(preset, EnvPreset) else load_env_preset(preset)
        loaded = loaded.with_budgets(budgets)
        link = load_link(loaded.link) if loaded.link else None
        return cls(loaded, load_device(loaded.device), link, load_device(loaded.edge))

    @classmethod
    def from_profiles(
        cls, device: str, link: str | None = None, edge: str | None = "edge-server", interval_ms: float = 1000.0
    ) -> Deployment:
        """A deployment with no budgets, for measuring one policy (``autocompress evaluate``)."""
        preset = EnvPreset(
            name="custom",
            description="",
            device=device,
            link=link,
            edge=edge or "edge-server",
            context=ContextSpec(interval_ms=interval_ms),
        )
        return cls(preset, load_device(device), load_link(link) if link else None, load_device(edge) if edge else None)

    # --- the record: what a run folder saves, so a later export predicts with what the search used ------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": dataclasses.asdict(self.preset),
            "device": dataclasses.asdict(self.device),
            "link": dataclasses.asdict(self.link) if self.link else None,
            "edge": dataclasses.asdict(self.edge) if self.edge else None,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Deployment:
        """Rebuild a deployment saved by :meth:`to_dict`; ``where`` names the file in errors."""
        link, edge = data.get("link"), data.get("edge")
        return cls(
            from_mapping(EnvPreset, data.get("preset"), f"{where}.preset"),
            from_mapping(DeviceProfile, data.get("device"), f"{where}.device"),
            from_mapping(LinkProfile, link, f"{where}.link") if link else None,
            from_mapping(DeviceProfile, edge, f"{where}.edge") if edge else None,
        )

    # --- a context's effects, in one place --------------------------------------------------------------------------

    def link_in(self, context: Context | None) -> LinkProfile | None:
        """The link at the context's bandwidth (nominal without a context)."""
        if self.link is None or context is None:
            return self.link
        return dataclasses.replace(
            self.link,
            uplink_mbps=self.link.uplink_mbps * context.bandwidth_scale,
            downlink_mbps=self.link.downlink_mbps * context.bandwidth_scale,
        )

    def cost_model(self, table: LayerTable, graph: GraphInfo, context: Context | None = None) -> CostModel:
        """The cost model of this deployment in ``context`` (nominal link without one)."""
        interval = self.preset.context.interval_ms
        return CostModel(table, graph, self.device, self.link_in(context), self.edge, interval)

    def budgets(self, context: Context | None, hard: bool) -> dict[str, float]:
        """The hard (or soft) budgets in ``context`` (:func:`autocompress.context_rules.budgets`)."""
        values = {name: b.value for name, b in self.preset.budgets.items() if b.hard == hard}
        if context is None:
            return values
        return context_rules.budgets(values, hard, context.battery, context.latency_budget_ms)

    def limits(self, context: Context) -> Limits:
        """Hard limits in ``context``: the hard budgets, RAM scaled by the free-memory fraction, and flash."""
        return Limits(
            self.budgets(context, hard=True), self.device.ram_bytes * context.free_memory, self.device.flash_bytes
        )

    @staticmethod
    def energy_weight_scale(context: Context) -> float:
        """How much the ``weighted`` reward's energy weight grows as the battery drains (1 when full, 2 when empty)."""
        return 2.0 - context.battery
