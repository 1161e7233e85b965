"""Datasets (digits, CIFAR-10), deterministic splits, the batched input pipeline and domain shifts."""

from autocompress.data.datasets import DATASETS, DatasetInfo, DatasetSplits, dataset_info, load_dataset
from autocompress.data.loader import BatchIterator, Normalizer, random_crop_flip

__all__ = [
    "DATASETS",
    "BatchIterator",
    "DatasetInfo",
    "DatasetSplits",
    "Normalizer",
    "dataset_info",
    "load_dataset",
    "random_crop_flip",
]
