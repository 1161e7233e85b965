"""Train once, switch many: the nested configurations of an adaptive package trained together as slices of one
union model (slimmable networks, Yu et al. ICLR 2019, and their sandwich rule with in-place distillation, Yu & Huang
ICCV 2019; Once-for-All, Cai et al. ICLR 2020; AdaSpring's retraining-free configurations).

Each step runs every configuration on the same batch, as slimmable networks train their few switches (``per_step`` N:
the largest, the smallest and N − 2 random middle ones, the sandwich rule of universally slimmable networks, whose
widths are too many to train each; on ResNet-20's seven configurations the sandwich left the half-width one 2.0 pt under
the same configuration fine-tuned alone, every configuration every step 0.2 pt), every one distilled from the unpruned
model (the teacher) and fake-quantized to its own weight bits where they are below 8; the gradients of all of them flow
into the one set of shared weights, since each configuration's tensors are index slices of the union's
(:func:`~autocompress.compress.nesting.slice_map`) — each configuration's gradient clipped to the fine-tune's norm on
its own before they are summed, so each takes the step it would take fine-tuned alone. Each configuration keeps its own
BatchNorm layers — the affine scale and shift trained as its own (*switchable* BatchNorm, as slimmable networks do: a
few hundred numbers per configuration, stored privately in the package) and the statistics re-estimated at the end on
training inputs augmented as in training. A layer a technique replaced in one configuration (a low-rank factorisation)
is not a slice of the union: that configuration trains it as its own. A checkpoint after every epoch lets a killed
training resume where it stopped. Nothing here runs on the device: the package ships the trained slices.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from autocompress import distributed
from autocompress.compress.adaptation import recalibrate_batchnorm
from autocompress.compress.finetune import FinetuneOptions, _optimizer
from autocompress.compress.quantization import quantize_weight
from autocompress.compress.techniques import part_bits
from autocompress.data import BatchIterator, DatasetSplits, Normalizer, augment_batch
from autocompress.errors import AutoCompressError
from autocompress.models.training import evaluate_accuracy, resolve_device
from autocompress.runs import atomic_torch_save

log = logging.getLogger(__name__)
CHECKPOINT = "union.pt"
# 3: each configuration's gradient clipped on its own; 2: one clip of their sum; 1: shared BatchNorm (unmarked)
CHECKPOINT_FORMAT = 3
BN_IMAGES = 2048  # training inputs each configuration's BatchNorm statistics are re-estimated on at the end

SliceMap = Mapping[str, Sequence[Sequence[int] | None]]


@dataclass
class UnionTrainingResult:
    """Per epoch: the mean loss of the configurations each step trained, and each configuration's validation accuracy
    after the epoch."""

    losses: list[float] = field(default_factory=list)
    val_accuracy: list[list[float]] = field(default_factory=list)
    device: str = "cpu"
    configurations_per_step: int = 0
    # per epoch: the fraction of configurations' gradients over ``clip_norm`` (clipped), and their mean norm
    clipped: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def take(tensor: torch.Tensor, index: Sequence[Sequence[int] | None]) -> torch.Tensor:
    """The slice of ``tensor`` a slice map names (per axis the positions kept, ``None``: all), differentiable."""
    for axis, positions in enumerate(index):
        if positions is not None:
            tensor = tensor.index_select(axis, torch.as_tensor(positions, device=tensor.device))
    return tensor


def train_union(
    union: nn.Module,
    models: Sequence[nn.Module],
    maps: Sequence[SliceMap],
    sizes: Sequence[float],
    weight_bits: Sequence[Mapping[str, int]],
    splits: DatasetSplits,
    options: FinetuneOptions,
    teacher: nn.Module | None = None,
    checkpoint_dir: Path | None = None,
    per_step: int = 0,
) -> UnionTrainingResult:
    """Train the shared weights of ``union`` for all ``models`` (its slices) at once, in place; afterwards each
    model holds its slice of the trained weights and its own BatchNorm statistics.

    Args:
        union: The union model (every group keeps the most channels any configuration keeps).
        models: Each configuration's model, a slice of ``union`` by ``maps``.
        maps: Per configuration, which slice of the union's tensor each of its tensors is.
        sizes: Per configuration, its size (MACs): every step trains the largest and the smallest.
        weight_bits: Per configuration, each layer's weight bits (quantization-aware below 8).
        splits: The dataset (train for the steps, val for the accuracy after each epoch).
        options: Epochs, learning rate, schedule, distillation, device, seed (:class:`FinetuneOptions`).
        teacher: The unpruned model every configuration is distilled from.
        checkpoint_dir: Where a checkpoint goes after every epoch; one found there is resumed.
        per_step: Configurations each step trains: 0 (default) or as many as there are: every configuration every
            step (each gets as many updates as it would fine-tuned alone); N: the largest, the smallest and N − 2
            middle ones drawn at random (3: the sandwich rule; faster epochs, fewer updates for the middle ones).
    """
    if options.epochs < 1:
        return UnionTrainingResult()
    if not (len(models) == len(maps) == len(sizes) == len(weight_bits)) or not models:
        raise AutoCompressError("union training needs one slice map, size and bit table per configuration.")
    if isinstance(per_step, bool) or not isinstance(per_step, int) or per_step < 0 or per_step == 1:
        raise AutoCompressError(
            f"configurations per step must be 0 (all) or >= 2 (the largest, the smallest and random middle ones), "
            f"but got {per_step!r}; pass e.g. 3 (the sandwich rule) or 0."
        )
    # under torchrun: every rank takes its slice of each global batch and restores rank 0's checkpoint; the
    # gradients are summed over the ranks (the summed losses scaled by the global batch), rank 0 alone saves
    here, device = distributed.setup(resolve_device(options.device))
    if here.active and checkpoint_dir is not None:
        checkpoint_dir = Path(distributed.from_main(str(checkpoint_dir), here))
    torch.manual_seed(options.seed)
    picker = random.Random(options.seed)
    union.to(device)
    for model in models:
        model.to(device)
    teacher = teacher.to(device).eval() if teacher is not None and options.distill else None
    shared = dict(union.named_parameters())
    # own: each configuration's BatchNorm scale and shift, and what is not a slice of the union (a factored layer)
    private = [
        private_names(model) | {name for name, _ in model.named_parameters() if name not in slices}
        for model, slices in zip(models, maps, strict=True)
    ]
    weight_bits = [part_bits(model, bits, weights=True) for model, bits in zip(models, weight_bits, strict=True)]
    # what the optimizer steps: the union's shared weights and each configuration's own BatchNorm scale and shift
    trainable = nn.Module()
    trainable.union = union
    trainable.own = nn.ParameterList(
        p for m, names in zip(models, private, strict=True) for n, p in m.named_parameters() if n in names
    )
    for param in trainable.own:
        param.requires_grad_(True)
    order = sorted(range(len(models)), key=lambda k: sizes[k])
    smallest, largest, middle = order[0], order[-1], order[1:-1]
    batches = BatchIterator(
        splits.train_x.to(device),
        splits.train_y.to(device),
        splits.info,
        options.batch_size,
        shuffle=True,
        augment=True,
        seed=options.seed,
        drop_last=len(splits.train_y) > options.batch_size,
        world=here,
    )
    optimizer, scheduler = _optimizer(trainable, options, len(batches))
    params = list(trainable.parameters())
    draws = _draws(per_step, len(models))
    result = UnionTrainingResult(device=str(device), configurations_per_step=len({smallest, largest}) + draws)
    start = _restore(checkpoint_dir, union, models, optimizer, scheduler, batches, result, picker, device, per_step)
    try:
        quiet = None if here.main else True
        with tqdm(total=options.epochs, initial=start, desc="union training", unit="epoch", disable=quiet) as bar:
            for epoch in range(start, options.epochs):
                union.train()
                total, count, clipped, norms, steps = 0.0, 0, 0, 0.0, 0
                for x, y in batches:
                    step = sorted({largest, smallest, *picker.sample(middle, draws)})
                    soft = None
                    if teacher is not None:
                        with torch.no_grad():
                            soft = F.softmax(teacher(x) / options.temperature, dim=1)
                    mean = "sum" if here.active else "mean"
                    # each configuration's gradient is clipped on its own, then they are summed: one clip of the sum
                    # shrank every configuration's step by the number of configurations in it (ResNet-20's union:
                    # the summed gradient's norm ~128 against a clip of 2, so every step was clipped), which a
                    # configuration fine-tuned alone never pays
                    summed = [torch.zeros_like(p) for p in params]
                    touched = [False] * len(params)  # what no configuration of this step uses keeps no gradient
                    loss_sum = 0.0
                    for k in step:
                        loss = _loss(models[k], maps[k], shared, private[k], weight_bits[k], x, y, soft, options, mean)
                        optimizer.zero_grad(set_to_none=True)
                        if here.active:  # this slice's share of the global batch's mean; summed over the ranks
                            (loss / batches.global_count).backward()
                            distributed.sum_gradients(trainable, here)
                        else:
                            loss.backward()
                        norm = float(nn.utils.clip_grad_norm_(params, options.clip_norm))
                        clipped, norms = clipped + (norm > options.clip_norm), norms + norm
                        for i, (into, param) in enumerate(zip(summed, params, strict=True)):
                            if param.grad is not None:
                                into.add_(param.grad)
                                touched[i] = True
                        loss_sum += float(loss.detach())
                    # (SGD skips a parameter without a gradient: no momentum or weight decay moves a configuration
                    # that did not train this step)
                    for param, grad, used in zip(params, summed, touched, strict=True):
                        param.grad = grad if used else None
                    optimizer.step()
                    scheduler.step()
                    seen = loss_sum / len(step) * (1 if here.active else len(y))
                    total, count, steps = total + seen, count + len(y), steps + len(step)
                total, all_count = distributed.sum_all([total, float(count)], here)
                result.losses.append(total / max(1.0, all_count))
                result.clipped.append(clipped / max(1, steps))
                result.grad_norm.append(norms / max(1, steps))
                _write_slices(union, models, maps, private)
                result.val_accuracy.append(
                    [
                        evaluate_accuracy(m.eval(), splits.val_x.to(device), splits.val_y.to(device), splits)
                        for m in models
                    ]
                )
                if here.main:
                    state = (optimizer, scheduler, batches, result, picker, epoch + 1, per_step)
                    _save(checkpoint_dir, union, models, *state)
                distributed.barrier(here)
                bar.update(1)
                accuracies = " ".join(f"{a:.3f}" for a in result.val_accuracy[-1])
                bar.set_postfix(loss=f"{result.losses[-1]:.4f}", val=accuracies)
                log.info(
                    "union training epoch %d/%d: loss %.4f, val accuracy %s",
                    epoch + 1,
                    options.epochs,
                    result.losses[-1],
                    [round(a, 4) for a in result.val_accuracy[-1]],
                )
        _write_slices(union, models, maps, private)
        # each configuration's own statistics for its trained slice, on inputs augmented as in training: the
        # weights learned BatchNorm statistics that include the crops' zero borders, and statistics of plain images
        # cost ResNet-20 about 7 points (PolicyEvaluator._augmented_batches measures it)
        normalise = Normalizer(splits.info)
        calibration = augment_batch(
            splits.train_x[:BN_IMAGES], splits.info, torch.Generator().manual_seed(options.seed)
        )
        for model in models:
            recalibrate_batchnorm(
                model, [normalise(calibration[i : i + 256]).to(device) for i in range(0, len(calibration), 256)]
            )
    finally:
        union.to("cpu").eval()
        for model in models:
            model.to("cpu").eval()
        if teacher is not None:
            teacher.to("cpu")
    return result


def _draws(per_step: int, count: int) -> int:
    """Middle configurations a step draws, of ``count`` configurations, at ``per_step`` (0: all)."""
    middle = max(0, count - 2)
    return middle if per_step == 0 else min(middle, max(0, per_step - 2))


def private_names(model: nn.Module) -> set[str]:
    """The parameters a configuration trains as its own, not as a slice of the union: its BatchNorm layers' scale
    and shift (slimmable networks' switchable BatchNorm: each width normalises its own channel mix)."""
    return {
        f"{module_name}.{name}" if module_name else name
        for module_name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for name, _ in module.named_parameters(recurse=False)
    }


def _loss(
    model: nn.Module,
    slices: SliceMap,
    shared: Mapping[str, nn.Parameter],
    own: set[str],
    bits: Mapping[str, int],
    x: torch.Tensor,
    y: torch.Tensor,
    soft: torch.Tensor | None,
    options: FinetuneOptions,
    reduction: str = "mean",
) -> torch.Tensor:
    """One configuration's loss on a batch (its mean, or with ``reduction="sum"`` its sum over the batch), its
    weights sliced from the union's (gradients flow back into them) but for those named in ``own``, its own."""
    tensors: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        tensor: torch.Tensor
        if name in own:
            tensor = param
        elif name in shared and name in slices:
            tensor = take(shared[name], slices[name])
        else:
            tensors[name] = param.detach()  # neither its own nor a slice of the union: kept fixed
            continue
        layer = name.rpartition(".")[0]  # a conv or linear layer, or a part of a factored one (BatchNorm: no bits)
        if name.endswith(".weight") and bits.get(layer, 32) < 8:  # quantization-aware: straight-through
            tensor = tensor + (quantize_weight(tensor.detach(), bits[layer]) - tensor).detach()
        tensors[name] = tensor
    model.train()
    logits = functional_call(model, tensors, (x,))  # its own BatchNorm buffers, updated in train mode
    loss = F.cross_entropy(logits, y, reduction=reduction)
    if soft is not None:
        t = options.temperature
        kd_reduction = "sum" if reduction == "sum" else "batchmean"
        kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction=kd_reduction) * t * t
        loss = options.distill_weight * kd + (1 - options.distill_weight) * loss
    return loss


