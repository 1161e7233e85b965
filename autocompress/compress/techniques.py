"""Compression techniques beyond channel pruning and bit-widths, each declared once.

A technique is a per-layer knob with a value in (0, 1]: 1 leaves the layer as it is, smaller values make it cheaper
(its MACs and parameters never grow as the value falls; latency and energy may — a factorised layer is two
operations, each with its dispatch overhead — so the budget guard's look-ahead tries each technique off as well as
at its least). One
:class:`Technique` object says everything the tool needs to know about it:

- :meth:`~Technique.applies_to`: which layers of a layer table it can act on (a search space turns it there, a policy
  naming another layer is refused);
- :meth:`~Technique.shape`: what it does to the layer's costs (the cost model, the budgets and the reports read it);
- :meth:`~Technique.apply`: the module that replaces the (pruned) layer, initialised without data; the evaluator,
  export, ``load_exported`` and the ONNX files all go through it.

A module a technique builds may subclass :class:`FactoredModule` so that the least-squares reconstruction refits it:
the refit solves for the dense layer as usual and hands the solution to :meth:`FactoredModule.assign_dense`.

Register a technique with :func:`register_technique` (the package registers :class:`LowRank` as ``rank``); a search
space then turns it with ``techniques: {rank: {min: 0.2, max: 1.0}}`` and a policy's layer entry holds
``"rank": 0.5``. ``README.md`` ("Adding a technique") shows a technique declared outside the package.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import replace
from typing import ClassVar, cast

import torch
from torch import nn

from autocompress.compress.layers import Layer, LayerShape, LayerTable
from autocompress.errors import PolicyError, unknown_name_error

OFF = 1.0

Values = Mapping[str, Mapping[str, float]]
"""Technique values per layer: ``{layer name: {technique name: value < 1}}`` (absent = off)."""


class Technique(ABC):
    """A per-layer compression technique. Subclass it, set :attr:`name` and :attr:`description`, implement the three
    methods and :func:`register_technique` an instance."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def applies_to(self, layer: Layer) -> bool:
        """Whether the technique can act on ``layer`` (its unpruned shape). Called when a search space is resolved
        against a model and when a policy is checked."""

    @abstractmethod
    def shape(self, layer: Layer, shape: LayerShape, value: float) -> LayerShape:
        """The costs of ``layer`` at ``value`` < 1, given its ``shape`` after pruning (and after the techniques
        registered before this one). Set :attr:`LayerShape.parts` to the operations the layer becomes (op class,
        MACs) when they run at other efficiencies than ``layer.op_class``. Must not grow as ``value`` falls."""

    @abstractmethod
    def apply(self, module: nn.Module, layer: Layer, value: float) -> nn.Module:
        """The module that replaces ``module`` (``layer`` as pruned, weights set) at ``value`` < 1: same input, same
        output shape, weights initialised from ``module``'s without data. Called once per policy; the model's
        structure (and its state dict) is what this returns. Its parts that hold a ``weight`` are quantised at the
        layer's bits; a :class:`FactoredModule` is also refitted by the least-squares reconstruction."""


class FactoredModule(nn.Module):
    """A module a technique builds that the least-squares reconstruction can refit: it says which of its parts has
    the dense layer's input geometry (whose im2col columns the refit samples) and takes the dense solution."""

    @property
    @abstractmethod
    def geometry(self) -> nn.Module:
        """A Conv1d/Conv2d/Linear with the dense layer's kernel, stride, padding and input channels."""

    @property
    @abstractmethod
    def has_bias(self) -> bool:
        """Whether the dense layer it replaces has a bias (the refit then solves for one)."""

    @abstractmethod
    def assign_dense(self, solution: torch.Tensor, gram: torch.Tensor) -> None:
        """Set the weights from the dense least-squares solution (out × columns, the bias last when
        :attr:`has_bias`) and the Gram matrix of the sampled input columns it was solved on (same column order)."""


_REGISTRY: dict[str, Technique] = {}


def register_technique(technique: Technique) -> Technique:
    """Make ``technique`` known by its name to search spaces, policies, the cost model, the evaluator and export.
    Registering another object under a taken name replaces it (so a notebook can re-run its cell)."""
    name = getattr(technique, "name", None)
    if not isinstance(technique, Technique) or not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"a technique must be a Technique instance whose name is an identifier, but got {technique!r}.")
    if name in ("keep", "wbits", "abits"):
        raise ValueError(f"a technique's name must not be keep, wbits or abits (the built-in knobs), but got {name}.")
    _REGISTRY[name] = technique
    return technique


def technique_names() -> list[str]:
    """Names of the registered techniques, in registration order."""
    return list(_REGISTRY)


def get_technique(name: str) -> Technique:
    """The registered technique ``name`` ("did you mean" when unknown)."""
    if name not in _REGISTRY:
        message = str(unknown_name_error("technique", name, list(_REGISTRY)))
        raise PolicyError(f"{message} A technique of your own is registered (register_technique) before it is read.")
    return _REGISTRY[name]


