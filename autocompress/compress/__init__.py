"""Compression primitives: layer table, structured pruning, techniques (low-rank factorisation and your own),
quantization, split, adaptation, and the Policy."""

from autocompress.compress.layers import ChannelGroup, Layer, LayerTable, build_layer_table, count_macs
from autocompress.compress.policy import LayerSetting, Policy
from autocompress.compress.pruning import ChannelPruner
from autocompress.compress.techniques import FactoredModule, LowRank, Technique, register_technique, technique_names

__all__ = [
    "ChannelGroup",
    "ChannelPruner",
    "FactoredModule",
    "Layer",
    "LayerSetting",
    "LayerTable",
    "LowRank",
    "Policy",
    "Technique",
    "build_layer_table",
    "count_macs",
    "register_technique",
    "technique_names",
]
