"""Model zoo: names built in code, ``torchvision:<name>`` and ``package.module:factory`` specs, pretrained weights."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from autocompress.errors import AutoCompressError, unknown_name_error
from autocompress.files import why
from autocompress.models.cifar_nets import CifarMobileNetV2, CifarResNet, CifarVGG, DigitsCNN, SensorCNN
from autocompress.plugins import import_object

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"


@dataclass(frozen=True)
class ZooEntry:
    """A network built in code and the dataset it is meant for."""

    name: str
    factory: Callable[..., nn.Module]
    default_dataset: str
    description: str
    input_rank: int = 3  # C×H×W images; 2 for C×L sequences


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in [
        ZooEntry("resnet20", partial(CifarResNet, 20), "cifar10", "CIFAR ResNet-20 (He et al. 2016)"),
        ZooEntry("resnet32", partial(CifarResNet, 32), "cifar10", "CIFAR ResNet-32"),
        ZooEntry("resnet56", partial(CifarResNet, 56), "cifar10", "CIFAR ResNet-56"),
        ZooEntry("vgg11", partial(CifarVGG, "vgg11"), "cifar10", "VGG-11 with BatchNorm for 32x32"),
        ZooEntry("vgg16", partial(CifarVGG, "vgg16"), "cifar10", "VGG-16 with BatchNorm for 32x32"),
        ZooEntry("mobilenetv2", CifarMobileNetV2, "cifar10", "MobileNetV2 for 32x32 (stride adapted)"),
        ZooEntry("digits-cnn", DigitsCNN, "digits", "small 4-conv CNN for 8x8 digits"),
        ZooEntry("sensor-cnn", SensorCNN, "basic-motions", "small 4-conv 1-D CNN for sensor windows (C×L)", 2),
    ]
}


def _torchvision_model(name: str, num_classes: int, input_size: int) -> nn.Module:
    try:
        import torchvision.models as tvm
    except ImportError:
        raise AutoCompressError(
            f"model 'torchvision:{name}' needs torchvision; install it with pip install 'autocompress[vision]'."
        ) from None
    available = tvm.list_models(module=tvm)
    if name not in available:
        raise unknown_name_error("a torchvision model", name, available)
    model = tvm.get_model(name, weights=None, num_classes=num_classes)
    if input_size <= 64:
        _adapt_stem_for_small_inputs(model)
    return model


def _adapt_stem_for_small_inputs(model: nn.Module) -> None:
    """Keep the spatial resolution of small (≤ 64 px) inputs in ImageNet stems.

    ResNets get a 3×3 stride-1 stem without max-pool; stems that open with a stride-2 3×3 convolution (MobileNetV2,
    MobileNetV3, EfficientNet, RegNet) get stride 1 there, as the CIFAR versions of those networks do.
    """
    conv1 = getattr(model, "conv1", None)
    if isinstance(conv1, nn.Conv2d) and conv1.kernel_size == (7, 7):
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)
        if hasattr(model, "maxpool"):
            model.maxpool = nn.Identity()
        return
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.kernel_size == (3, 3) and first.stride == (2, 2):
        first.stride = (1, 1)


def _user_model(spec: str, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Call a user's factory with what it asks for by name: ``num_classes``, ``in_channels``, ``input_shape``."""
    factory = import_object(spec, "a user model (package.module:factory)", "mypkg.nets:build")
    offered = {"num_classes": num_classes, "in_channels": input_shape[0], "input_shape": tuple(input_shape)}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]  # a builtin or C callable: call it bare
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offered.items() if k in params or takes_all}
    try:
        model = factory(**kwargs)
    except (Exception, SystemExit) as exc:
        what = f"exited (SystemExit {exc.code})" if isinstance(exc, SystemExit) else f"raised {type(exc).__name__}"
        raise AutoCompressError(
            f"the model factory '{spec}' must return a torch.nn.Module when called with "
            f"{', '.join(f'{k}={v}' for k, v in kwargs.items()) or 'no arguments'}, but it {what}: "
            f"{str(exc)[:150]}; it may take num_classes, in_channels and input_shape by name.",
            params=("model",),
        ) from None
    if not isinstance(model, nn.Module):
        raise AutoCompressError(
            f"the factory '{spec}' must return a torch.nn.Module, but returned {type(model).__name__}."
        )
    return model