def is_technique(name: str) -> bool:
    return name in _REGISTRY


def technique_shapes(table: LayerTable, kept: Mapping[int, int], values: Values | None = None) -> list[LayerShape]:
    """Per-layer shapes when each group keeps ``kept`` channels and the layers have the technique ``values``."""
    shapes = table.shapes(kept)
    if not values:
        return shapes
    out = []
    for layer, shape in zip(table.layers, shapes, strict=True):
        mine = values.get(layer.name) or {}
        for name in technique_names():  # the order apply_techniques builds them in
            if mine.get(name, OFF) < OFF:
                shape = get_technique(name).shape(layer, shape, mine[name])
        out.append(shape)
    return out


@torch.no_grad()
def apply_techniques(model: nn.Module, table: LayerTable, values: Values | None) -> int:
    """Replace, in place, each layer of ``model`` (pruned as ``table``'s policy says) that ``values`` names by what
    its techniques build, in registration order; returns how many layers changed."""
    changed = 0
    for layer in table.layers:
        todo = {n: v for n, v in (values or {}).get(layer.name, {}).items() if v < OFF}
        if not todo:
            continue
        module = model.get_submodule(layer.name)
        for name in technique_names():
            if name in todo:
                module = get_technique(name).apply(module, layer, todo[name])
        _replace(model, layer.name, module)
        changed += 1
    return changed


def part_bits(model: nn.Module, bits: Mapping[str, int], weights: bool) -> dict[str, int]:
    """Bits per layer name, with each layer a technique factored spread over its parts: for ``weights``, every
    part's weight takes the layer's bits; for activations, the layer's input and the inputs of its later parts."""
    modules = dict(model.named_modules())
    out: dict[str, int] = {}
    for name, value in bits.items():
        module = modules[name]
        if isinstance(getattr(module, "weight", None), torch.Tensor):
            out[name] = value
            continue
        # what a technique built: every part that holds a weight, in execution (registration) order
        parts = [f"{name}.{sub}" for sub, part in module.named_modules() if sub and hasattr(part, "weight")]
        out.update({part: value for part in (parts if weights else [name, *parts[1:]])})
    return out


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


# --- low-rank factorisation ---------------------------------------------------------------------------------------


