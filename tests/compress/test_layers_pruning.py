import pytest
import torch
from torch import nn

from autocompress.compress import ChannelPruner, LayerSetting, Policy, build_layer_table, count_macs
from autocompress.compress.layers import round_channels
from autocompress.errors import AutoCompressError
from autocompress.models import build_model

SHAPE = (3, 32, 32)


def test_resnet20_table_couples_residual_convs() -> None:
    table = build_layer_table(build_model("resnet20"), SHAPE)
    assert len(table.layers) == 22 and len(table.groups) == 12
    assert table.macs == count_macs(build_model("resnet20"), SHAPE) == 40_813_184
    stem = table.group_of("conv1")
    assert stem is not None and stem.protected
    assert set(stem.members) == {"conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"}
    stage2 = table.group_of("layer2.0.shortcut.0")
    assert stage2 is not None and stage2.leader == "layer2.0.conv2" and not stage2.protected
    assert table.by_name["fc"].group is None and table.by_name["fc"].in_group == table.group_of("layer3.0.conv2").id


def test_depthwise_convs_follow_their_expansion() -> None:
    table = build_layer_table(build_model("mobilenetv2"), SHAPE)
    dw = next(layer for layer in table.layers if layer.kind == "depthwise" and layer.name.startswith("features.4."))
    group = table.group_of(dw.name)
    assert group is not None and group.leader == "features.4.conv.0" and dw.in_group == group.id


@pytest.mark.parametrize(
    ("channels", "keep", "round_to", "expected"),
    [(64, 0.5, 1, 32), (64, 0.3, 8, 16), (64, 0.01, 8, 8), (6, 0.5, 8, 6), (16, 1.0, 8, 16)],
)
def test_round_channels(channels: int, keep: float, round_to: int, expected: int) -> None:
    assert round_channels(channels, keep, round_to) == expected


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "vgg11", "torchvision:resnet18"])
def test_pruned_macs_and_params_equal_the_table_prediction(name: str) -> None:
    model = build_model(name, 10, SHAPE)
    table = build_layer_table(model, SHAPE)
    kept = table.kept_channels(Policy(name, default=LayerSetting(keep=0.5)).group_keep(table), round_to=1)
    pruned = ChannelPruner(model, table).prune(kept)
    predicted = table.shapes(kept)
    assert count_macs(pruned, SHAPE) == sum(s.macs for s in predicted)
    modules = dict(pruned.named_modules())
    for layer, shape in zip(table.layers, predicted, strict=True):
        assert sum(p.numel() for p in modules[layer.name].parameters()) == shape.params
    assert pruned.eval()(torch.zeros(2, *SHAPE)).shape == (2, 10)
    assert sum(p.numel() for p in pruned.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())


def test_l1_and_l2_keep_the_strongest_channels() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([0.1, 3.0, 0.2, 2.0]).view(4, 1, 1, 1).expand(4, 1, 3, 3))
        model[2].weight.fill_(0.01)
    table = build_layer_table(model, (1, 8, 8), protect=set())
    group = table.group_of("0")
    assert group is not None
    for criterion in ("l1", "l2"):
        pruned = ChannelPruner(model, table, criterion).prune({group.id: 2})
        assert sorted(pruned[0].weight[:, 0, 0, 0].tolist()) == pytest.approx([2.0, 3.0])
    pruned = ChannelPruner(model, table).prune({group.id: 2})
    assert pruned[3 + 1].in_features == 2 * 4 * 4  # the linear after the flatten is unaffected (group 0 feeds conv 2)


def test_unknown_criterion_is_rejected() -> None:
    model = build_model("digits-cnn", 10, (1, 8, 8))
    with pytest.raises(AutoCompressError, match="Did you mean 'l1'"):
        ChannelPruner(model, build_layer_table(model, (1, 8, 8)), "l11")
