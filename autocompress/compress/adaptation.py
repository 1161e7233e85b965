"""Test-time adaptation on unlabeled target data — AdaBN (Li et al. 2016) and TENT (Wang et al. ICLR 2021) — the
BatchNorm repair used after pruning, and a drift score computed from BatchNorm statistics.

Each adaptation returns its compute (images through forward and backward passes) so the cost model can charge
its time and energy on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autocompress.errors import AutoCompressError, did_you_mean
from autocompress.plugins import import_object, is_plugin_spec

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
TENT_LR = 1e-3
TENT_STEPS = 1


@dataclass(frozen=True)
class AdaptationCost:
    """Work an adaptation does on the device: images through forward passes and through backward passes."""

    forward_images: int = 0
    backward_images: int = 0

    def macs(self, model_macs: int) -> int:
        """MACs spent, counting a backward pass as twice a forward pass (gradients for inputs and weights)."""
        return model_macs * (self.forward_images + 2 * self.backward_images)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, BN_TYPES) for m in model.modules())


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> AdaptationCost:
    """Re-estimate every BatchNorm's running mean and variance on ``batches`` (no labels, no gradient).

    After pruning this repairs the statistics that removed channels upset; on shifted data it is AdaBN.
    """
    bns = [m for m in model.modules() if isinstance(m, BN_TYPES)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
    model.train()
    images = 0
    try:
        for x in batches:
            model(x)
            images += len(x)
    finally:
        for bn, momentum in zip(bns, saved, strict=True):
            bn.momentum = momentum
        model.eval()
    return AdaptationCost(forward_images=images)


def tent(model: nn.Module, batches: list[torch.Tensor], steps: int = TENT_STEPS, lr: float = TENT_LR) -> AdaptationCost:
    """TENT: minimise the entropy of predictions by updating only the BatchNorm affine parameters.

    Statistics are first re-estimated on the target batches (AdaBN), then ``steps`` passes over ``batches`` update
    the affine parameters with Adam, using batch statistics as TENT does; the model ends in eval mode.
    """
    cost = recalibrate_batchnorm(model, batches)
    params = [p for m in model.modules() if isinstance(m, BN_TYPES) for p in (m.weight, m.bias) if p is not None]
    if not params:
        return cost
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    bns = [m for m in model.modules() if isinstance(m, BN_TYPES)]
    model.train()
    for bn in bns:
        bn.track_running_stats_backup = bn.momentum  # type: ignore[assignment]
        bn.momentum = 0.0  # keep the AdaBN statistics; train mode still normalises with batch statistics
    images = 0
    with torch.enable_grad():
        for _ in range(steps):
            for x in batches:
                logits = model(x)
                entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
                optimizer.zero_grad(set_to_none=True)
                entropy.backward()
                optimizer.step()
                images += len(x)
    for bn in bns:
        bn.momentum = bn.track_running_stats_backup  # type: ignore[assignment]
        del bn.track_running_stats_backup
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return AdaptationCost(cost.forward_images + images, images)


@torch.no_grad()
def drift_score(model: nn.Module, batch: torch.Tensor) -> float:
    """How far ``batch`` (unlabeled) sits from the data the BatchNorm statistics were estimated on.

    For each BatchNorm layer and channel, the batch mean's offset in running standard deviations and the log ratio
    of batch to running standard deviation are squared and averaged; the score is the square root of the mean over
    layers. About 0.1–0.3 on clean held-out data, growing with the strength of a shift; one forward pass.
    """
    gaps: list[torch.Tensor] = []

    def hook(bn: Any, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].transpose(0, 1).flatten(1)
        mean, std = x.mean(1), x.std(1)
        run_std = (bn.running_var + bn.eps).sqrt()
        offset = ((mean - bn.running_mean) / run_std) ** 2
        gaps.append((offset + torch.log(std.clamp_min(1e-6) / run_std) ** 2).mean())

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, BN_TYPES)]
    model.eval()
    try:
        model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return float(torch.stack(gaps).mean().sqrt()) if gaps else 0.0


@dataclass(frozen=True)
class AdaptationMethod:
    """A test-time adaptation a policy can ask for.

    Args:
        name: The name policies, presets and search spaces use.
        run: Adapts a model in place on unlabeled target batches and returns the work it did.
        estimate: The work it would do on ``n`` target images (for budgets, before it runs).
        description: One line for listings.
    """

    name: str
    run: Callable[[nn.Module, list[torch.Tensor]], AdaptationCost]
    estimate: Callable[[int], AdaptationCost]
    description: str


ADAPTATIONS: dict[str, AdaptationMethod] = {
    "none": AdaptationMethod("none", lambda model, batches: AdaptationCost(), lambda n: AdaptationCost(), "none"),
    "adabn": AdaptationMethod(
        "adabn", recalibrate_batchnorm, lambda n: AdaptationCost(forward_images=n), "re-estimate BatchNorm statistics"
    ),
    "tent": AdaptationMethod(
        "tent",
        tent,
        lambda n: AdaptationCost(forward_images=(1 + TENT_STEPS) * n, backward_images=TENT_STEPS * n),
        "AdaBN, then entropy minimisation of the BatchNorm affine parameters",
    ),
}


def is_adaptation(name: object) -> bool:
    """Whether ``name`` is a built-in adaptation or a reference to a user's (``pkg.mod:attr`` / ``file.py:attr``)."""
    return isinstance(name, str) and (name in ADAPTATIONS or is_plugin_spec(name))


def adaptation_choices() -> str:
    return ", ".join(ADAPTATIONS) + " or a reference 'pkg.mod:attr' to an AdaptationMethod"


def adaptation_method(name: str) -> AdaptationMethod:
    """The adaptation registered as ``name``, or the :class:`AdaptationMethod` a reference names (imported here: the
    caller has passed the trust gate of :func:`autocompress.plugins.require_trust`); an unknown name is a one-line
    error with the nearest match."""
    if name in ADAPTATIONS:
        return ADAPTATIONS[name]
    if is_plugin_spec(name):
        method = import_object(name, "an adaptation", "mypkg.adapt:mine")
        if not isinstance(method, AdaptationMethod):
            raise AutoCompressError(
                f"an adaptation reference must name an autocompress.compress.adaptation.AdaptationMethod, but "
                f"'{name}' is a {type(method).__name__}; wrap your function as AdaptationMethod(name, run, estimate, "
                "description)."
            )
        return method
    raise AutoCompressError(
        f"adapt must be one of {adaptation_choices()}, but got {name!r}.{did_you_mean(str(name), ADAPTATIONS)}"
    )
