import json
from pathlib import Path

import pytest

from autocompress.compress import LayerSetting, Policy, build_layer_table
from autocompress.errors import PolicyError
from autocompress.models import build_model


@pytest.fixture(scope="module")
def table():
    return build_layer_table(build_model("resnet20"), (3, 32, 32))


def test_json_round_trip(tmp_path: Path) -> None:
    policy = Policy(
        "resnet20", LayerSetting(0.8, 8, 8), {"layer1.0.conv1": LayerSetting(0.5, 4, 8)}, "layer2_0_relu_1", "adabn"
    )
    path = tmp_path / "p.json"
    policy.save(path)
    assert Policy.load(path) == policy
    assert json.loads(path.read_text())["layers"]["layer1.0.conv1"] == {"keep": 0.5, "wbits": 4, "abits": 8}


def test_leader_keep_decides_the_group(table) -> None:
    policy = Policy("resnet20", LayerSetting(keep=0.5), {"layer2.0.conv2": LayerSetting(keep=0.25)})
    keep = policy.group_keep(table)
    assert keep[table.group_of("layer2.1.conv2").id] == 0.25
    assert keep[table.group_of("layer1.0.conv1").id] == 0.5


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"model": "resnet20", "layers": {"layer1.0.conv_1": {"keep": 0.5}}}, "Did you mean 'layer1.0.conv1'"),
        ({"model": "resnet20", "default": {"keep": 1.3}}, "0 < keep <= 1 must hold, but got keep=1.3"),
        ({"model": "resnet20", "default": {"keep": 0}}, "0 < keep <= 1"),
        ({"model": "resnet20", "default": {"wbits": 9}}, "wbits must be an integer among"),
        ({"model": "resnet20", "default": {"wbits": 8.0}}, "wbits must be an integer among"),
        ({"model": "resnet20", "default": {"keep": True}}, "0 < keep <= 1 must hold"),
        ({"model": "resnet20", "split": 99}, "split must be null"),
        ({"model": "resnet20", "default": {"abits": 4}}, "abits must be an integer among [8, 16, 32]"),
        ({"model": "resnet20", "default": {"kep": 0.5}}, "Did you mean 'keep'"),
        ({"model": "resnet20", "adapt": "adbn"}, "Did you mean 'adabn'"),
        ({"model": "resnet20", "splitt": None}, "Did you mean 'split'"),
        ({"default": {}}, "must name its 'model'"),
        ({"model": "resnet20", "layers": {"fc": {"keep": 0.5}}}, "layer 'fc' must keep all its output channels"),
        ({"model": "resnet20", "layers": {"layer2.1.conv2": {"keep": 0.5}}}, "set keep on 'layer2.0.conv2' only"),
        ({"model": "resnet20", "split": "layer9"}, "split must be null, 'input' or a valid cut point"),
        ({"model": "resnet20", "round_to": 0}, "round_to >= 1"),
    ],
)
def test_invalid_policies_name_the_problem(table, policy: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Policy.from_dict(policy).validate(table, ["layer1_0_relu_1"])


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="must exist"):
        Policy.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(PolicyError, match="must be valid JSON, but line 1"):
        Policy.load(bad)
