import copy

import pytest
import torch

from autocompress.compress import LayerSetting, Policy, count_macs
from autocompress.compress.adaptation import drift_score, recalibrate_batchnorm, tent
from autocompress.compress.evaluator import EvaluatorOptions, PolicyEvaluator
from autocompress.data import Normalizer
from autocompress.data.shifts import Shift
from autocompress.models import load_model
from autocompress.models.training import evaluate_accuracy


@pytest.fixture(scope="module")
def digits_model():
    return load_model("digits-cnn", 10, (1, 8, 8), "digits", pretrained=True)


def test_drift_score_grows_with_shift(digits, digits_model) -> None:
    norm = Normalizer(digits.info)
    clean = drift_score(digits_model, norm(digits.val_x))
    scores = [drift_score(digits_model, norm(Shift("contrast", s).apply(digits.val_x))) for s in (1, 3, 5)]
    assert clean < scores[0] < scores[1] < scores[2]


def test_adabn_and_tent_touch_only_batchnorm(digits, digits_model) -> None:
    batches = [Normalizer(digits.info)(digits.train_x[:128])]
    for adapt in (recalibrate_batchnorm, tent):
        model = copy.deepcopy(digits_model)
        cost = adapt(model, batches)
        assert cost.forward_images >= 128 and not model.training
        assert torch.equal(model.conv1.weight, digits_model.conv1.weight)
        assert not torch.equal(model.bn1.running_mean, digits_model.bn1.running_mean)
    assert cost.backward_images == 128 and not torch.equal(model.bn1.weight, digits_model.bn1.weight)


def test_identity_policy_scores_like_plain_evaluation(digits, digits_model) -> None:
    evaluator = PolicyEvaluator(digits_model, digits.info, digits.val_x, digits.val_y, digits.train_x)
    result = evaluator.evaluate(Policy("digits-cnn"))
    assert result.accuracy == evaluate_accuracy(digits_model, digits.val_x, digits.val_y, digits.info)
    assert result.macs == 1_493_632 and evaluator.evaluate(Policy("digits-cnn")) is result


def test_pruned_policy_costs_match_the_pruned_model(digits, digits_model) -> None:
    evaluator = PolicyEvaluator(digits_model, digits.info, digits.val_x, digits.val_y, digits.train_x)
    policy = Policy("digits-cnn", LayerSetting(keep=0.5, wbits=4, abits=8), split="relu_1")
    result = evaluator.evaluate(policy)
    pruned = evaluator.pruned_copy(policy)
    assert result.macs == count_macs(pruned, (1, 8, 8)) < 0.5 * 1_493_632
    assert result.split_bytes == 16 * 8 * 8  # conv2 output keeps 16 of 32 channels, 8 bits each
    assert {"prune", "quantize", "split", "evaluate"} <= set(result.timings)
    assert 0.0 < result.accuracy <= 1.0


def test_bn_repair_is_optional_and_measured(digits, digits_model) -> None:
    policy = Policy("digits-cnn", LayerSetting(keep=0.5))
    results = {
        repair: PolicyEvaluator(
            digits_model,
            digits.info,
            digits.val_x,
            digits.val_y,
            digits.train_x,
            EvaluatorOptions(bn_repair=repair, reconstruct="none"),
        ).evaluate(policy)
        for repair in (True, False)
    }
    assert results[True].macs == results[False].macs
    assert results[True].accuracy != results[False].accuracy


@pytest.mark.slow
def test_adabn_recovers_noise_on_real_cifar(cifar) -> None:
    model = load_model("resnet20", 10, (3, 32, 32), "cifar10", pretrained=True)
    evaluator = PolicyEvaluator(model, cifar.info, cifar.val_x[:1000], cifar.val_y[:1000], cifar.train_x[:2048])
    shift = Shift("gaussian_noise", 3)
    none = evaluator.evaluate(Policy("resnet20"), shift).accuracy
    adabn = evaluator.evaluate(Policy("resnet20", adapt="adabn"), shift).accuracy
    assert adabn >= none + 0.05


def test_unsettled_batchnorm_statistics_are_a_visible_warning(digits, caplog) -> None:  # type: ignore[no-untyped-def]
    """Before: a model whose BatchNorm statistics do not fit its data gave drift 5.8 on clean data, silently."""
    from autocompress.compress.evaluator import PolicyEvaluator
    from autocompress.models import load_model

    model = load_model("digits-cnn", 10, digits.info.input_shape, "digits", pretrained=True)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean += 3.0  # statistics of some other data
    evaluator = PolicyEvaluator(model, digits.info, digits.val_x, digits.val_y, digits.train_x)
    with caplog.at_level("WARNING"):
        score = evaluator.drift(None)
    assert score > 1.0 and "drift score of clean validation data" in caplog.text
