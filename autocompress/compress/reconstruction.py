"""Least-squares reconstruction after channel removal (He et al. 2017, ThiNet, AMC): every layer whose input
channels were removed is refitted so that, from the inputs it still has, it reproduces the unpruned network's
output at that layer. Removed channels carried information the kept ones partly share; a least-squares refit moves
it onto them, which recovers most of what pruning lost without any training.

Two modes:

- **fast** (:class:`FastReconstructor`, the search loop): the unpruned network's layer inputs are sampled once, as
  one Gram matrix per layer over im2col patches (a column of ones included for layers with a bias). Since the
  unpruned output is ``Y = W x``, the cross term is ``W G[:, S]`` and a policy's refit is "pick the kept rows and
  columns, one regularised Cholesky solve per layer" — milliseconds per policy.
- **sequential** (:func:`reconstruct_sequential`, export): layer after layer in execution order, the inputs come
  from the already pruned and refitted network, so each refit also corrects the errors of the layers before it.

Grouped and depthwise convolutions lose their input channels together with their own filters, so they have nothing
to refit; only layers with ``groups == 1`` are refitted. Residual coupling needs nothing special: each layer's
target is its own unpruned output, restricted to the output channels it keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import cast

import torch
import torch.nn.functional as F
from scipy.linalg import blas
from threadpoolctl import ThreadpoolController
from torch import nn

from autocompress.compress.layers import Layer, LayerTable
from autocompress.compress.techniques import FactoredModule, LowRankModule, factor_at_rank
from autocompress.errors import AutoCompressError

log = logging.getLogger(__name__)
MODES = ("fast", "sequential", "none")


@dataclass(frozen=True)
class ReconstructionOptions:
    """How layers are refitted.

    Args:
        images: Training images whose layer inputs are sampled.
        positions: Output positions sampled per image and layer (a convolution's im2col columns).
        ridge: Tikhonov regularisation, relative to the mean diagonal of each Gram matrix.
        batch_size: Images per forward pass.
        seed: Seed of the sampled positions.
    """

    images: int = 1000
    positions: int = 16
    ridge: float = 1e-3
    batch_size: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        if self.images < 1 or self.positions < 1 or self.ridge < 0:
            raise AutoCompressError(
                "reconstruction needs images >= 1, positions >= 1 and ridge >= 0, but got "
                f"images={self.images}, positions={self.positions}, ridge={self.ridge}."
            )


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise AutoCompressError(
            f"reconstruct must be one of {', '.join(MODES)}, but got '{mode}'.", params=("reconstruct",)
        )
    return mode


def refittable(layer: Layer, module: nn.Module) -> bool:
    """Whether a layer can be refitted: a dense (``groups == 1``) Conv1d/Conv2d with zero padding, or a Linear, or
    what a technique made of one (:class:`~autocompress.compress.techniques.FactoredModule`)."""
    if isinstance(module, FactoredModule):
        return refittable(layer, module.geometry)
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, (nn.Conv1d, nn.Conv2d))
        and module.groups == 1
        and module.padding_mode == "zeros"
        and _symmetric_padding(module) is not None
    )


def _symmetric_padding(module: nn.Conv1d | nn.Conv2d) -> tuple[int, ...] | None:
    """A convolution's zero padding per spatial axis, ``padding="valid"``/``"same"`` resolved; None where "same"
    pads one side more than the other (an even dilated kernel), which the refit's patches do not model."""
    if module.padding == "valid":
        return (0,) * len(module.kernel_size)
    if module.padding == "same":
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        return None if any(t % 2 for t in total) else tuple(t // 2 for t in total)
    return tuple(cast(tuple[int, ...], module.padding))


def pruned_inputs(table: LayerTable, kept: Mapping[int, int], model: nn.Module | None = None) -> list[Layer]:
    """The layers whose input channels ``kept`` removes, and those a technique factored in ``model``, in execution
    order: the layers a refit changes."""
    factored = factored_layers(model) if model is not None else set()
    return [
        layer
        for layer in table.layers
        if layer.name in factored
        or (layer.in_group is not None and kept.get(layer.in_group, 10**9) < table.groups[layer.in_group].channels)
    ]


def factored_layers(model: nn.Module) -> set[str]:
    """Names of the layers of ``model`` a technique replaced by a :class:`FactoredModule`."""
    return {name for name, module in model.named_modules() if isinstance(module, FactoredModule)}


def kept_indices(
    ranking: Mapping[int, torch.Tensor], group: int | None, kept: Mapping[int, int], size: int
) -> torch.Tensor:
    """Indices of the channels a group keeps, in their original order (as the pruner leaves them)."""
    if group is None or kept.get(group, size) >= size:
        return torch.arange(size)
    return torch.sort(ranking[group][: kept[group]]).values


# --- sampling layer inputs and outputs ----------------------------------------------------------------------------


def _conv2d_geometry(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """(kernel, stride, padding, dilation) of a Conv1d/Conv2d, as 2-D pairs (a Conv1d is a 1×k Conv2d)."""
    conv = cast(nn.Conv2d, module)
    padding = _symmetric_padding(conv)
    if padding is None:
        raise AutoCompressError(f"layer {conv} pads one side more than the other; the refit cannot sample it.")
    if isinstance(module, nn.Conv1d):
        return (1, conv.kernel_size[0]), (1, conv.stride[0]), (0, padding[0]), (1, conv.dilation[0])
    return conv.kernel_size, conv.stride, padding, conv.dilation  # type: ignore[return-value]


def _grid(module: nn.Module, x: torch.Tensor) -> int:
    """Output positions of a layer for input ``x`` (1 for a Linear)."""
    if isinstance(module, nn.Linear):
        return 1
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _conv2d_geometry(module)
    h, w = (1, x.shape[-1]) if isinstance(module, nn.Conv1d) else (x.shape[-2], x.shape[-1])
    return ((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1) * ((w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)


def _patches_at(module: nn.Module, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The im2col columns of a layer's input at (N, k) output positions, as (N·k, in·kernel) in the order of the
    flattened weight: gathered directly when a sample of the positions is wanted, unfolded when all of them are."""
    if isinstance(module, nn.Linear):
        return x.reshape(x.shape[0], -1)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _conv2d_geometry(module)
    every = _all_positions(index, _grid(module, x))
    x = x.unsqueeze(2) if isinstance(module, nn.Conv1d) else x
    if every:
        # every position (small feature maps): one im2col, far faster than gathering each patch
        cols = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))  # (N, C·kh·kw, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    padded = F.pad(x, (pw, pw, ph, ph))
    wo = (x.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rows = (index // wo * sh)[:, :, None, None] + (torch.arange(kh) * dh)[None, None, :, None]
    cols = (index % wo * sw)[:, :, None, None] + (torch.arange(kw) * dw)[None, None, None, :]
    picked = padded[torch.arange(len(x))[:, None, None, None], :, rows, cols]  # (N, k, kh, kw, C)
    return picked.permute(0, 1, 4, 2, 3).reshape(index.numel(), -1)


def _all_positions(index: torch.Tensor, count: int) -> bool:
    """Whether ``index`` (from :func:`_positions`) takes each of a layer's ``count`` positions in order, per image."""
    return index.shape[1] == count and bool((index == torch.arange(count)).all())


def _outputs_at(output: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A layer's output at (N, k) positions as (N·k, channels)."""
    if output.dim() == 2:
        return output
    flat = output.reshape(output.shape[0], output.shape[1], -1)
    return (
        torch.gather(flat, 2, index.unsqueeze(1).expand(-1, flat.shape[1], -1))
        .transpose(1, 2)
        .reshape(-1, flat.shape[1])
    )


def _positions(count: int, wanted: int, gen: torch.Generator, n: int) -> torch.Tensor:
    """(n, k) distinct position indices out of ``count`` per image (all of them when there are few)."""
    if count <= wanted:
        return torch.arange(count).expand(n, count)
    return torch.rand(n, count, generator=gen).argsort(1)[:, :wanted]


def _with_ones(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)


def _batches(images: torch.Tensor, size: int) -> Iterator[tuple[int, torch.Tensor]]:
    for start in range(0, len(images), size):
        yield start // size, images[start : start + size]


def _generator(options: ReconstructionOptions, layer_index: int, batch: int) -> torch.Generator:
    return torch.Generator().manual_seed(options.seed * 1_000_003 + layer_index * 10_007 + batch)


# --- the solve ------------------------------------------------------------------------------------------------------


def _columns(layer: Layer, module: nn.Module, kept_in: torch.Tensor) -> torch.Tensor:
    """Columns of the unpruned layer's (flattened) weight that the kept input channels feed."""
    per = layer.in_per_channel if isinstance(module, nn.Linear) else int(torch.tensor(module.kernel_size).prod())
    return (kept_in.unsqueeze(1) * per + torch.arange(per)).reshape(-1)


@cache
def _blas_threads() -> ThreadpoolController:
    return ThreadpoolController()


def gram_of(x: torch.Tensor) -> torch.Tensor:
    """``xᵀx`` of a (rows, columns) matrix, the refit's costliest product. Through BLAS's symmetric rank-k update
    (scipy's ``?syrk``, one triangle: about half the multiply-adds of ``x.T @ x``; torch exposes no syrk), on as many
    threads as torch uses; ``x.T @ x`` for other dtypes and devices."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.shape[1] < 64:
        return x.T @ x
    syrk = blas.ssyrk if x.dtype == torch.float32 else blas.dsyrk
    with _blas_threads().limit(limits=torch.get_num_threads(), user_api="blas"):
        upper = torch.from_numpy(
            syrk(1.0, x.detach().resolve_neg().contiguous().numpy().T, trans=0)
        )  # x as (columns, rows), Fortran order
    return upper + upper.triu(1).T


def _solve(gram: torch.Tensor, cross: torch.Tensor, ridge: float) -> torch.Tensor:
    """Rows of W' minimising ||Y − W' X||² + λ||W'||²: W' = C (G + λI)⁻¹ with C = Y Xᵀ, by Cholesky."""
    scale = float(gram.diagonal().mean().clamp_min(1e-12))
    system = gram + ridge * scale * torch.eye(gram.shape[0], dtype=gram.dtype)
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) != 0:  # numerically indefinite: fall back to a least-squares solve
        return torch.linalg.lstsq(system, cross.T).solution.T
    return torch.cholesky_solve(cross.T, factor).T


def _assign(module: nn.Module, solution: torch.Tensor, has_bias: bool, gram: torch.Tensor | None = None) -> None:
    """Set a layer's weights (and bias) to the solution; a factored layer takes it as the dense layer's."""
    if isinstance(module, FactoredModule):
        if gram is None:
            raise AutoCompressError(f"a factored {type(module).__name__} is refitted with its Gram matrix only.")
        module.assign_dense(solution, gram)
        return
    weight = cast(torch.Tensor, module.weight)
    with torch.no_grad():
        if has_bias:
            cast(torch.Tensor, module.bias).copy_(solution[:, -1].to(weight.dtype))
            solution = solution[:, :-1]
        weight.copy_(solution.reshape(weight.shape).to(weight.dtype))


class FastReconstructor:
    """Gram matrices of every refittable layer's input on the unpruned model, collected once (fast mode).

    Args:
        model: The unpruned model (not modified).
        table: Its layer table.
        images: Normalised training images to sample (``options.images`` of them are used).
        options: See :class:`ReconstructionOptions`.
    """

    def __init__(
        self, model: nn.Module, table: LayerTable, images: torch.Tensor, options: ReconstructionOptions | None = None
    ) -> None:
        self.options = options or ReconstructionOptions()
        self.table = table
        modules = dict(model.named_modules())
        self.layers = [l for l in table.layers if l.in_group is not None and refittable(l, modules[l.name])]  # noqa: E741
        self.weights = {l.name: _flat_weight(modules[l.name]) for l in self.layers}  # noqa: E741
        self.modules = {l.name: modules[l.name] for l in self.layers}  # noqa: E741
        self.grams = _collect_grams(model, self.layers, modules, images[: self.options.images], self.options)

    def apply(
        self,
        pruned: nn.Module,
        kept: Mapping[int, int],
        ranking: Mapping[int, torch.Tensor],
        only: Collection[str] | None = None,
    ) -> int:
        """Refit, in place, every layer of ``pruned`` whose inputs ``kept`` removed (of those named in ``only``,
        when given); returns how many."""
        targets = {l.name for l in pruned_inputs(self.table, kept, pruned) if only is None or l.name in only}  # noqa: E741
        modules = dict(pruned.named_modules())
        done = 0
        for layer in self.layers:
            if layer.name not in targets or not _same_geometry(modules[layer.name], self.modules[layer.name]):
                continue
            original = self.modules[layer.name]
            has_bias = getattr(original, "bias", None) is not None
            kept_in = kept_indices(ranking, layer.in_group, kept, layer.in_channels)
            rows = kept_indices(ranking, layer.group, kept, layer.out_channels)
            cols = _columns(layer, original, kept_in)
            gram = self.grams[layer.name]
            ones = gram.shape[0] - 1
            picked = torch.cat([cols, torch.tensor([ones])]) if has_bias else cols
            weight = self.weights[layer.name][rows]  # W̃ of the kept output channels, bias last if any
            everything = torch.cat([torch.arange(ones), torch.tensor([ones])]) if has_bias else torch.arange(ones)
            cross = weight @ gram[everything][:, picked]
            system = gram[picked][:, picked]
            _assign(modules[layer.name], _solve(system, cross, self.options.ridge), has_bias, system)
            done += 1
        return done

    def apply_joint(
        self,
        union: nn.Module,
        union_kept: Mapping[int, int],
        kepts: Sequence[Mapping[int, int]],
        ranking: Mapping[int, torch.Tensor],
        own: Sequence[Collection[str]] | None = None,
    ) -> int:
        """Refit, in place, the ``union`` model (pruned to ``union_kept``) so that every nested configuration
        ``kepts[c]`` — a slice of it — reproduces the unpruned outputs as well as one set of shared weights allows:
        each output row minimises the (weighted, see :func:`_joint_rows`) sum over the configurations that keep it of
        their own least-squares errors Σ_c ω_c ||X[:, S_c] w[S_c] − y||², i.e. (Σ_c ω_c D_c G D_c) w = Σ_c ω_c D_c G w̃
        with D_c the mask of the inputs configuration c keeps, on the unpruned network's inputs (fast mode); a
        layer named in ``own[c]`` (one configuration c factored: its own, not the union's) leaves c out of that
        layer's sum. Returns how many layers were refitted."""
        targets = {l.name for kept in [union_kept, *kepts] for l in pruned_inputs(self.table, kept)}  # noqa: E741
        modules = dict(union.named_modules())
        done = 0
        for layer in self.layers:
            if layer.name not in targets:
                continue
            original = self.modules[layer.name]
            has_bias = getattr(original, "bias", None) is not None
            cols = _columns(layer, original, kept_indices(ranking, layer.in_group, union_kept, layer.in_channels))
            rows = kept_indices(ranking, layer.group, union_kept, layer.out_channels)
            gram = self.grams[layer.name]
            ones = gram.shape[0] - 1
            picked = torch.cat([cols, torch.tensor([ones])]) if has_bias else cols
            everything = torch.arange(ones + 1) if has_bias else torch.arange(ones)
            system = gram[picked][:, picked]
            cross = self.weights[layer.name][rows] @ gram[everything][:, picked]
            systems, crosses, members = [], [], []
            for c, kept in enumerate(kepts):
                if own is not None and layer.name in own[c]:
                    mask = torch.zeros(len(picked), dtype=torch.float64)
                    systems.append(torch.outer(mask, mask) * system)
                    crosses.append(cross * mask)
                    members.append(torch.zeros(len(rows), dtype=torch.bool))
                    continue
                mine = _columns(layer, original, kept_indices(ranking, layer.in_group, kept, layer.in_channels))
                mask = torch.isin(cols, mine).double()
                mask = torch.cat([mask, torch.ones(1, dtype=mask.dtype)]) if has_bias else mask
                systems.append(torch.outer(mask, mask) * system)
                crosses.append(cross * mask)
                members.append(torch.isin(rows, kept_indices(ranking, layer.group, kept, layer.out_channels)))
            target = self.weights[layer.name][rows]
            energy = ((target @ gram[everything][:, everything]) * target).sum(1)  # ||y||² per row
            member = torch.stack(members, 1)
            solution = _joint_rows(systems, crosses, [energy] * len(kepts), member, self.options.ridge)
            solution[~member.any(1)] = _flat_weight(modules[layer.name]).to(solution.dtype)[~member.any(1)]
            _assign(modules[layer.name], solution, has_bias)
            done += 1
        return done


def shared_factors(dense: nn.Module, solution: torch.Tensor, gram: torch.Tensor, rank: int) -> LowRankModule:
    """Low-rank factors of a union layer that several nested configurations factor, attached to ``dense`` as its
    children ``first`` and ``second`` (so the union's state holds them under the names the configurations' factors
    have): the reduced-rank regression of the joint ``solution`` under the configurations' pooled input ``gram``
    (:meth:`LowRankModule.assign_dense`), components ordered by how much output they carry, largest first — a
    configuration of a smaller rank takes the first of them, its kept channels of each."""
    factors = factor_at_rank(dense, rank)
    factors.assign_dense(solution, gram)  # eigh's order: the largest component last
    with torch.no_grad():
        first, second = cast(torch.Tensor, factors.first.weight), cast(torch.Tensor, factors.second.weight)
        first.copy_(first.flip(0))
        second.copy_(second.flip(1))
    dense.add_module("first", factors.first)
    dense.add_module("second", factors.second)
    return factors


def _dense(module: nn.Module) -> nn.Module:
    """The conv/linear whose im2col columns a refit samples: the module, or the part a technique says has the
    dense layer's geometry."""
    return module.geometry if isinstance(module, FactoredModule) else module


def _same_geometry(module: nn.Module, original: nn.Module) -> bool:
    """Whether the unpruned layer's sampled columns serve ``module``: it (or the part of it a technique says has the
    layer's geometry) has the original's kind and kernel. A technique that built something else is refitted by the
    sequential mode only, which samples the module's own inputs."""
    dense = _dense(module)
    kernel = getattr(dense, "kernel_size", None)
    return type(dense) is type(original) and kernel == getattr(original, "kernel_size", None)


def _flat_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in·kernel) in float64, with the bias as a last column where the layer has one."""
    tensor = cast(torch.Tensor, module.weight)
    weight = tensor.detach().reshape(tensor.shape[0], -1).double()
    bias = getattr(module, "bias", None)
    return torch.cat([weight, bias.detach().double().unsqueeze(1)], 1) if bias is not None else weight


@torch.no_grad()
def _collect_grams(
    model: nn.Module,
    layers: list[Layer],
    modules: Mapping[str, nn.Module],
    images: torch.Tensor,
    options: ReconstructionOptions,
) -> dict[str, torch.Tensor]:
    grams: dict[str, torch.Tensor] = {}
    batch_no = 0

    def hook_for(layer: Layer) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            index = _positions(_grid(module, x), options.positions, _generator(options, layer.index, batch_no), len(x))
            patches = _with_ones(_patches_at(module, x, index).double())
            grams[layer.name] = grams.get(layer.name, 0) + gram_of(patches)

        return hook

    handles = [modules[layer.name].register_forward_pre_hook(hook_for(layer)) for layer in layers]
    was_training = model.training
    model.eval()
    try:
        for batch_no, batch in _batches(images, options.batch_size):  # noqa: B007 - read by the hooks
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return grams


@dataclass(frozen=True)
class Targets:
    """The unpruned network's outputs of each refittable layer at sampled positions, and those positions: what a
    sequential refit aims at. They do not depend on the policy, so an evaluator collects them once."""

    images: torch.Tensor
    index: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]


@torch.no_grad()
def collect_targets(
    original: nn.Module, table: LayerTable, images: torch.Tensor, options: ReconstructionOptions | None = None
) -> Targets:
    """One pass of the unpruned network over ``options.images`` images, sampling every refittable layer."""
    options = options or ReconstructionOptions()
    images = images[: options.images]
    modules = dict(original.named_modules())
    layers = [l for l in table.layers if l.in_group is not None and refittable(l, modules[l.name])]  # noqa: E741
    index: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(layer: Layer) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            gen = _generator(options, layer.index, 0)
            index[layer.name] = _positions(_grid(module, inputs[0]), options.positions, gen, len(output))
            outputs[layer.name] = _outputs_at(output, index[layer.name])

        return hook

    handles = [modules[layer.name].register_forward_hook(hook_for(layer)) for layer in layers]
    was_training = original.training
    original.eval()
    try:
        original(images)
    finally:
        for handle in handles:
            handle.remove()
        original.train(was_training)
    return Targets(images, index, outputs)


@torch.no_grad()
def reconstruct_sequential(
    pruned: nn.Module,
    table: LayerTable,
    kept: Mapping[int, int],
    ranking: Mapping[int, torch.Tensor],
    targets: Targets,
    options: ReconstructionOptions | None = None,
    only: Collection[str] | None = None,
) -> int:
    """Refit, in place and in execution order, every layer of ``pruned`` whose inputs ``kept`` removed (of those
    named in ``only``, when given; the others stay as they are): on inputs from the pruned network as refitted so
    far, towards the unpruned outputs in ``targets``. One forward pass does it all: each layer is refitted in a hook
    just before it runs, on the inputs the refitted layers before it gave. Returns how many layers were refitted."""
    options = options or ReconstructionOptions()
    modules = dict(pruned.named_modules())
    todo = [
        layer
        for layer in pruned_inputs(table, kept, pruned)
        if layer.name in targets.outputs and (only is None or layer.name in only)
    ]

    def hook_for(layer: Layer) -> Callable[..., None]:
        rows = kept_indices(ranking, layer.group, kept, layer.out_channels)

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            dense = _dense(module)
            has_bias = module.has_bias if isinstance(module, FactoredModule) else dense.bias is not None
            x = _patches_at(dense, inputs[0], targets.index[layer.name])
            x = _with_ones(x) if has_bias else x
            y = targets.outputs[layer.name][:, rows]
            # float32 products (the bulk of the time), float64 solve
            system = gram_of(x).double()
            _assign(module, _solve(system, (y.T @ x).double(), options.ridge), has_bias, system)

        return hook

    handles = [modules[layer.name].register_forward_pre_hook(hook_for(layer)) for layer in todo]
    pruned.eval()
    try:
        pruned(targets.images)
    finally:
        for handle in handles:
            handle.remove()
    return len(todo)


class _Stop(Exception):
    """Ends a forward pass once the layer whose input is wanted has it."""


@torch.no_grad()
def _input_of(model: nn.Module, module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The input ``module`` receives when ``model`` runs on ``images`` (the pass stops there)."""
    seen: list[torch.Tensor] = []

    def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen.append(inputs[0])
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        model(images)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen[0]


def _joint_rows(
    systems: list[torch.Tensor],
    crosses: list[torch.Tensor],
    energies: list[torch.Tensor],
    members: torch.Tensor,
    ridge: float,
) -> torch.Tensor:
    """Rows of the shared weights that minimise, for every row, the sum over the configurations keeping it of their
    relative least-squares errors — each error divided by its targets' squared norm, so that no configuration's
    scale drowns the others: (Σ_c ω_c A_c) w = Σ_c ω_c b_c per group of rows kept by the same configurations, with
    ω_c = 1 / ‖y_c‖². ``systems[c]``/``crosses[c]`` are configuration c's Gram and cross terms in the union's
    coordinates (zero where it has no input or row), ``energies[c]`` its targets' squared norm per row.

    Not the inverse of the error each configuration's own best fit leaves (as before 2026-12-05): a configuration
    that keeps all of a layer's inputs fits exactly, took all the weight, and left the smaller ones their unpruned
    weights — ResNet-20 nested at keep 1.0 / 0.7 / 0.5: 0.878 / 0.115 / 0.107 on 1,000 val images, relative
    0.814 / 0.664 / 0.387; digits' 0.25-of-the-MACs rung after 5 union epochs 0.68 → 0.92."""
    solution = torch.zeros_like(crosses[0])
    for key in torch.unique(members, dim=0):
        which = (members == key).all(1)
        chosen = [c for c in range(len(systems)) if key[c]]
        if not chosen:  # kept by no configuration: nothing to fit
            continue
        weights = [1.0 / max(float(torch.as_tensor(energies[c])[which].sum()), 1e-12) for c in chosen]
        a = sum(w * systems[c] for w, c in zip(weights, chosen, strict=True))
        b = sum(w * crosses[c][which] for w, c in zip(weights, chosen, strict=True))
        solution[which] = _solve(cast(torch.Tensor, a), cast(torch.Tensor, b), ridge)
    return solution


@torch.no_grad()
def reconstruct_joint_sequential(
    union: nn.Module,
    union_kept: Mapping[int, int],
    models: list[nn.Module],
    kepts: Sequence[Mapping[int, int]],
    table: LayerTable,
    ranking: Mapping[int, torch.Tensor],
    targets: Targets,
    options: ReconstructionOptions | None = None,
) -> int:
    """Refit, in place and in execution order, the shared weights of nested configurations: ``models[c]`` (pruned
    to ``kepts[c]``) are slices of ``union`` (pruned to ``union_kept``). At each layer every configuration's inputs
    come from its own network as refitted so far (as :func:`reconstruct_sequential` does for one), the shared rows
    solve the joint problem of :func:`_joint_rows`, and every configuration takes its slice of them. Where
    configurations factor a layer at low rank, the union also gets that layer's factors (:func:`shared_factors`) and
    each takes its slice of them, so later layers are refitted on what the factors give; a layer another technique
    replaced (another :class:`FactoredModule`) is that configuration's own: refitted alone on its inputs, as
    :func:`reconstruct_sequential` would, and left out of the joint problem. Returns how many layers were refitted."""
    options = options or ReconstructionOptions()
    names = {l.name for kept in [union_kept, *kepts] for l in pruned_inputs(table, kept)}  # noqa: E741
    names |= {name for model in models for name in factored_layers(model)}
    todo = [l for l in table.layers if l.name in names and l.name in targets.outputs]  # noqa: E741
    union_modules = dict(union.named_modules())
    model_modules = [dict(m.named_modules()) for m in models]
    for m in [union, *models]:
        m.eval()
    for layer in todo:
        module = union_modules[layer.name]
        has_bias = getattr(module, "bias", None) is not None
        cols_u = _columns(layer, module, kept_indices(ranking, layer.in_group, union_kept, layer.in_channels))
        rows_u = kept_indices(ranking, layer.group, union_kept, layer.out_channels)
        width = len(cols_u) + int(has_bias)
        systems: list[torch.Tensor] = []
        crosses: list[torch.Tensor] = []
        energies: list[torch.Tensor] = []
        members: list[torch.Tensor] = []
        slots: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        low_rank: list[int] = []  # positions in `systems` of the configurations that factor this layer at low rank
        for model, modules, kept in zip(models, model_modules, kepts, strict=True):
            mine = modules[layer.name]
            rows = kept_indices(ranking, layer.group, kept, layer.out_channels)
            if isinstance(mine, FactoredModule) and not isinstance(mine, LowRankModule):
                # its own: refitted alone, on the inputs its network gives it
                x = _patches_at(_dense(mine), _input_of(model, mine, targets.images), targets.index[layer.name])
                x = _with_ones(x) if mine.has_bias else x
                gram = gram_of(x).double()
                y = targets.outputs[layer.name][:, rows]
                _assign(mine, _solve(gram, (y.T @ x).double(), options.ridge), mine.has_bias, gram)
                slots.append(None)
                continue
            geometry = _dense(mine)
            x = _patches_at(geometry, _input_of(model, mine, targets.images), targets.index[layer.name])
            x = _with_ones(x) if has_bias else x
            cols = _columns(layer, geometry, kept_indices(ranking, layer.in_group, kept, layer.in_channels))
            col_at = torch.searchsorted(cols_u, cols)
            col_at = torch.cat([col_at, torch.tensor([width - 1])]) if has_bias else col_at
            row_at = torch.searchsorted(rows_u, rows)
            y = targets.outputs[layer.name][:, rows]
            system = torch.zeros(width, width, dtype=torch.float64)
            system[col_at.unsqueeze(1), col_at] = gram_of(x).double()
            cross = torch.zeros(len(rows_u), width, dtype=torch.float64)
            cross[row_at.unsqueeze(1), col_at] = (y.T @ x).double()
            energy = torch.zeros(len(rows_u), dtype=torch.float64)
            energy[row_at] = (y.double() ** 2).sum(0)
            member = torch.zeros(len(rows_u), dtype=torch.bool)
            member[row_at] = True
            if isinstance(mine, LowRankModule):
                low_rank.append(len(systems))
            systems.append(system)
            crosses.append(cross)
            energies.append(energy)
            members.append(member)
            slots.append((row_at, col_at))
        if not systems:  # every configuration factored this layer its own way: the union's own weights stay
            continue
        solution = _joint_rows(systems, crosses, energies, torch.stack(members, 1), options.ridge)
        kept_by_none = ~torch.stack(members, 1).any(1)
        if kept_by_none.any():  # rows only the union has: keep the union's own weights there
            solution[kept_by_none] = _flat_weight(module).to(solution.dtype)[kept_by_none]
        _assign(module, solution, has_bias)
        factors = None
        if low_rank:
            ranks = [m[layer.name].rank for m in model_modules if isinstance(m[layer.name], LowRankModule)]
            pooled = torch.stack([systems[i] for i in low_rank]).sum(0)
            factors = shared_factors(module, solution, pooled, max(ranks))
        for modules, slot in zip(model_modules, slots, strict=True):
            mine = modules[layer.name]
            if slot is None:
                continue
            if isinstance(mine, LowRankModule) and factors is not None:  # its rank's first components, its channels
                row_at, col_at = slot
                cols_only = col_at[:-1] if has_bias else col_at
                first = cast(torch.Tensor, factors.first.weight).reshape(factors.rank, -1)
                second = cast(torch.Tensor, factors.second.weight).reshape(len(rows_u), -1)
                bias = cast(torch.Tensor, factors.second.bias)[row_at] if has_bias else None
                mine.set_factors(second[row_at][:, : mine.rank], first[: mine.rank][:, cols_only], bias)
            else:
                _assign(mine, solution[slot[0]][:, slot[1]], has_bias)
    return len(todo)
