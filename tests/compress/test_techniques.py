"""Techniques declared once: low-rank factorisation (costs, structure, refit) and a technique from outside the
package that searches, exports and verifies touching no file of the package."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from autocompress.compress import techniques
from autocompress.compress.layers import Layer, LayerShape, build_layer_table
from autocompress.compress.policy import LayerSetting, Policy
from autocompress.compress.techniques import (
    LowRank,
    LowRankModule,
    Technique,
    apply_techniques,
    register_technique,
    technique_shapes,
)
from autocompress.deploy.export import ExportOptions, export_run, load_exported
from autocompress.env import build_workload
from autocompress.errors import PolicyError
from autocompress.search.job import SearchJob
from autocompress.search.record import SearchConfig


@pytest.fixture(scope="module")
def digits_workload():  # type: ignore[no-untyped-def]
    return build_workload("digits-cnn", "digits")


def _inner(table) -> list[str]:  # type: ignore[no-untyped-def]
    return [layer.name for layer in table.layers[1:-1] if LowRank().applies_to(layer)]


def test_rank_costs_fall_with_the_value_and_half_halves_the_layer(digits_workload) -> None:  # type: ignore[no-untyped-def]
    table = digits_workload.table
    name = _inner(table)[0]
    kept = {g.id: g.channels for g in table.groups}
    whole = table.shapes(kept)[table.names.index(name)]
    macs = []
    for value in (1.0, 0.99, 0.8, 0.5, 0.3, 0.1):
        shape = technique_shapes(table, kept, {name: {"rank": value}})[table.names.index(name)]
        macs.append(shape.macs)
        assert shape.params <= whole.params
    assert macs == sorted(macs, reverse=True)
    assert macs[0] == macs[1] == whole.macs  # at (or rounding to) the break-even rank the layer stays whole
    assert abs(macs[3] / whole.macs - 0.5) < 0.05


def test_a_factored_layer_of_exact_rank_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1, bias=True)
    with torch.no_grad():  # a weight of rank 4 exactly
        conv.weight.copy_((torch.randn(32, 4) @ torch.randn(4, 16 * 9)).reshape(conv.weight.shape))
    model = nn.Sequential(conv)
    table = build_layer_table(model, (16, 8, 8), protect=set())
    columns = 16 * 9
    value = 4.2 / (32 * columns // (32 + columns))  # the ratio of the break-even rank that rounds to 4
    factored = LowRank().apply(conv, table.layers[0], value)
    assert isinstance(factored, LowRankModule) and factored.rank == 4
    x = torch.randn(2, 16, 8, 8)
    assert torch.allclose(factored(x), conv(x), atol=1e-4)


def test_the_refit_recovers_what_a_plain_svd_loses(digits_workload) -> None:  # type: ignore[no-untyped-def]
    evaluator, table = digits_workload.evaluator, digits_workload.table
    policy = Policy("digits-cnn", layers={n: LayerSetting(techniques={"rank": 0.3}) for n in _inner(table)})
    scores = {}
    for mode in ("none", "fast", "sequential"):
        evaluator.options = dataclasses.replace(evaluator.options, reconstruct=mode)
        evaluator._results.clear()
        result = evaluator.evaluate(policy)
        scores[mode] = result.accuracy
        assert result.macs < 0.6 * table.macs
    evaluator.options = dataclasses.replace(evaluator.options, reconstruct="sequential")
    assert scores["sequential"] >= scores["none"] + 0.05, scores
    assert scores["fast"] >= scores["none"] + 0.02, scores


def test_pruning_and_rank_combine_on_one_layer(digits_workload) -> None:  # type: ignore[no-untyped-def]
    table = digits_workload.table
    name = next(g.leader for g in table.groups if not g.protected and LowRank().applies_to(table.by_name[g.leader]))
    both = Policy("digits-cnn", layers={name: LayerSetting(keep=0.5, techniques={"rank": 0.5})})
    pruned = Policy("digits-cnn", layers={name: LayerSetting(keep=0.5)})
    assert both.macs(table) < pruned.macs(table)
    model = digits_workload.evaluator.pruned_copy(both)
    module = model.get_submodule(name)
    assert isinstance(module, LowRankModule)
    assert module.second.out_channels == both.kept_channels(table)[table.by_name[name].group]


def test_policy_documents_hold_techniques_and_refuse_bad_ones(digits_workload) -> None:  # type: ignore[no-untyped-def]
    table = digits_workload.table
    name = _inner(table)[0]
    policy = Policy("digits-cnn", layers={name: LayerSetting(keep=1.0, techniques={"rank": 0.5})})
    again = Policy.from_dict(json.loads(policy.to_json()))
    assert again == policy and again.layers[name].technique("rank") == 0.5
    assert "rank" not in Policy.from_dict({"model": "m", "layers": {name: {"rank": 1.0}}}).to_json()
    listed = r"may only hold keep, wbits, abits, rank, but has 'rnak'. Did you mean 'rank'\?"
    with pytest.raises(PolicyError, match=listed):
        Policy.from_dict({"model": "m", "layers": {name: {"rnak": 0.5}}})
    with pytest.raises(PolicyError, match=r"0 < rank <= 1 must hold, but got rank=0"):
        Policy.from_dict({"model": "m", "layers": {name: {"rank": 0}}})


class CenterTap(Technique):
    """A toy technique declared outside the package: below 0.5, a k×k convolution keeps only its centre tap."""

    name = "center"
    description = "k×k convolution → its 1×1 centre tap"

    def applies_to(self, layer: Layer) -> bool:
        return layer.kind == "conv" and layer.kernel_area > 1 and layer.groups == 1

    def shape(self, layer: Layer, shape: LayerShape, value: float) -> LayerShape:
        if value >= 0.5:
            return shape
        bias = shape.params - shape.out_channels * shape.in_channels * layer.kernel_area
        weights = shape.out_channels * shape.in_channels
        return dataclasses.replace(shape, macs=shape.macs // layer.kernel_area, params=weights + bias)

    def apply(self, module: nn.Module, layer: Layer, value: float) -> nn.Module:
        if value >= 0.5:
            return module
        assert isinstance(module, nn.Conv2d)
        tap = nn.Conv2d(module.in_channels, module.out_channels, 1, module.stride, bias=module.bias is not None)
        with torch.no_grad():
            kh, kw = module.kernel_size
            tap.weight.copy_(module.weight[:, :, kh // 2 : kh // 2 + 1, kw // 2 : kw // 2 + 1])
            if module.bias is not None:
                tap.bias.copy_(module.bias)
        return tap


def test_a_technique_from_outside_searches_exports_and_verifies(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(techniques, "_REGISTRY", dict(techniques._REGISTRY))  # the toy leaves with the test
    register_technique(CenterTap())
    space = tmp_path / "center.yaml"
    space.write_text("name: center\ndescription: centre taps\ntechniques:\n  center: {min: 0.1, max: 0.4}\n")
    config = SearchConfig(
        model="digits-cnn", dataset="digits", env="host", agent="random", space=str(space), episodes=6, seed=3
    )
    run = tmp_path / "run"
    SearchJob.create(config, run).run()
    best = json.loads((run / "best_policy.json").read_text())
    assert any(setting.get("center", 1.0) < 0.5 for setting in best["policy"]["layers"].values())
    assert best["macs_ratio"] < 0.5
    report = export_run(run, tmp_path / "export", ExportOptions())
    assert report["verification"]["passed"] and report["macs_ratio"] < 1.0
    model = load_exported(tmp_path / "export")
    assert any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())


def test_a_nested_package_refuses_a_replacement_it_cannot_refit_in_one_line(digits_workload, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # a technique whose module is not a FactoredModule keeps the layer's tensor names: nested, it would take the
    # union's slice by name (0.189 val accuracy against 0.961 refitted alone, measured 2026-12-05); refused instead
    from autocompress.compress.nesting import nested_models
    from autocompress.errors import AutoCompressError

    monkeypatch.setattr(techniques, "_REGISTRY", dict(techniques._REGISTRY))
    register_technique(CenterTap())
    table = digits_workload.table
    layer = next(name for name in _inner(table) if CenterTap().applies_to(table.by_name[name]))
    policies = [
        Policy("digits-cnn"),
        Policy("digits-cnn", layers={layer: LayerSetting(keep=0.5, techniques={"center": 0.2})}),
    ]
    with pytest.raises(AutoCompressError, match=f"configuration 1 replaces layer '{layer}' by a Conv2d") as caught:
        nested_models(digits_workload.evaluator, policies, "sequential")
    assert "\n" not in str(caught.value)


def test_apply_techniques_changes_only_the_named_layers(digits_workload) -> None:  # type: ignore[no-untyped-def]
    table = digits_workload.table
    name = _inner(table)[0]
    model = digits_workload.evaluator.pruner.prune({g.id: g.channels for g in table.groups})
    assert apply_techniques(model, table, {name: {"rank": 0.4}}) == 1
    assert [n for n, m in model.named_modules() if isinstance(m, LowRankModule)] == [name]


def test_a_split_at_a_factorised_layer_cuts_after_both_parts(digits_workload) -> None:  # type: ignore[no-untyped-def]
    evaluator, table = digits_workload.evaluator, digits_workload.table
    name = _inner(table)[0]
    assert name in [p.name for p in evaluator.cut_points]
    policy = Policy("digits-cnn", layers={name: LayerSetting(techniques={"rank": 0.5})}, split=name)
    compressed = evaluator.apply(policy)
    x = evaluator.val_inputs(None)[:16]
    with torch.no_grad():
        assert torch.allclose(compressed.tail(compressed.head(x)), compressed.model(x), atol=1e-5)
    assert isinstance(compressed.head.get_submodule(name), LowRankModule)
