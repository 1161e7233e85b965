"""Least-squares reconstruction after channel removal: exact on what it can represent, and what it buys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocompress.compress import reconstruction
from autocompress.compress.evaluator import EvaluatorOptions, PolicyEvaluator
from autocompress.compress.layers import build_layer_table
from autocompress.compress.policy import LayerSetting, Policy
from autocompress.compress.pruning import ChannelPruner
from autocompress.compress.reconstruction import (
    FastReconstructor,
    ReconstructionOptions,
    collect_targets,
    gram_of,
    reconstruct_sequential,
)
from autocompress.env import build_workload
from autocompress.env.workload import Workload
from autocompress.errors import AutoCompressError


class TwoLinear(nn.Module):
    """y = fc2(fc1(x)) with no non-linearity: pruning fc1's outputs is exactly recoverable when the kept ones span
    the removed ones."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


def test_refit_is_exact_when_the_kept_channels_carry_everything() -> None:
    torch.manual_seed(0)
    model = TwoLinear().eval()
    with torch.no_grad():  # fc1's last 4 outputs are copies of its first 4: removing them loses nothing
        model.fc1.weight[4:] = model.fc1.weight[:4]
        model.fc1.bias[4:] = model.fc1.bias[:4]
        model.fc1.weight[:4] *= 10  # and rank them first
    table = build_layer_table(model, (6,), protect={"fc2"})
    pruner = ChannelPruner(model, table)
    kept = {table.group_of("fc1").id: 4, **{g.id: g.channels for g in table.groups if g.leader != "fc1"}}  # type: ignore[union-attr]
    x = torch.randn(512, 6)
    for mode in ("fast", "sequential"):
        pruned = pruner.prune(kept)
        before = (pruned(x) - model(x)).abs().max()
        options = ReconstructionOptions(images=512, ridge=1e-9)
        if mode == "fast":
            assert FastReconstructor(model, table, x, options).apply(pruned, kept, pruner.ranking) == 1
        else:
            targets = collect_targets(model, table, x, options)
            assert reconstruct_sequential(pruned, table, kept, pruner.ranking, targets, options) == 1
        after = (pruned(x) - model(x)).abs().max()
        assert before > 0.1 and after < 1e-4, (mode, before, after)


def evaluator_of(w: Workload, options: EvaluatorOptions) -> PolicyEvaluator:
    """A fresh evaluator of the workload's model and slices with other options."""
    e = w.evaluator
    return PolicyEvaluator(w.model, w.info, e.val_images, e.val_labels, e.train_images, options, table=w.table)


@pytest.fixture(scope="module")
def digits_workload():  # type: ignore[no-untyped-def]
    return build_workload("digits-cnn", "digits")


@pytest.mark.parametrize("mode", ["fast", "sequential"])
def test_reconstruction_recovers_accuracy_on_digits(digits_workload, mode: str) -> None:  # type: ignore[no-untyped-def]
    w = digits_workload
    policy = Policy("digits-cnn", layers={g.leader: LayerSetting(keep=0.4) for g in w.table.groups if not g.protected})
    scores = {}
    for choice in ("none", mode):
        evaluator = evaluator_of(w, EvaluatorOptions(reconstruct=choice))
        scores[choice] = evaluator.evaluate(policy).accuracy
    assert scores[mode] >= scores["none"] + 0.1, scores  # measured: 0.68 → 0.97 (fast), 0.95 (sequential)


