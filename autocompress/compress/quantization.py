"""Simulated (fake) quantization per layer, and storage from the real bit counts.

Weights are quantized per output channel, symmetric, at 2–8 bits (16 = float16, 32 = unchanged). At 4 bits and
below the clipping range is searched per channel for the least squared error, which matters far more there than at
8 bits. Activations (a layer's *input*, what its MACs read) are quantized per tensor, affine, at 8 bits with a range
calibrated on a few batches (16 = float16, 32 = unchanged). Per-channel symmetric scales absorb a following
BatchNorm's per-channel factor, so quantizing the unfolded weights simulates the folded deployment exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.compress.layers import LayerShape, LayerTable

CLIP_CANDIDATES = torch.linspace(1.0, 0.5, 11)
SCALE_BYTES = 4
BIAS_BYTES = 4


def quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Fake-quantize a weight tensor per output channel (dim 0): the dequantized values."""
    if bits >= 32:
        return weight
    if bits == 16:
        return weight.half().float()
    flat = weight.reshape(weight.shape[0], -1)
    qmax = 2 ** (bits - 1) - 1
    absmax = flat.abs().amax(1, keepdim=True).clamp_min(1e-12)
    ratios = CLIP_CANDIDATES if bits <= 4 else CLIP_CANDIDATES[:1]
    best, best_err = flat, torch.full((flat.shape[0], 1), float("inf"))
    for ratio in ratios:
        scale = absmax * ratio / qmax
        candidate = (flat / scale).round().clamp(-qmax, qmax) * scale
        err = (candidate - flat).pow(2).sum(1, keepdim=True)
        better = err < best_err
        best = torch.where(better, candidate, best)
        best_err = torch.where(better, err, best_err)
    return best.reshape(weight.shape)


@torch.no_grad()
def quantize_weights(model: nn.Module, wbits: Mapping[str, int]) -> None:
    """Replace, in place, the weights of the named layers by their fake-quantized values."""
    modules = dict(model.named_modules())
    for name, bits in wbits.items():
        if bits < 32:
            layer = modules[name]
            assert isinstance(layer.weight, torch.Tensor)
            layer.weight.copy_(quantize_weight(layer.weight, bits))


class ActivationQuantizer:
    """Fake-quantize the inputs of chosen layers through forward pre-hooks, with ranges calibrated on data.

    Args:
        model: The (pruned) model; hooks are attached to it.
        abits: Bits of each layer's input (layers at 32 get no hook).
    """

    def __init__(self, model: nn.Module, abits: Mapping[str, int]) -> None:
        modules = dict(model.named_modules())
        self.bits = {name: b for name, b in abits.items() if b < 32}
        self.ranges: dict[str, tuple[float, float]] = {}
        self._observing = False
        self._handles = [modules[name].register_forward_pre_hook(self._hook(name)) for name in self.bits]

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
            x = inputs[0]
            if self._observing:
                lo, hi = float(x.min()), float(x.max())
                old = self.ranges.get(name, (lo, hi))
                self.ranges[name] = (min(lo, old[0]), max(hi, old[1]))
                return None
            return (fake_quantize_activation(x, self.bits[name], self.ranges.get(name)), *inputs[1:])

        return hook

    @torch.no_grad()
    def calibrate(self, model: nn.Module, batches: Iterable[torch.Tensor]) -> ActivationQuantizer:
        """Record each hooked input's min/max over ``batches`` (eval mode)."""
        model.eval()
        self._observing = True
        try:
            for x in batches:
                model(x)
        finally:
            self._observing = False
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def fake_quantize_activation(x: torch.Tensor, bits: int, value_range: tuple[float, float] | None) -> torch.Tensor:
    """Per-tensor affine fake quantization over ``value_range`` (float16 round trip at 16 bits)."""
    if bits == 16:
        return x.half().float()
    lo, hi = value_range if value_range is not None else (float(x.min()), float(x.max()))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    levels = 2**bits - 1
    scale = max(hi - lo, 1e-8) / levels
    zero = min(levels, max(0, round(-lo / scale)))
    # One fused kernel instead of six element-wise passes: the hook runs on every layer of every evaluation.
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, levels)


@dataclass(frozen=True)
class Storage:
    """Bytes a compressed model occupies: weights at their bit-widths, per-channel scales and biases."""

    weight_bytes: int
    overhead_bytes: int

    @property
    def total(self) -> int:
        return self.weight_bytes + self.overhead_bytes


def storage_bytes(table: LayerTable, shapes: list[LayerShape], wbits: Mapping[str, int]) -> Storage:
    """Storage of the conv/linear layers after pruning (``shapes``) at their weight bit-widths.

    Each layer stores its weights at ``wbits`` bits (packed), one float32 bias per output channel (its own bias or
    the folded BatchNorm shift) and, when quantized below 16 bits, one float32 scale per output channel.
    """
    weights = overhead = 0
    for layer, shape in zip(table.layers, shapes, strict=True):
        bits = wbits.get(layer.name, 32)
        n_weights = shape.params - (shape.out_channels if layer.has_bias else 0)
        weights += (n_weights * bits + 7) // 8
        overhead += shape.out_channels * (BIAS_BYTES + (SCALE_BYTES if bits < 16 else 0))
    return Storage(weights, overhead)
