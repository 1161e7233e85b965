"""Datasets (built-in, files, plugins), deterministic splits, the batched input pipeline and domain shifts."""

from autocompress.data.datasets import DATASETS, DatasetInfo, DatasetSplits, canonical_ref, dataset_info, load_dataset
from autocompress.data.loader import BatchIterator, Normalizer, augment_batch, random_crop_flip, random_time_shift
from autocompress.data.sources import DatasetSpec

__all__ = [
    "DATASETS",
    "BatchIterator",
    "DatasetInfo",
    "DatasetSpec",
    "DatasetSplits",
    "Normalizer",
    "augment_batch",
    "canonical_ref",
    "dataset_info",
    "load_dataset",
    "random_crop_flip",
    "random_time_shift",
]
