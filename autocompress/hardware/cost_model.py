"""The hardware cost model: latency, energy, storage and peak memory of a compression policy on a device, with an
optional split to an edge server over a link. Pure arithmetic on the cached layer table (well under 1 ms per
policy for ResNet-20), so it can sit in the search's inner loop.

Per layer: time = max(MACs / (peak × efficiency[op class, precision]), bytes moved / bandwidth) + overhead.
Split: device head + (crossing bytes at activation bits) / uplink + RTT + edge tail.
Energy: active power × device busy time + idle power × waiting + radio energy (Huang et al. power model and tail)
+ memory-access energy where the profile gives one (the MCU).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from autocompress.compress.adaptation import AdaptationCost
from autocompress.compress.layers import Layer, LayerShape, LayerTable
from autocompress.compress.policy import SPLIT_INPUT, Policy
from autocompress.compress.quantization import storage_bytes
from autocompress.compress.techniques import Values, technique_shapes
from autocompress.errors import PolicyError
from autocompress.hardware.graph import GraphInfo, analyse
from autocompress.hardware.profiles import DeviceProfile, LinkProfile

LOGIT_BYTES = 4  # the logits come back from the edge as float32, one per class


@dataclass(frozen=True)
class CostReport:
    """Predicted costs of one inference (plus the one-off cost of the adaptation the policy triggers)."""

    latency_ms: float
    energy_mj: float
    storage_bytes: int
    peak_memory_bytes: int
    fits: bool
    fits_ram: bool
    fits_flash: bool
    device_ms: float
    link_ms: float
    edge_ms: float
    sent_bytes: int
    radio_energy_mj: float
    adapt_latency_ms: float
    adapt_energy_mj: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LayerBits:
    wbits: int
    abits: int


class CostModel:
    """Predict costs of policies for one model on one device (and optionally a link and an edge server).

    Args:
        table: The model's layer table.
        graph: Its graph facts (see :func:`autocompress.hardware.graph.analyse`).
        device: Where the model (or the head of a split) runs.
        link: The link to the edge server, needed for split policies.
        edge: The edge server profile that runs the tail of a split.
        interval_ms: Time between inferences; bounds the radio tail charged to each one.
    """

    def __init__(
        self,
        table: LayerTable,
        graph: GraphInfo,
        device: DeviceProfile,
        link: LinkProfile | None = None,
        edge: DeviceProfile | None = None,
        interval_ms: float = 1000.0,
    ) -> None:
        self.table, self.graph, self.device, self.link, self.edge = table, graph, device, link, edge
        self.interval_ms = interval_ms
        self.positions = [graph.layer_position.get(layer.name, i) for i, layer in enumerate(table.layers)]

    @classmethod
    def for_model(cls, model: nn.Module, table: LayerTable, device: DeviceProfile, **kwargs: Any) -> CostModel:
        return cls(table, analyse(model, table), device, **kwargs)

    def layer_ms(self, layer: Layer, shape: LayerShape, bits: LayerBits, profile: DeviceProfile) -> float:
        """Time of one layer on ``profile``: the slower of compute and memory traffic, plus dispatch overhead."""
        precision = profile.precision_for(bits.wbits, bits.abits)
        parts = shape.parts or ((layer.op_class, shape.macs),)
        compute_s = sum(macs / (profile.throughput_gmacs(op, precision, bits.wbits) * 1e9) for op, macs in parts)
        memory_s = self.layer_bytes(shape, bits) / (profile.memory_bandwidth_gbps * 1e9)
        return max(compute_s, memory_s) * 1e3 + len(parts) * profile.layer_overhead_us / 1e3

    @staticmethod
    def layer_bytes(shape: LayerShape, bits: LayerBits) -> float:
        """Bytes a layer moves: its weights once, its input and output activations."""
        activation = min(bits.abits, 32) / 8
        return shape.params * bits.wbits / 8 + (shape.in_elements + shape.out_elements) * activation

    def predict(
        self,
        kept: Mapping[int, int],
        bits: list[LayerBits],
        split: str | None = None,
        adapt: AdaptationCost | None = None,
        techniques: Values | None = None,
    ) -> CostReport:
        """Costs for channel counts per group, bits per layer (table order), a split point, an adaptation and the
        techniques' values per layer."""
        shapes = technique_shapes(self.table, kept, techniques)
        cut = self._cut_position(split)
        device_ms = self.device.inference_overhead_us / 1e3
        edge_ms = 0.0
        device_bytes = 0.0
        for layer, shape, layer_bits, position in zip(self.table.layers, shapes, bits, self.positions, strict=True):
            if position <= cut:
                device_ms += self.layer_ms(layer, shape, layer_bits, self.device)
                device_bytes += self.layer_bytes(shape, layer_bits)
            else:
                edge_ms += self.layer_ms(layer, shape, layer_bits, self._edge())
        sent = self._sent_bytes(split, kept, bits)
        link_ms, radio_mj = self._link_costs(sent) if split is not None else (0.0, 0.0)
        if split is not None:
            edge_ms += self._edge().inference_overhead_us / 1e3
        energy = self.device.active_power_w * device_ms + self.device.idle_power_w * (link_ms + edge_ms)
        energy += radio_mj + device_bytes * self.device.memory_energy_pj_per_byte * 1e-9
        store = storage_bytes(
            self.table, shapes, {layer.name: b.wbits for layer, b in zip(self.table.layers, bits, strict=True)}
        )
        peak = self._peak_memory(kept, bits, store.total, cut)
        fits_ram, fits_flash = peak <= self.device.ram_bytes, store.total <= self.device.flash_bytes
        adapt_ms, adapt_mj = self._adapt_costs(adapt, sum(s.macs for s in shapes))
        return CostReport(
            latency_ms=device_ms + link_ms + edge_ms,
            energy_mj=energy,
            storage_bytes=store.total,
            peak_memory_bytes=peak,
            fits=fits_ram and fits_flash,
            fits_ram=fits_ram,
            fits_flash=fits_flash,
            device_ms=device_ms,
            link_ms=link_ms,
            edge_ms=edge_ms,
            sent_bytes=sent,
            radio_energy_mj=radio_mj,
            adapt_latency_ms=adapt_ms,
            adapt_energy_mj=adapt_mj,
        )

    def predict_policy(self, policy: Policy, adapt: AdaptationCost | None = None) -> CostReport:
        """Costs of a policy document."""
        kept = policy.kept_channels(self.table)
        bits = [LayerBits(policy.setting(n).wbits, policy.setting(n).abits) for n in self.table.names]
        return self.predict(kept, bits, policy.split, adapt, policy.technique_values(self.table))

    def _edge(self) -> DeviceProfile:
        if self.edge is None:
            raise PolicyError(
                "a split policy needs an edge server profile, but the cost model has none; give it an edge "
                "(e.g. edge-server).",
                params=("edge",),
            )
        return self.edge

    def _cut_position(self, split: str | None) -> float:
        if split is None:
            return float("inf")
        if split == SPLIT_INPUT:
            return -1.0
        if split not in self.graph.cut_position:
            raise PolicyError(f"split must name a cut point of the model, but got '{split}'.")
        return float(self.graph.cut_position[split])

    def _sent_bytes(self, split: str | None, kept: Mapping[int, int], bits: list[LayerBits]) -> int:
        if split is None:
            return 0
        if split == SPLIT_INPUT:
            return self.table.layers[0].in_elements  # the raw uint8 image
        cut = self.graph.cut_position[split]
        after = [b for b, p in zip(bits, self.positions, strict=True) if p > cut]
        abits = after[0].abits if after else 32
        return (self.graph.cut_tensor[split].elements(kept) * abits + 7) // 8

    def _link_costs(self, sent: int) -> tuple[float, float]:
        if self.link is None:
            raise PolicyError(
                "a split policy needs a link profile, but the cost model has none; give it a link (wifi, lte, ble or "
                "ethernet).",
                params=("link",),
            )
        link = self.link
        up_ms = sent * 8 / (link.uplink_mbps * 1e3)
        result_bytes = LOGIT_BYTES * self.table.layers[-1].out_channels
        down_ms = result_bytes * 8 / (link.downlink_mbps * 1e3)
        tx_mw = link.tx_alpha_mw_per_mbps * link.uplink_mbps + link.tx_beta_mw
        rx_mw = link.rx_alpha_mw_per_mbps * link.downlink_mbps + link.rx_beta_mw
        tail_mj = link.tail_power_mw * min(link.tail_ms, self.interval_ms) / 1e3
        radio_mj = (tx_mw * up_ms + rx_mw * down_ms) / 1e3 + tail_mj
        return up_ms + down_ms + link.rtt_ms, radio_mj

    def _peak_memory(self, kept: Mapping[int, int], bits: list[LayerBits], storage: int, cut: float) -> int:
        if cut < 0:
            return self.table.layers[0].in_elements
        max_abits = max((b.abits for b, p in zip(bits, self.positions, strict=True) if p <= cut), default=8)
        activation_bytes = self.graph.peak_activation_elements(kept) * min(max_abits, 32) // 8
        return activation_bytes + (storage if self.device.weights_in_ram else 0)

    def _adapt_costs(self, adapt: AdaptationCost | None, macs: int) -> tuple[float, float]:
        if adapt is None or not (adapt.forward_images or adapt.backward_images):
            return 0.0, 0.0
        rate = self.device.throughput_gmacs("conv_kxk", "fp32", 32) * 1e9
        ms = adapt.macs(macs) / rate * 1e3
        return ms, ms * self.device.active_power_w
