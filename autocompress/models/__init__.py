"""The model zoo, user and torchvision models, and pretrained weights."""

from autocompress.models.zoo import (
    ZOO,
    build_model,
    has_pretrained,
    load_model,
    load_pretrained,
    load_weights,
    pretrained_record,
)

__all__ = ["ZOO", "build_model", "has_pretrained", "load_model", "load_pretrained", "load_weights", "pretrained_record"]
