"""Training and accuracy measurement: SGD with momentum, cosine or one-cycle schedule, resumable run folders."""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from autocompress import distributed
from autocompress.config import from_mapping
from autocompress.data import BatchIterator, DatasetSplits, canonical_ref, load_dataset
from autocompress.errors import ConfigError
from autocompress.files import read_json, why
from autocompress.models import build_model
from autocompress.runs import atomic_torch_save, atomic_write_json, command_line, system_report

log = logging.getLogger(__name__)

SCHEDULES = ("cosine", "onecycle")
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` in the run folder."""

    model: str
    dataset: str
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", canonical_ref(self.dataset))  # a file is saved by its absolute path
        checks = [
            (self.epochs >= 1, f"epochs >= 1 must hold, but got epochs={self.epochs}"),
            (self.batch_size >= 1, f"batch_size >= 1 must hold, but got batch_size={self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr > 0 must hold, but got lr={self.lr}"),
            (0 <= self.momentum < 1, f"0 <= momentum < 1 must hold, but got momentum={self.momentum}"),
            (
                0 <= self.weight_decay < 1 and math.isfinite(self.weight_decay),
                f"0 <= weight_decay < 1 must hold, but got weight_decay={self.weight_decay}",
            ),
            (0 <= self.label_smoothing < 1, f"0 <= label_smoothing < 1 must hold, but got {self.label_smoothing}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, but got '{self.schedule}'"),
            (
                0 <= self.warmup_epochs < self.epochs,
                f"0 <= warmup_epochs < epochs must hold, but got {self.warmup_epochs}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message + ".")


# Recipes that reach the shipped accuracies (MODELS.md); flags override them.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 30, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4},
    "cifar10": {"epochs": 200, "batch_size": 256, "lr": 0.1, "weight_decay": 5e-4},
    "basic-motions": {"epochs": 40, "batch_size": 8, "lr": 0.02, "weight_decay": 5e-4},
}


def config_for(model: str, dataset: str, **overrides: Any) -> TrainConfig:
    """A TrainConfig with the dataset's recipe, overridden by the non-None values in ``overrides``."""
    values = {**DATASET_DEFAULTS.get(dataset, {}), **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(model=model, dataset=dataset, **values)


@torch.inference_mode()
def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else the CPU; ``cpu``/``cuda``/``cuda:N`` as given (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"device must be auto, cpu or cuda, but got '{device}'.", params=("device",))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device} needs a CUDA GPU, but torch sees none; use auto or cpu.", params=("device",)
        )
    return torch.device(device)


def evaluate_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, splits_or_info: Any, batch_size: int = 500
) -> float:
    """Top-1 accuracy (0–1) of ``model`` on uint8 ``images``; the model is put in eval mode."""
    info = getattr(splits_or_info, "info", splits_or_info)
    model.eval()
    correct = 0
    for x, y in BatchIterator(images, labels, info, batch_size):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(labels))


def _lr_lambda(config: TrainConfig, steps_per_epoch: int) -> Any:
    total = config.epochs * steps_per_epoch
    warm = config.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if config.schedule == "onecycle":
            peak = max(1, int(0.3 * total))
            if step < peak:
                return 0.04 + 0.96 * step / peak
            return max(0.0, 0.5 * (1 + torch.cos(torch.tensor((step - peak) / max(1, total - peak) * torch.pi)).item()))
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + float(torch.cos(torch.tensor(progress * torch.pi))))

    return factor


class Trainer:
    """A resumable training run in a run folder.

    Args:
        config: The run's hyperparameters.
        run_dir: Folder for config, checkpoints, metrics, TensorBoard events and the final weights.
        splits: Preloaded data (loaded from ``data_dir`` when omitted).
        data_dir: Dataset folder, for datasets that need one.
    """

    def __init__(
        self, config: TrainConfig, run_dir: Path, splits: DatasetSplits | None = None, data_dir: str | None = None
    ) -> None:
        self.config, self.run_dir = config, run_dir
        # under torchrun: this rank's device and place (nothing changes without torchrun)
        self.world, self.device = distributed.setup(resolve_device(config.device))
        self.splits = splits or load_dataset(config.dataset, data_dir)
        torch.manual_seed(config.seed)
        info = self.splits.info
        self.model = build_model(config.model, info.num_classes, info.input_shape).to(self.device)
        self.net = distributed.wrap(self.model, self.world, self.device)  # what trains; self.model is what is saved
        decay, no_decay = _parameter_groups(self.model)
        self.optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
        )
        self.train_iter = BatchIterator(
            self.splits.train_x.to(self.device),
            self.splits.train_y.to(self.device),
            info,
            config.batch_size,
            shuffle=True,
            augment=True,
            seed=config.seed,
            # a last partial batch is skipped (steadier BatchNorm statistics) unless the data is smaller than a batch
            drop_last=len(self.splits.train_y) > config.batch_size,
            world=self.world,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(config, len(self.train_iter)))
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.sum_loss = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing, reduction="sum")
        self.epoch = 0

    @classmethod
    def create(cls, config: TrainConfig, run_dir: Path, splits: DatasetSplits) -> Trainer:
        """Start a new run on preloaded data: write the config, the command and the system report (rank 0 of a
        torchrun job writes; the others wait until it has)."""
        here = distributed.world()
        if here.main:
            atomic_write_json(run_dir / "config.json", dataclasses.asdict(config))
            (run_dir / "command.txt").write_text(command_line() + "\n")
            atomic_write_json(run_dir / "system.json", system_report())
        distributed.barrier(here)
        return cls(config, run_dir, splits=splits)

    @classmethod
    def resume(cls, run_dir: Path, data_dir: str | None = None, device: str | None = None) -> Trainer:
        """Continue a run from its last completed epoch."""
        raw = read_json(run_dir / "config.json", "training run's config", ConfigError)
        if device is not None and isinstance(raw, dict):
            raw["device"] = device
        config = from_mapping(TrainConfig, raw, f"'{run_dir / 'config.json'}'")
        trainer = cls(config, run_dir, data_dir=data_dir)
        if (run_dir / CHECKPOINT).exists():
            try:
                trainer._load_checkpoint()
            except Exception as exc:  # torch raises zip, pickle and key errors for a damaged checkpoint
                raise ConfigError(
                    f"the checkpoint '{run_dir / CHECKPOINT}' must be whole, but it cannot be loaded ({why(exc, 40)}); "
                    "delete it to train this run again from epoch 0."
                ) from None
        return trainer

    def _load_checkpoint(self) -> None:
        state = torch.load(self.run_dir / CHECKPOINT, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.train_iter.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])
        self._forget_epochs_after(self.epoch)
        log.info("resumed %s at epoch %d", self.run_dir, self.epoch)

    def _forget_epochs_after(self, epoch: int) -> None:
        """Drop metrics rows of epochs the checkpoint does not hold (a kill between logging an epoch and saving
        it): that epoch is trained again and logged once."""
        metrics = self.run_dir / "metrics.csv"
        if not self.world.main or not metrics.exists():
            return
        lines = metrics.read_text().splitlines(keepends=True)
        kept = [
            lines[0],
            *(line for line in lines[1:] if line.split(",")[0].isdigit() and int(line.split(",")[0]) <= epoch),
        ]
        if len(kept) != len(lines):
            partial = metrics.with_name(".metrics.csv.partial")
            partial.write_text("".join(kept))
            partial.replace(metrics)

    def _save_checkpoint(self) -> None:
        if not self.world.main:  # rank 0 writes; the others wait until it has
            distributed.barrier(self.world)
            return
        atomic_torch_save(
            self.run_dir / CHECKPOINT,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.train_iter.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": self.epoch,
                "world_size": self.world.size,  # informative: global batches make it resumable with any size
            },
        )
        distributed.barrier(self.world)

    def _train_epoch(self, bar: tqdm) -> float:
        self.model.train()
        if self.world.active:
            with distributed.lost_peers(self.world):
                return self._train_epoch_distributed(bar)
        total, count = 0.0, 0
        for x, y in self.train_iter:
            loss = self.loss_fn(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
            bar.update(1)
        return total / max(1, count)

    def _train_epoch_distributed(self, bar: tqdm) -> float:
        """One epoch as a rank of a torchrun job: this rank's slice of every global batch; its summed loss scaled
        so that DDP's average over the ranks is the global batch's mean loss (as one process computes it)."""
        total, count = 0.0, 0
        for x, y in self.train_iter:
            summed = self.sum_loss(self.net(x), y)
            loss = summed * (self.world.size / self.train_iter.global_count)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total += float(summed.detach())
            count += len(y)
            bar.update(1)
        total, count_all = distributed.sum_all([total, float(count)], self.world)
        return total / max(1.0, count_all)

    def run(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train the remaining epochs, then measure test accuracy and write ``model.pt`` and ``result.json``.

        Args:
            stop_after: Return after this many epochs (counted from the start of the run) without finishing; the
                checkpoint lets a later :meth:`resume` continue exactly where it stopped.
        """
        from torch.utils.tensorboard import SummaryWriter

        main = self.world.main  # under torchrun only rank 0 writes events, metrics, checkpoints and results
        writer = SummaryWriter(str(self.run_dir)) if main else None
        steps = len(self.train_iter)
        bar = tqdm(
            total=self.config.epochs * steps,
            initial=self.epoch * steps,
            desc="train",
            unit="step",
            disable=None if main else True,
        )
        start = time.perf_counter()
        last = self.config.epochs if stop_after is None else min(stop_after, self.config.epochs)
        while self.epoch < last:
            loss = self._train_epoch(bar)
            self.epoch += 1
            if writer is not None:
                val_acc = evaluate_accuracy(
                    self.model, self.splits.val_x.to(self.device), self.splits.val_y.to(self.device), self.splits
                )
                self._log_epoch(writer, loss, val_acc, time.perf_counter() - start)
                bar.set_postfix(loss=f"{loss:.3f}", val_acc=f"{val_acc:.4f}")
            self._save_checkpoint()
        bar.close()
        if writer is not None:
            writer.close()
        if self.epoch < self.config.epochs:
            return {"epochs": self.epoch, "stopped": True}
        result = self._finish() if main else {"epochs": self.epoch, "rank": self.world.rank}
        distributed.barrier(self.world)
        return result

    def _log_epoch(self, writer: Any, loss: float, val_acc: float, elapsed: float) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        writer.add_scalar("losses/train_loss", loss, self.epoch)
        writer.add_scalar("charts/val_accuracy", val_acc, self.epoch)
        writer.add_scalar("charts/learning_rate", lr, self.epoch)
        writer.flush()
        metrics = self.run_dir / "metrics.csv"
        new = not metrics.exists()
        with metrics.open("a", newline="") as handle:
            out = csv.writer(handle)
            if new:
                out.writerow(["epoch", "train_loss", "val_accuracy", "lr", "elapsed_s"])
            out.writerow([self.epoch, f"{loss:.5f}", f"{val_acc:.5f}", f"{lr:.6g}", f"{elapsed:.1f}"])
        log.info("epoch %d/%d loss %.4f val_acc %.4f (%.0f s)", self.epoch, self.config.epochs, loss, val_acc, elapsed)

    def _finish(self) -> dict[str, Any]:
        dev = self.device
        result = {
            "epochs": self.epoch,
            "val_accuracy": evaluate_accuracy(
                self.model, self.splits.val_x.to(dev), self.splits.val_y.to(dev), self.splits
            ),
            "test_accuracy": evaluate_accuracy(
                self.model, self.splits.test_x.to(dev), self.splits.test_y.to(dev), self.splits
            ),
            "weights": str(self.run_dir / "model.pt"),
        }
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        atomic_torch_save(self.run_dir / "model.pt", state)
        atomic_write_json(self.run_dir / "result.json", result)
        return result


def _parameter_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Weights of convs and linears decay; BatchNorm parameters and biases do not."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        (decay if param.ndim > 1 else no_decay).append(param)
    return decay, no_decay
