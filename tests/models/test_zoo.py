import sys
import textwrap
from pathlib import Path

import pytest
import torch

from autocompress.compress.layers import count_macs
from autocompress.data import dataset_info
from autocompress.errors import AutoCompressError
from autocompress.models import ZOO, build_model, load_model, load_weights


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_run_on_their_dataset_shape(name: str) -> None:
    shape = dataset_info(ZOO[name].default_dataset).input_shape
    model = build_model(name, 10, shape).eval()
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_resnet20_matches_the_paper() -> None:
    model = build_model("resnet20")
    params = sum(p.numel() for p in model.parameters())
    assert 0.265e6 < params < 0.275e6
    assert 40e6 < count_macs(model, (3, 32, 32)) < 42e6


def test_torchvision_resnet_gets_a_small_input_stem() -> None:
    model = build_model("torchvision:resnet18", 10, (3, 32, 32))
    assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, torch.nn.Identity)
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_unknown_torchvision_model_suggests() -> None:
    with pytest.raises(AutoCompressError, match="Did you mean 'resnet18'"):
        build_model("torchvision:resnet81")


def test_user_factory_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mynets.py").write_text(
        textwrap.dedent(
            """
            import torch
            def tiny(num_classes=10):
                return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))
            def not_a_model():
                return 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert build_model("mynets:tiny", 4, (1, 8, 8))(torch.zeros(1, 1, 8, 8)).shape == (1, 4)
    with pytest.raises(AutoCompressError, match="must return a torch.nn.Module"):
        build_model("mynets:not_a_model")
    with pytest.raises(AutoCompressError, match="package.module:factory"):
        build_model("mynets:missing")
    sys.modules.pop("mynets", None)


def test_unknown_model_suggests_the_nearest() -> None:
    with pytest.raises(AutoCompressError, match="Did you mean 'resnet20'"):
        build_model("resnet-20")


def test_pretrained_digits_weights_load_and_classify(digits) -> None:
    from autocompress.models.training import evaluate_accuracy

    model = load_model("digits-cnn", 10, (1, 8, 8), "digits", pretrained=True)
    assert evaluate_accuracy(model, digits.test_x, digits.test_y, digits.info) >= 0.95


def test_missing_pretrained_weights_say_what_ships() -> None:
    with pytest.raises(AutoCompressError, match="only these ship: .*resnet20-cifar10"):
        load_model("resnet56", 10, (3, 32, 32), "cifar10", pretrained=True)


def test_mismatched_weights_give_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(build_model("resnet20").state_dict(), path)
    with pytest.raises(AutoCompressError, match="must match the model's layers"):
        load_weights(build_model("resnet32"), path)


def test_corrupted_shipped_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(build_model("digits-cnn", 10, (1, 8, 8)).state_dict(), path)
    with pytest.raises(AutoCompressError, match="must have sha256"):
        load_weights(build_model("digits-cnn", 10, (1, 8, 8)), path, expected_sha256="0" * 64)


def test_a_model_refuses_inputs_of_the_other_rank() -> None:
    with pytest.raises(AutoCompressError, match="takes images .* but the dataset holds sequences"):
        build_model("resnet20", 4, (6, 100))
    with pytest.raises(AutoCompressError, match="takes sequences"):
        build_model("sensor-cnn", 10, (3, 32, 32))


def test_sensor_cnn_is_a_small_conv1d_net() -> None:
    model = build_model("sensor-cnn", 4, (6, 100)).eval()
    assert model(torch.zeros(3, 6, 100)).shape == (3, 4)
    assert isinstance(model.conv1, torch.nn.Conv1d) and sum(p.numel() for p in model.parameters()) < 40_000


def test_torchvision_stride2_stems_keep_small_inputs_at_full_resolution() -> None:
    pytest.importorskip("torchvision")
    model = build_model("torchvision:mobilenet_v3_small", 10, (3, 32, 32)).eval()
    assert model.features(torch.zeros(1, 3, 32, 32)).shape[-1] == 2  # was 1×1 with the stride-2 stem