@torch.no_grad()
def _write_slices(
    union: nn.Module, models: Sequence[nn.Module], maps: Sequence[SliceMap], private: Sequence[set[str]]
) -> None:
    shared = dict(union.named_parameters())
    for model, slices, mine in zip(models, maps, private, strict=True):
        for name, own in model.named_parameters():
            if name in shared and name in slices and name not in mine:
                own.copy_(take(shared[name], slices[name]))


def _save(
    folder: Path | None,
    union: nn.Module,
    models: Sequence[nn.Module],
    optimizer: Any,
    scheduler: Any,
    batches: BatchIterator,
    result: UnionTrainingResult,
    picker: random.Random,
    epoch: int,
    per_step: int,
) -> None:
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "per_step": per_step,
        "union": union.state_dict(),
        "models": [m.state_dict() for m in models],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": batches.generator.get_state(),
        "picker": picker.getstate(),
        "result": result.to_dict(),
    }
    atomic_torch_save(folder / CHECKPOINT, state)


def _restore(
    folder: Path | None,
    union: nn.Module,
    models: Sequence[nn.Module],
    optimizer: Any,
    scheduler: Any,
    batches: BatchIterator,
    result: UnionTrainingResult,
    picker: random.Random,
    device: torch.device,
    per_step: int,
) -> int:
    """Load the checkpoint in ``folder`` if there is one of these configurations; returns the epochs it had done."""
    path = None if folder is None else folder / CHECKPOINT
    if path is None or not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a cut file
        raise AutoCompressError(
            f"the union training checkpoint '{path}' must be a whole checkpoint, but it cannot be read "
            f"({type(exc).__name__}); delete it to train from the start."
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise AutoCompressError(
            f"the union training checkpoint '{path}' must be of this autocompress's format {CHECKPOINT_FORMAT}, but "
            f"it is of format {state.get('format', 1) if isinstance(state, dict) else '?'} (an earlier training "
            "recipe, which it cannot continue); delete it to train from the start."
        )
    saved_per_step = state.get("per_step", 3)
    if _draws(saved_per_step, len(models)) != _draws(per_step, len(models)):
        raise AutoCompressError(
            f"the union training checkpoint '{path}' must have been trained with the same train_per_step, "
            f"but it took {saved_per_step} and this run takes {per_step}; pass train_per_step {saved_per_step} to "
            "resume, or delete it to train from the start.",
            params=("train_per_step",),
        )
    try:
        union.load_state_dict(state["union"])
        if len(state["models"]) != len(models):
            raise ValueError(f"{len(state['models'])} configurations, not {len(models)}")
        for model, saved in zip(models, state["models"], strict=True):
            model.load_state_dict(saved)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        batches.generator.set_state(state["generator"].cpu())
        picker.setstate(_as_tuples(state["picker"]))
    except Exception as exc:  # a checkpoint of other configurations, or a cut file
        raise AutoCompressError(
            f"the union training checkpoint '{path}' must be of these configurations, but cannot be resumed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); delete it to train from the start."
        ) from None
    saved = state["result"]
    result.losses, result.val_accuracy = list(saved["losses"]), [list(a) for a in saved["val_accuracy"]]
    result.clipped, result.grad_norm = list(saved.get("clipped", [])), list(saved.get("grad_norm", []))
    log.info("union training resumes after epoch %d from %s", state["epoch"], path)
    return int(state["epoch"])


def _as_tuples(value: Any) -> Any:
    """random.Random's state as setstate takes it (tuples all the way down)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value
