from dataclasses import replace
from pathlib import Path

import pytest

from autocompress.compress import LayerSetting, Policy, build_layer_table
from autocompress.compress.layers import LayerShape
from autocompress.errors import AutoCompressError, ConfigError
from autocompress.hardware.cost_model import CostModel, LayerBits
from autocompress.hardware.profiles import DEVICES_DIR, LINKS_DIR, load_device, load_link, shipped
from autocompress.models import build_model


@pytest.fixture(scope="module")
def resnet():
    model = build_model("resnet20")
    return model, build_layer_table(model, (3, 32, 32))


def compute_only(name: str):
    """A profile whose layers are purely MAC-bound: no overheads, unlimited bandwidth."""
    return replace(load_device(name), layer_overhead_us=0.0, inference_overhead_us=0.0, memory_bandwidth_gbps=1e9)


def test_every_shipped_profile_loads() -> None:
    assert {
        "raspberry-pi-4",
        "jetson-nano",
        "snapdragon-439",
        "snapdragon-665",
        "snapdragon-730",
        "kirin-710",
        "kirin-810",
        "smartwatch",
        "mcu",
        "host",
        "edge-server",
    } <= set(shipped(DEVICES_DIR))
    assert set(shipped(LINKS_DIR)) == {"wifi", "lte", "ble", "ethernet"}
    for name in shipped(DEVICES_DIR):
        assert load_device(name).name == name
    for name in shipped(LINKS_DIR):
        assert load_link(name).uplink_mbps > 0


def test_halving_a_convs_channels_halves_its_mac_bound_time(resnet) -> None:
    model, table = resnet
    cost = CostModel.for_model(model, table, compute_only("raspberry-pi-4"))
    layer = table.by_name["layer1.0.conv1"]
    full = LayerShape(16, 16, layer.macs, layer.params, layer.in_elements, layer.out_elements)
    half = table.shapes({table.group_of("layer1.0.conv1").id: 8})[layer.index]
    bits = LayerBits(32, 32)
    assert half.macs * 2 == full.macs
    assert cost.layer_ms(layer, half, bits, cost.device) == pytest.approx(
        cost.layer_ms(layer, full, bits, cost.device) / 2
    )
    # hand-computed: 2,359,296 MACs at 48 GMAC/s x 0.40 efficiency = 0.12288 ms
    assert cost.layer_ms(layer, full, bits, cost.device) == pytest.approx(2_359_296 / (48e9 * 0.40) * 1e3)


def test_four_bit_weights_halve_storage_of_eight_bit(resnet) -> None:
    model, table = resnet
    cost = CostModel.for_model(model, table, load_device("raspberry-pi-4"))
    s8 = cost.predict_policy(Policy("resnet20", LayerSetting(wbits=8, abits=8))).storage_bytes
    s4 = cost.predict_policy(Policy("resnet20", LayerSetting(wbits=4, abits=8))).storage_bytes
    overhead = 8 * sum(layer.out_channels for layer in table.layers)
    assert s4 - overhead == pytest.approx((s8 - overhead) / 2, abs=1)


def test_int8_is_faster_only_where_the_profile_says(resnet) -> None:
    model, table = resnet
    for device, faster in (("raspberry-pi-4", True), ("jetson-nano", False)):
        cost = CostModel.for_model(model, table, compute_only(device))
        fp = cost.predict_policy(Policy("resnet20", LayerSetting(wbits=16, abits=16))).latency_ms
        int8 = cost.predict_policy(Policy("resnet20", LayerSetting(wbits=8, abits=8))).latency_ms
        assert (int8 < fp * 0.9) is faster
        four = cost.predict_policy(Policy("resnet20", LayerSetting(wbits=4, abits=8))).latency_ms
        assert four == pytest.approx(int8)  # sub-8-bit saves storage, not compute, on these profiles