def build_model(spec: str, num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32)) -> nn.Module:
    """Build a model from a zoo name, ``torchvision:<name>`` or ``package.module:factory``.

    Args:
        spec: The model's name or spec.
        num_classes: Outputs of the classifier.
        input_shape: C×H×W (images) or C×L (sequences) of the inputs; sets the zoo models' input channels and the
            torchvision stem adaptation.
    """
    kind = "images (C×H×W)" if len(input_shape) == 3 else "sequences (C×L)"
    if spec.startswith("torchvision:"):
        if len(input_shape) != 3:
            raise AutoCompressError(
                f"torchvision models take images (C×H×W), but the dataset holds {kind}; use sensor-cnn or a "
                "package.module:factory of your own.",
                params=("model",),
            )
        return _torchvision_model(spec.split(":", 1)[1], num_classes, input_shape[1])
    if ":" in spec:
        return _user_model(spec, num_classes, input_shape)
    if spec not in ZOO:
        raise unknown_name_error("model", spec, ZOO)
    entry = ZOO[spec]
    if entry.input_rank != len(input_shape):
        fitting = sorted(name for name, e in ZOO.items() if e.input_rank == len(input_shape))
        raise AutoCompressError(
            f"model '{spec}' takes {'images (C×H×W)' if entry.input_rank == 3 else 'sequences (C×L)'}, but the "
            f"dataset holds {kind}; use one of {', '.join(fitting)} or a package.module:factory of your own.",
            params=("model",),
        )
    return entry.factory(num_classes=num_classes, in_channels=input_shape[0])


def _manifest() -> dict[str, dict[str, object]]:
    if not MANIFEST.exists():
        return {}
    data: dict[str, dict[str, object]] = json.loads(MANIFEST.read_text())
    return data


def pretrained_key(model: str, dataset: str) -> str:
    """Key of a pretrained weight file in the manifest."""
    return f"{model}-{dataset}"


def has_pretrained(model: str, dataset: str) -> bool:
    """Whether weights for ``model`` trained on ``dataset`` ship with the package."""
    return pretrained_key(model, dataset) in _manifest()


def pretrained_record(model: str, dataset: str) -> dict[str, object]:
    """The manifest record (file, sha256, accuracy, command) of a shipped weight file."""
    manifest = _manifest()
    key = pretrained_key(model, dataset)
    if key not in manifest:
        shipped = ", ".join(sorted(manifest)) or "none"
        raise AutoCompressError(
            f"pretrained needs shipped weights for model '{model}' on dataset '{dataset}', but only these ship: "
            f"{shipped}; train your own (autocompress train) and pass its file as weights.",
            params=("pretrained", "weights"),
        )
    return manifest[key]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_weights(model: nn.Module, path: str | Path, expected_sha256: str | None = None) -> nn.Module:
    """Load a state dict (or a training checkpoint holding one) into ``model`` with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise AutoCompressError(f"a weights file must exist, but '{path}' does not; check the path.")
    if expected_sha256 and sha256_of(path) != expected_sha256:
        raise AutoCompressError(f"'{path}' must have sha256 {expected_sha256}, but it differs; reinstall the package.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AutoCompressError(
            f"a weights file must be a state dict saved with torch.save (loaded weights-only: no code runs), but "
            f"'{path}' is not ({why(exc, 40)}); check it is the file training wrote.",
            params=("weights",),
        ) from None
    if not isinstance(state, dict):
        raise AutoCompressError(
            f"a weights file must hold a state dict, but '{path}' holds a {type(state).__name__}.", params=("weights",)
        )
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise AutoCompressError(
            f"the weights in '{path}' must match the model's layers, but they do not ({first})."
        ) from None
    return model


def load_pretrained(model: nn.Module, name: str, dataset: str) -> nn.Module:
    """Load the shipped weights of ``name`` trained on ``dataset`` into ``model``, verifying their sha256."""
    record = pretrained_record(name, dataset)
    return load_weights(model, WEIGHTS_DIR / str(record["file"]), str(record["sha256"]))


def load_model(
    spec: str,
    num_classes: int,
    input_shape: tuple[int, ...],
    dataset: str,
    pretrained: bool = False,
    weights: str | Path | None = None,
) -> nn.Module:
    """Build a model and load shipped (``pretrained``) or user (``weights``) weights into it, in eval mode."""
    if pretrained and weights:
        raise AutoCompressError("pass either pretrained or weights, not both.", params=("pretrained", "weights"))
    model = build_model(spec, num_classes, input_shape)
    if pretrained:
        load_pretrained(model, spec, dataset)
    elif weights:
        load_weights(model, weights)
    return model.eval()
