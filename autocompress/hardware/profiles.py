"""Device and link profiles: typed, validated, loaded strictly from the YAML files shipped in
``autocompress/hardware/devices`` and ``.../links`` (or any path). Units are in the key names; every number's
source is a comment in its file."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

from autocompress.compress.policy import ACTIVATION_BITS, WEIGHT_BITS
from autocompress.config import load_config, require
from autocompress.errors import ConfigError, unknown_name_error

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "int8")
OP_CLASSES = ("conv_kxk", "conv_1x1", "depthwise", "linear")
DEVICES_DIR = Path(__file__).parent / "devices"
LINKS_DIR = Path(__file__).parent / "links"


@dataclass(frozen=True)
class DeviceProfile:
    """What the cost model needs to know about a device.

    ``peak_gmacs`` is the whole device's peak multiply-accumulates per second (GMAC/s) per precision; a precision
    the device lacks falls back to the next wider one. ``efficiency[op class][precision]`` is the fraction of peak
    real kernels reach. ``sub8bit`` says what fewer than 8 bits buys: ``storage_only`` (computed at int8 speed,
    smaller weights and traffic) or ``packed`` (throughput grows as 8/bits, as on bit-serial accelerators).
    """

    name: str
    description: str
    kind: Literal["cpu", "gpu", "mcu", "server"]
    peak_gmacs: dict[str, float]
    efficiency: dict[str, dict[str, float]]
    memory_bandwidth_gbps: float
    layer_overhead_us: float
    inference_overhead_us: float
    ram_bytes: int
    flash_bytes: int
    weights_in_ram: bool
    active_power_w: float
    idle_power_w: float
    legal_wbits: list[int]
    legal_abits: list[int]
    channel_rounding: int
    sub8bit: Literal["storage_only", "packed"] = "storage_only"
    memory_energy_pj_per_byte: float = 0.0
    source_note: str = ""

    def __post_init__(self) -> None:
        for precision, value in self.peak_gmacs.items():
            require(precision in PRECISIONS, f"peak_gmacs keys must be {', '.join(PRECISIONS)}, but got '{precision}'.")
            require(value > 0, f"peak_gmacs.{precision} > 0 must hold, but got {value}.")
        require("fp32" in self.peak_gmacs, "peak_gmacs must give fp32, but it is missing.")
        for op in OP_CLASSES:
            require(
                op in self.efficiency,
                f"efficiency must give every op class ({', '.join(OP_CLASSES)}), but '{op}' is missing.",
            )
            for precision, value in self.efficiency[op].items():
                require(precision in PRECISIONS, f"efficiency.{op} keys must be precisions, but got '{precision}'.")
                require(0 < value <= 1, f"0 < efficiency.{op}.{precision} <= 1 must hold, but got {value}.")
            require("fp32" in self.efficiency[op], f"efficiency.{op} must give fp32, but it is missing.")
        for name in ("memory_bandwidth_gbps", "active_power_w"):
            require(getattr(self, name) > 0, f"{name} > 0 must hold, but got {getattr(self, name)}.")
        for name in ("layer_overhead_us", "inference_overhead_us", "idle_power_w", "memory_energy_pj_per_byte"):
            require(getattr(self, name) >= 0, f"{name} >= 0 must hold, but got {getattr(self, name)}.")
        require(self.ram_bytes > 0 and self.flash_bytes > 0, "ram_bytes and flash_bytes must be positive.")
        require(self.channel_rounding >= 1, f"channel_rounding >= 1 must hold, but got {self.channel_rounding}.")
        for name, allowed in (("legal_wbits", WEIGHT_BITS), ("legal_abits", ACTIVATION_BITS)):
            values = getattr(self, name)
            require(
                bool(values) and all(b in allowed for b in values),
                f"{name} must be a non-empty list of {', '.join(map(str, allowed))}, but got {values}; list the "
                "bit-widths the device runs (32 for float).",
            )
        for precision in ("fp16", "int8"):
            if precision in self.peak_gmacs and self.peak_gmacs[precision] < self.peak_gmacs["fp32"]:
                log.warning(
                    "device profile %s: peak_gmacs.%s (%g) is below fp32 (%g), so %s layers will be predicted slower "
                    "than float ones; check the profile if that is not what the device does.",
                    self.name,
                    precision,
                    self.peak_gmacs[precision],
                    self.peak_gmacs["fp32"],
                    precision,
                )

    def precision_for(self, wbits: int, abits: int) -> str:
        """The compute precision a layer runs at: int8 when both widths fit 8 bits, fp16 at 16, else fp32;
        falling back to a wider precision the device has."""
        wanted = "int8" if max(wbits, abits) <= 8 else "fp16" if max(wbits, abits) <= 16 else "fp32"
        order = PRECISIONS[PRECISIONS.index(wanted) :: -1]
        return next(p for p in order if p in self.peak_gmacs)

    def throughput_gmacs(self, op_class: str, precision: str, wbits: int) -> float:
        """Sustained GMAC/s of one op class at a precision (and weight bits, for packed sub-8-bit)."""
        efficiency = self.efficiency[op_class]
        eff = efficiency.get(precision, efficiency["fp32"])
        rate = self.peak_gmacs[precision] * eff
        if precision == "int8" and wbits < 8 and self.sub8bit == "packed":
            rate *= 8 / wbits
        return rate


@dataclass(frozen=True)
class LinkProfile:
    """A network link between device and edge server, with a radio power model.

    Transmit power follows Huang et al. (MobiSys 2012): P = alpha × throughput + beta while sending; after the
    last byte the radio stays in a high-power tail for ``tail_ms`` at ``tail_power_mw`` (LTE's is long).
    """

    name: str
    description: str
    uplink_mbps: float
    downlink_mbps: float
    rtt_ms: float
    tx_alpha_mw_per_mbps: float
    tx_beta_mw: float
    rx_alpha_mw_per_mbps: float
    rx_beta_mw: float
    tail_ms: float
    tail_power_mw: float
    source_note: str = ""

    def __post_init__(self) -> None:
        for name in ("uplink_mbps", "downlink_mbps"):
            require(getattr(self, name) > 0, f"{name} > 0 must hold, but got {getattr(self, name)}.")
        for name in (
            "rtt_ms",
            "tx_alpha_mw_per_mbps",
            "tx_beta_mw",
            "rx_alpha_mw_per_mbps",
            "rx_beta_mw",
            "tail_ms",
            "tail_power_mw",
        ):
            require(getattr(self, name) >= 0, f"{name} >= 0 must hold, but got {getattr(self, name)}.")


@dataclass(frozen=True)
class Profiles:
    """Names of the shipped profiles."""

    devices: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


def _resolve(kind: str, folder: Path, name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"a {kind} profile file must exist, but '{path}' does not.")
        return path
    names = shipped(folder)
    if name_or_path not in names:
        raise unknown_name_error(kind, name_or_path, names)
    return folder / f"{name_or_path}.yaml"


def shipped(folder: Path) -> list[str]:
    """Profile names in a folder of YAML files."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


@cache
def load_device(name_or_path: str) -> DeviceProfile:
    """A device profile by shipped name (``raspberry-pi-4``) or by path to a YAML file."""
    return load_config(DeviceProfile, _resolve("device", DEVICES_DIR, name_or_path))


@cache
def load_link(name_or_path: str) -> LinkProfile:
    """A link profile by shipped name (``wifi``) or by path to a YAML file."""
    return load_config(LinkProfile, _resolve("link", LINKS_DIR, name_or_path))
