"""Compression primitives: layer table, structured pruning, quantization, split, adaptation, and the Policy."""

from autocompress.compress.layers import ChannelGroup, Layer, LayerTable, build_layer_table, count_macs
from autocompress.compress.policy import LayerSetting, Policy
from autocompress.compress.pruning import ChannelPruner

__all__ = [
    "ChannelGroup",
    "ChannelPruner",
    "Layer",
    "LayerSetting",
    "LayerTable",
    "Policy",
    "build_layer_table",
    "count_macs",
]
