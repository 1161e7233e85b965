import copy

import pytest
import torch

from autocompress.compress import LayerSetting, Policy, build_layer_table
from autocompress.compress.evaluator import PolicyEvaluator
from autocompress.compress.graph import cut_points
from autocompress.compress.quantization import (
    ActivationQuantizer,
    fake_quantize_activation,
    quantize_weight,
    storage_bytes,
)
from autocompress.compress.split import split_model
from autocompress.errors import PolicyError
from autocompress.models import build_model, load_model


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_levels_and_error_shrink_with_bits(bits: int) -> None:
    w = torch.randn(8, 16, 3, 3, generator=torch.Generator().manual_seed(0))
    q = quantize_weight(w, bits)
    for channel in q:
        assert channel.unique().numel() <= 2**bits - 1
    if bits < 8:
        assert (quantize_weight(w, bits + 1) - w).pow(2).mean() < (q - w).pow(2).mean()


def test_sixteen_and_thirty_two_bits() -> None:
    w = torch.randn(4, 4)
    assert torch.equal(quantize_weight(w, 32), w)
    assert torch.equal(quantize_weight(w, 16), w.half().float())


def test_activation_fake_quant_has_256_levels_over_its_range() -> None:
    x = torch.linspace(-1, 3, 10000)
    q = fake_quantize_activation(x, 8, (-1.0, 3.0))
    assert q.unique().numel() <= 256 and (q - x).abs().max() <= 4 / 255


def test_activation_quantizer_calibrates_ranges(digits) -> None:
    model = load_model("digits-cnn", 10, (1, 8, 8), "digits", pretrained=True)
    quantizer = ActivationQuantizer(model, {"conv2": 8, "fc": 32})
    quantizer.calibrate(model, [torch.randn(16, 1, 8, 8)])
    assert set(quantizer.ranges) == {"conv2"} and quantizer.ranges["conv2"][1] > 0
    quantizer.remove()


def test_four_bit_weights_halve_weight_storage_of_eight_bit() -> None:
    table = build_layer_table(build_model("resnet20"), (3, 32, 32))
    shapes = table.shapes({})
    s8 = storage_bytes(table, shapes, {layer.name: 8 for layer in table.layers})
    s4 = storage_bytes(table, shapes, {layer.name: 4 for layer in table.layers})
    assert s8.weight_bytes == 2 * s4.weight_bytes == table.params - 10  # fc has 10 bias values
    assert s8.overhead_bytes == s4.overhead_bytes == 8 * sum(layer.out_channels for layer in table.layers)


def test_eight_bit_loses_at_most_half_a_point_on_digits(digits) -> None:
    model = load_model("digits-cnn", 10, (1, 8, 8), "digits", pretrained=True)
    evaluator = PolicyEvaluator(model, digits.info, digits.test_x, digits.test_y, digits.train_x)
    full = evaluator.evaluate(Policy("digits-cnn")).accuracy
    int8 = evaluator.evaluate(Policy("digits-cnn", LayerSetting(wbits=8, abits=8))).accuracy
    assert int8 >= full - 0.005


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("resnet20", (3, 32, 32)),
        pytest.param("mobilenetv2", (3, 32, 32), marks=pytest.mark.slow),
        ("digits-cnn", (1, 8, 8)),
        ("sensor-cnn", (6, 100)),
    ],
)
def test_every_cut_point_splits_exactly(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, 10, shape).eval()
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    points = cut_points(model, shape)
    assert len(points) > 5
    with torch.no_grad():
        expected = model(x)
        for point in points:
            head, tail = split_model(model, point.name)
            crossing = head(x)
            assert tuple(crossing.shape[1:]) == point.shape
            assert torch.equal(tail(crossing), expected), point.name


def test_pruned_model_keeps_its_cut_points() -> None:
    model = build_model("resnet20").eval()
    evaluator_points = {p.name for p in cut_points(model, (3, 32, 32))}
    table = build_layer_table(model, (3, 32, 32))
    from autocompress.compress import ChannelPruner

    pruned = ChannelPruner(model, table).prune(table.kept_channels({g.id: 0.5 for g in table.groups}))
    assert {p.name for p in cut_points(pruned, (3, 32, 32))} == evaluator_points


def test_unknown_cut_point_suggests() -> None:
    with pytest.raises(PolicyError, match="Did you mean 'layer1_0_relu_1'"):
        split_model(copy.deepcopy(build_model("resnet20")), "layer1_0_relu1")