def test_split_at_input_equals_full_offload(resnet) -> None:
    model, table = resnet
    edge, link = load_device("edge-server"), load_link("wifi")
    cost = CostModel.for_model(model, table, load_device("raspberry-pi-4"), link=link, edge=edge)
    offload = cost.predict_policy(Policy("resnet20", split="input"))
    on_edge = CostModel.for_model(model, table, edge).predict_policy(Policy("resnet20"))
    send_ms = 3072 * 8 / (link.uplink_mbps * 1e3) + 40 * 8 / (link.downlink_mbps * 1e3) + link.rtt_ms
    assert offload.sent_bytes == 3072
    assert offload.latency_ms == pytest.approx(0.2 + send_ms + on_edge.latency_ms)
    assert offload.radio_energy_mj > 0 and offload.peak_memory_bytes == 3072


def test_split_sends_the_cut_tensor_at_activation_bits(resnet) -> None:
    model, table = resnet
    cost = CostModel.for_model(
        model, table, load_device("raspberry-pi-4"), link=load_link("wifi"), edge=load_device("edge-server")
    )
    report = cost.predict_policy(Policy("resnet20", LayerSetting(wbits=8, abits=8), split="layer2_0_relu_1"))
    assert report.sent_bytes == 32 * 16 * 16 and report.device_ms < report.latency_ms


def test_mcu_rejects_a_net_whose_peak_memory_exceeds_384_kb() -> None:
    net = build_model("mobilenetv2")
    cost = CostModel.for_model(net, build_layer_table(net, (3, 32, 32)), load_device("mcu"))
    int8 = cost.predict_policy(Policy("mobilenetv2", LayerSetting(keep=0.75, wbits=4, abits=8)))
    fp16 = cost.predict_policy(Policy("mobilenetv2", LayerSetting(keep=0.75, wbits=4, abits=16)))
    assert int8.peak_memory_bytes <= 384 * 1024 < fp16.peak_memory_bytes
    assert int8.fits and not fp16.fits_ram and not fp16.fits
    digits = build_model("digits-cnn", 10, (1, 8, 8))
    digits_table = build_layer_table(digits, (1, 8, 8))
    small = CostModel.for_model(digits, digits_table, load_device("mcu")).predict_policy(
        Policy("digits-cnn", LayerSetting(wbits=8, abits=8))
    )
    # conv2 reads one 32x8x8 map and writes another: 2 x 2048 bytes at 8 bits
    assert small.fits and small.peak_memory_bytes == 2 * 32 * 8 * 8 and small.energy_mj > 0


def test_resnet20_peak_memory_counts_the_residual(resnet) -> None:
    model, table = resnet
    report = CostModel.for_model(model, table, load_device("mcu")).predict_policy(
        Policy("resnet20", LayerSetting(wbits=8, abits=8))
    )
    assert report.peak_memory_bytes == 3 * 16 * 32 * 32  # block input, conv output, and the skip tensor


def test_adaptation_is_charged(resnet) -> None:
    from autocompress.compress.adaptation import AdaptationCost

    model, table = resnet
    cost = CostModel.for_model(model, table, compute_only("raspberry-pi-4"))
    report = cost.predict_policy(Policy("resnet20"), AdaptationCost(forward_images=100))
    assert report.adapt_latency_ms == pytest.approx(100 * table.macs / (48e9 * 0.40) * 1e3)
    assert report.adapt_energy_mj == pytest.approx(report.adapt_latency_ms * 6.4)


def _broken(tmp_path: Path, find: str, replace_with: str) -> Path:
    text = (DEVICES_DIR / "raspberry-pi-4.yaml").read_text()
    assert find in text
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(find, replace_with))
    return path


