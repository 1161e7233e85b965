"""The fine-tune users ship with: distillation, quantization-aware training below 8 bits, resume after a kill."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize

from autocompress.compress.finetune import FinetuneOptions, finetune
from autocompress.compress.policy import LayerSetting, Policy
from autocompress.compress.quantization import quantize_weights
from autocompress.env import build_workload
from autocompress.errors import AutoCompressError
from autocompress.models.training import evaluate_accuracy


@pytest.fixture(scope="module")
def workload():  # type: ignore[no-untyped-def]
    return build_workload("digits-cnn", "digits")


def pruned(workload):  # type: ignore[no-untyped-def]
    policy = Policy(
        "digits-cnn", layers={g.leader: LayerSetting(keep=0.3) for g in workload.table.groups if not g.protected}
    )
    return workload.evaluator.pruned_copy(policy, "none")


def test_distilled_qat_finetune_reports_each_epoch(workload) -> None:  # type: ignore[no-untyped-def]
    model = pruned(workload)
    bits = {layer.name: 4 for layer in workload.table.layers}
    result = finetune(model, workload.splits, FinetuneOptions(epochs=2, device="cpu"), workload.evaluator.model, bits)
    assert len(result.losses) == len(result.val_accuracy) == 2 and result.distilled
    assert result.qat_layers == len(bits) and result.val_accuracy[-1] > result.val_accuracy[0]
    assert not any(parametrize.is_parametrized(m) for m in model.modules())  # plain weights again, ready to round
    # quantization-aware: the accuracy seen during training is what the rounded weights give
    quantize_weights(model, bits)
    rounded = evaluate_accuracy(model, workload.splits.val_x, workload.splits.val_y, workload.splits)
    assert rounded == pytest.approx(result.val_accuracy[-1])


def test_no_qat_at_eight_bits_and_labels_only_without_teacher(workload) -> None:  # type: ignore[no-untyped-def]
    bits = {layer.name: 8 for layer in workload.table.layers}
    result = finetune(pruned(workload), workload.splits, FinetuneOptions(epochs=1, device="cpu"), None, bits)
    assert result.qat_layers == 0 and not result.distilled


@pytest.mark.slow
def test_a_killed_finetune_resumes_where_it_stopped(workload, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    teacher = workload.evaluator.model
    whole = pruned(workload)
    straight = finetune(whole, workload.splits, FinetuneOptions(epochs=3, device="cpu"), teacher)
    options = FinetuneOptions(epochs=3, device="cpu")
    partial_dir = tmp_path / "partial"
    _run_epochs(pruned(workload), workload, options, teacher, partial_dir, stop_after=2)  # killed after epoch 2
    resumed = pruned(workload)
    result = finetune(resumed, workload.splits, options, teacher, None, partial_dir)
    assert result.losses == pytest.approx(straight.losses) and result.val_accuracy == straight.val_accuracy
    for a, b in zip(resumed.state_dict().values(), whole.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def _run_epochs(model, workload, options, teacher, folder, stop_after):  # type: ignore[no-untyped-def]
    """Run a fine-tune and kill it (an exception) once ``stop_after`` epochs are checkpointed."""
    import autocompress.compress.finetune as module

    original = module._save
    calls = {"n": 0}

    def save_then_die(*args, **kwargs):  # type: ignore[no-untyped-def]
        original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == stop_after:
            raise KeyboardInterrupt

    module._save = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            finetune(model, workload.splits, options, teacher, None, folder)
    finally:
        module._save = original


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epochs": -1}, "finetune_epochs >= 0"),
        ({"lr": 0}, "finetune_lr > 0"),
        ({"schedule": "linear"}, "finetune_schedule must be cosine, step or constant"),
        ({"device": "tpu"}, "device must be auto, cpu or cuda"),
    ],
)
def test_bad_options_are_one_line(fields: dict, message: str) -> None:
    with pytest.raises(AutoCompressError, match=message):
        FinetuneOptions(**fields)


def test_fewer_examples_than_a_batch_still_train(workload) -> None:  # type: ignore[no-untyped-def]
    """Before: drop_last skipped the only, incomplete batch and reported a loss of 0.0."""
    from dataclasses import replace

    small = replace(workload.splits, train_x=workload.splits.train_x[:40], train_y=workload.splits.train_y[:40])
    result = finetune(pruned(workload), small, FinetuneOptions(epochs=1, batch_size=128, device="cpu"))
    assert result.losses[0] > 0