def test_conv1d_models_are_refitted() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(3, 16, 5, padding=2), nn.ReLU(), nn.Conv1d(16, 8, 3), nn.Flatten(), nn.Linear(8 * 30, 4)
    )
    model.eval()
    table = build_layer_table(model, (3, 32), protect={"4"})
    pruner = ChannelPruner(model, table)
    kept = {g.id: (g.channels // 2 if g.leader == "0" else g.channels) for g in table.groups}
    x = torch.randn(256, 3, 32)
    pruned = pruner.prune(kept)
    before = (pruned(x) - model(x)).pow(2).mean()
    FastReconstructor(model, table, x, ReconstructionOptions(images=256)).apply(pruned, kept, pruner.ranking)
    assert (pruned(x) - model(x)).pow(2).mean() < before


def test_bad_mode_is_one_line() -> None:
    with pytest.raises(AutoCompressError, match="reconstruct must be one of fast, sequential, none, but got 'slow'"):
        EvaluatorOptions(reconstruct="slow")


def test_scoring_on_a_chosen_device_gives_the_same_accuracy(digits_workload) -> None:  # type: ignore[no-untyped-def]
    """``device`` moves only the validation pass; on a CPU-only machine ``auto`` and ``cpu`` agree exactly."""
    w = digits_workload
    policy = Policy("digits-cnn", layers={g.leader: LayerSetting(keep=0.5) for g in w.table.groups if not g.protected})
    scores = []
    for device in ("cpu", "auto"):
        evaluator = evaluator_of(w, EvaluatorOptions(device=device))
        scores.append(evaluator.evaluate(policy).accuracy)
    assert scores[0] == scores[1]
    with pytest.raises(AutoCompressError, match="device must be auto, cpu or cuda"):
        EvaluatorOptions(device="tpu")


def test_the_memory_layout_changes_no_score(digits_workload) -> None:  # type: ignore[no-untyped-def]
    """The evaluator runs its scoring and refit passes channels-last where that is faster; a policy scores the same
    in either layout, and the model it refits comes back in the default layout (what export and ONNX expect)."""
    w = digits_workload
    policy = Policy(
        "digits-cnn",
        layers={g.leader: LayerSetting(keep=0.4, wbits=4) for g in w.table.groups if not g.protected},
    )
    scores, weights = [], []
    for layout in (torch.contiguous_format, torch.channels_last):
        evaluator = evaluator_of(w, EvaluatorOptions(reconstruct="sequential"))
        evaluator._format = layout  # the default layout is what a GPU (or a series model) runs in
        scores.append(evaluator.evaluate(policy).accuracy)
        model = evaluator.pruned_copy(policy)
        assert all(p.is_contiguous() for p in model.parameters())
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert scores[0] == scores[1]
    assert torch.allclose(weights[0], weights[1], atol=1e-4)  # float32 sums in another order (measured 9e-5)
    assert w.evaluator.memory_format == torch.channels_last  # images on the CPU


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_through_syrk_is_the_full_symmetric_product(dtype: torch.dtype) -> None:
    x = torch.randn(300, 150, dtype=dtype)[:, ::2]  # not contiguous
    got, want = gram_of(x), x.T @ x
    assert got.dtype == dtype and torch.allclose(got, want, rtol=1e-5, atol=1e-3)
    assert torch.equal(got, got.T)


@pytest.mark.parametrize(
    ("module", "shape"),
    [
        (nn.Conv2d(3, 4, 3, padding=1, stride=2), (2, 3, 7, 7)),
        (nn.Conv2d(3, 4, (3, 1), padding=(1, 0), dilation=(2, 1)), (2, 3, 6, 5)),
        (nn.Conv1d(3, 5, 5, padding=2, dilation=2), (4, 3, 20)),
    ],
)
def test_patches_of_every_position_unfold_as_the_sampled_ones_gather(
    module: nn.Module, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.randn(*shape)
    count = reconstruction._grid(module, x)
    index = reconstruction._positions(count, 64, torch.Generator().manual_seed(0), len(x))
    assert reconstruction._all_positions(index, count)
    unfolded = reconstruction._patches_at(module, x, index)
    monkeypatch.setattr(reconstruction, "_all_positions", lambda index, count: False)
    assert torch.equal(unfolded, reconstruction._patches_at(module, x, index))
    weight = module.weight.reshape(module.out_channels, -1)
    outputs = module(x).reshape(len(x), module.out_channels, -1).transpose(1, 2).reshape(-1, module.out_channels)
    assert torch.allclose(unfolded @ weight.T + module.bias, outputs, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("mode", ["fast", "sequential"])
def test_padding_given_by_name_is_refitted_and_an_uneven_same_is_left_alone(mode: str) -> None:
    """``padding="same"``/``"valid"`` (models ported from Keras): refitted like the explicit padding they stand for;
    an even kernel's "same" pads one side more, which the refit's patches do not model: left as pruned."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding="same"),
        nn.ReLU(),
        nn.Conv2d(16, 8, 3, padding="same"),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding="valid"),
        nn.ReLU(),
        nn.Conv2d(8, 8, 2, padding="same"),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 4),
    ).eval()
    table = build_layer_table(model, (3, 8, 8), protect={"8"})
    assert not reconstruction.refittable(table.layers[3], model[6])
    pruner = ChannelPruner(model, table)
    kept = {g.id: max(1, g.channels // 2) for g in table.groups}
    x = torch.randn(256, 3, 8, 8)
    pruned = pruner.prune(kept)
    before = (pruned(x) - model(x)).pow(2).mean()
    options = ReconstructionOptions(images=256)
    if mode == "fast":
        refitted = FastReconstructor(model, table, x, options).apply(pruned, kept, pruner.ranking)
    else:
        targets = collect_targets(model, table, x, options)
        refitted = reconstruct_sequential(pruned, table, kept, pruner.ranking, targets, options)
    assert refitted == 3  # layers 2, 4 and the linear; not the even kernel's "same"
    assert (pruned(x) - model(x)).pow(2).mean() < before