@pytest.mark.parametrize(
    ("find", "replace_with", "message"),
    [
        ("memory_bandwidth_gbps: 4.4", "memory_bandwidth_gbps: -4.4", "memory_bandwidth_gbps > 0 must hold"),
        ("memory_bandwidth_gbps: 4.4", "memory_bandwidth_gbps: '4.4 GB/s'", "memory_bandwidth_gbps must be a number"),
        ("active_power_w: 6.4", "", "the required key 'active_power_w' is missing"),
        ("idle_power_w: 2.7", "idle_power_w: 2.7\nidle_powr_w: 1", "unknown key 'idle_powr_w'"),
        ("kind: cpu", "kind: cpy", "Did you mean 'cpu'"),
    ],
)
def test_broken_profile_names_file_and_field(tmp_path: Path, find: str, replace_with: str, message: str) -> None:
    path = _broken(tmp_path, find, replace_with)
    with pytest.raises(ConfigError) as info:
        load_device(str(path))
    assert str(path) in str(info.value) and message in str(info.value) and "\n" not in str(info.value)


def test_unknown_profile_suggests() -> None:
    with pytest.raises(AutoCompressError, match="Did you mean 'raspberry-pi-4'"):
        load_device("raspbery-pi-4")


def _profile_with(tmp_path: Path, old: str, new: str) -> Path:
    text = (DEVICES_DIR / "raspberry-pi-4.yaml").read_text()
    assert old in text
    path = tmp_path / "board.yaml"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("legal_wbits: [2, 4, 8, 16, 32]", "legal_wbits: [8, 12, 32]", "legal_wbits must be a non-empty list of 2,"),
        ("legal_wbits: [2, 4, 8, 16, 32]", "legal_wbits: []", "legal_wbits must be a non-empty list"),
    ],
)
def test_device_bit_widths_are_checked_when_the_profile_loads(tmp_path: Path, old: str, new: str, message: str) -> None:
    """Before: [8, 12, 32] loaded and failed at episode 0 of a search; [] silently turned the bit search off."""
    with pytest.raises(ConfigError, match=message) as caught:
        load_device(str(_profile_with(tmp_path, old, new)))
    assert "board.yaml" in str(caught.value)


def test_fp16_slower_than_fp32_is_a_visible_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = "  # no fp16 arithmetic on ARMv8.0: fp16 layers run at fp32 speed (fallback)"
    with caplog.at_level("WARNING"):
        load_device(str(_profile_with(tmp_path, old, "  fp16: 12.0")))
    assert "peak_gmacs.fp16 (12) is below fp32 (48)" in caplog.text


def test_the_edge_returns_one_logit_per_class() -> None:
    """Before: the downlink always carried 10 logits, whatever the classifier."""
    link = load_link("ble")
    costs = []
    for classes in (10, 1000):
        net = build_model("resnet20", classes, (3, 32, 32))
        table = build_layer_table(net, (3, 32, 32))
        cost = CostModel.for_model(
            net, table, load_device("raspberry-pi-4"), link=link, edge=load_device("edge-server")
        )
        costs.append(cost.predict_policy(Policy("resnet20", split="input")).link_ms)
    assert costs[1] - costs[0] == pytest.approx(990 * 4 * 8 / (link.downlink_mbps * 1e3))


def test_a_factorised_layer_is_priced_as_its_two_operations(resnet) -> None:
    model, table = resnet
    device = compute_only("raspberry-pi-4")
    cost = CostModel.for_model(model, table, device)
    name = table.names[3]  # a 3×3 convolution inside the network
    whole = cost.predict_policy(Policy("resnet20"))
    half = cost.predict_policy(Policy("resnet20", layers={name: LayerSetting(techniques={"rank": 0.5})}))
    shape = Policy("resnet20", layers={name: LayerSetting(techniques={"rank": 0.5})}).shapes(table)[3]
    (first_op, first), (second_op, second) = shape.parts
    assert first_op == "conv_kxk" and second_op == "conv_1x1" and first + second == shape.macs
    layer = table.layers[3]
    seconds = {op: macs / (device.throughput_gmacs(op, "fp32", 32) * 1e9) for op, macs in shape.parts}
    was = layer.macs / (device.throughput_gmacs("conv_kxk", "fp32", 32) * 1e9)
    assert half.latency_ms == pytest.approx(whole.latency_ms - (was - sum(seconds.values())) * 1e3)
    assert half.storage_bytes < whole.storage_bytes