class LowRankModule(FactoredModule):
    """A dense layer W (out × in·kernel) as two: ``first`` (the layer's kernel, stride and padding, ``rank``
    outputs, no bias) then ``second`` (a 1×1 convolution or a linear from ``rank`` to the outputs, with the bias)."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.second(self.first(x)))

    @property
    def geometry(self) -> nn.Module:
        return self.first

    @property
    def has_bias(self) -> bool:
        return self.second.bias is not None

    @property
    def rank(self) -> int:
        return int(cast(torch.Tensor, self.first.weight).shape[0])

    def set_factors(self, left: torch.Tensor, right: torch.Tensor, bias: torch.Tensor | None) -> None:
        """``second.weight`` ← left (out × rank), ``first.weight`` ← right (rank × in·kernel), ``second.bias``."""
        first, second = cast(torch.Tensor, self.first.weight), cast(torch.Tensor, self.second.weight)
        with torch.no_grad():
            first.copy_(right.reshape(first.shape).to(first.dtype))
            second.copy_(left.reshape(second.shape).to(second.dtype))
            if bias is not None and self.second.bias is not None:
                cast(torch.Tensor, self.second.bias).copy_(bias.to(second.dtype))

    def assign_dense(self, solution: torch.Tensor, gram: torch.Tensor) -> None:
        """Reduced-rank regression: of all rank-r maps, the one nearest the samples' targets projects the dense
        least-squares fit onto the top-r principal directions of its outputs (Izenman 1975; for CNNs, Zhang et al.
        2015, "Accelerating very deep convolutional networks"). The outputs' covariance is W Σ Wᵀ (out × out), so
        one small eigendecomposition does it, with the bias absorbing the means."""
        solution = solution.double()
        gram = gram.double()
        if self.has_bias:
            count = gram[-1, -1].clamp_min(1.0)
            weight, bias = solution[:, :-1], solution[:, -1]
            mean = gram[:-1, -1] / count
            covariance = gram[:-1, :-1] / count - torch.outer(mean, mean)
        else:
            weight, bias, mean = solution, None, None
            covariance = gram / gram.diagonal().sum().clamp_min(1e-12)
        outputs = weight @ covariance @ weight.T
        _, vectors = torch.linalg.eigh((outputs + outputs.T) / 2)
        basis = vectors[:, -self.rank :]  # eigh sorts ascending
        if bias is not None and mean is not None:
            bias = bias + (weight @ mean) - basis @ (basis.T @ (weight @ mean))
        self.set_factors(basis, basis.T @ weight, bias)


class LowRank(Technique):
    """Low-rank factorisation of a dense convolution or linear layer (AdaDeep's second technique; Jaderberg et al.
    2014, Zhang et al. 2015): W (out × in·k) ≈ U V, a k×k convolution to ``r`` channels then a 1×1 convolution (two
    linears for a linear layer). The value is r as a fraction of the break-even rank, the rank at which the pair
    costs what the layer costs (out·in·k / (out + in·k)), so 0.5 halves the layer's MACs and parameters and the cost
    is monotone in the value (a value whose rank reaches the break-even leaves the layer as it is). Initialised by a
    truncated SVD of the (pruned) weight; the least-squares reconstruction then refits it as a reduced-rank
    regression on the layer's real inputs. Combines with pruning: the rank is taken of the layer as pruned."""

    name = "rank"
    description = "low-rank factorisation: a k×k conv to r channels then a 1×1 (two linears), r from a truncated SVD"

    def applies_to(self, layer: Layer) -> bool:
        return layer.kind in ("conv", "linear") and layer.groups == 1 and _break_even(layer, _columns(layer)) >= 2

    @staticmethod
    def rank(out_channels: int, columns: int, value: float) -> int:
        """Rank kept of a layer with ``out_channels`` rows and ``columns`` input columns at ``value``."""
        return max(1, math.floor(value * _break_even_of(out_channels, columns) + 0.5))

    def shape(self, layer: Layer, shape: LayerShape, value: float) -> LayerShape:
        columns = _columns(layer, shape.in_channels)
        out = shape.out_channels
        rank = self.rank(out, columns, value)
        if rank >= _break_even_of(out, columns):
            return shape  # no cheaper than the layer itself: left as it is
        # scaled from the incoming shape, so a technique applied before this one keeps its effect
        first = shape.macs * rank * columns // (out * columns)
        second = shape.macs * out * rank // (out * columns)
        bias = max(0, shape.params - out * columns)
        weights = (shape.params - bias) * rank * (columns + out) // (out * columns)
        return replace(
            shape,
            macs=first + second,
            params=weights + bias,
            # the rank-wide tensor between the two is written and read once more
            out_elements=shape.out_elements + 2 * rank * layer.out_area,
            parts=((layer.op_class, first), ("linear" if layer.kind == "linear" else "conv_1x1", second)),
        )

    def apply(self, module: nn.Module, layer: Layer, value: float) -> nn.Module:
        shape = _dense_shape(module)
        if shape is None:
            raise PolicyError(
                f"rank applies to dense convolutions and linear layers, but layer '{layer.name}' is a "
                f"{type(module).__name__}; remove its rank from the policy."
            )
        out, columns = shape
        rank = self.rank(out, columns, value)
        if rank >= _break_even_of(out, columns):
            return module
        return factor_at_rank(module, rank)


def factor_at_rank(module: nn.Module, rank: int) -> LowRankModule:
    """A dense convolution or linear layer as a :class:`LowRankModule` of ``rank``, from the truncated SVD of its
    weight (its components in the order of their singular values: a smaller rank's factors are slices of these)."""
    shape = _dense_shape(module)
    if shape is None:
        raise PolicyError(f"low rank applies to dense convolutions and linear layers, not a {type(module).__name__}.")
    out, columns = shape
    first: nn.Module
    bias = module.bias is not None
    second: nn.Module
    if isinstance(module, nn.Linear):
        first, second = nn.Linear(columns, rank, bias=False), nn.Linear(rank, out, bias=bias)
    else:
        conv = type(module)
        first = conv(
            module.in_channels,
            rank,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            bias=False,
            padding_mode=module.padding_mode,
        )
        second = conv(rank, out, 1, bias=bias)
    factored = LowRankModule(first, second)
    weight = cast(torch.Tensor, module.weight).detach().reshape(out, -1).double()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = s[:rank].sqrt()
    b = cast(torch.Tensor, module.bias).detach() if bias else None
    factored.set_factors(u[:, :rank] * root, root[:, None] * vh[:rank], b)
    return factored.to(cast(torch.Tensor, module.weight).dtype)


def _dense_shape(module: nn.Module) -> tuple[int, int] | None:
    """(outputs, input columns) of a dense convolution's or linear layer's flattened weight; ``None`` for others."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups == 1:
        return module.out_channels, module.in_channels * math.prod(module.kernel_size)
    return None


def _columns(layer: Layer, in_channels: int | None = None) -> int:
    """Input columns of a dense layer's flattened weight (in·kernel, or in·positions for a linear after flatten)."""
    cin = layer.in_channels if in_channels is None else in_channels
    return cin * (layer.in_per_channel if layer.kind == "linear" else layer.kernel_area)


def _break_even_of(out_channels: int, columns: int) -> int:
    return (out_channels * columns) // (out_channels + columns)


def _break_even(layer: Layer, columns: int) -> int:
    return _break_even_of(layer.out_channels, columns)


register_technique(LowRank())
