"""Datasets, shaped like the data flow: loaders return a :class:`DataBundle`
(:mod:`.base`; one loader per dataset family, each ``@register_dataset``), :mod:`.prepare` makes
the labels and the split of a run, :mod:`.batching` plans each epoch (order, sharding, balanced
subsets) and yields :class:`Batch` es from one of two stores, :mod:`.memory` (tensors) or
:mod:`.filestream` (image files, decoded and checked by :mod:`.files`), with the batched views of
:mod:`.transforms`; :mod:`.pipeline` pairs them for a bundle."""
from .base import DataBundle, DataError
from .batching import LAST_BATCH, BalancedSubset, Batch, EpochPlan, EvalBatches, TrainBatches, balanced_subset, batch_bounds
from .cifar import RestrictedUnpickler, safe_load_pickle
from .filestream import FileDataBundle, FileImages, FileStore
from .idx import read_idx
from .memory import TensorStore
from .pipeline import eval_split_names, example_paths, make_eval_batches, make_train_batches
from .registry import list_datasets, load_dataset, register_dataset
from .transforms import (
    VIEW_RECIPES,
    CropFlipNormalize,
    Normalize,
    SimCLRAugment,
    StandardAugment,
    color_jitter,
    eval_transform,
    random_crop,
    random_grayscale,
    random_hflip,
    resized_crop,
    view_transform,
)

# loaders (@register_dataset) and views (@register_view) register themselves when their registry
# (noisylab.registry.DATASETS, VIEWS) is first read: it imports every module of this package

__all__ = [
    "DataBundle", "DataError", "Batch", "EpochPlan", "TrainBatches", "EvalBatches", "LAST_BATCH", "batch_bounds",
    "BalancedSubset", "balanced_subset", "TensorStore", "FileStore", "FileDataBundle", "FileImages",
    "list_datasets", "load_dataset", "register_dataset",
    "make_train_batches", "make_eval_batches", "eval_split_names", "example_paths",
    "Normalize", "StandardAugment", "eval_transform", "random_crop", "random_hflip",
    "CropFlipNormalize", "SimCLRAugment", "VIEW_RECIPES", "view_transform", "resized_crop",
    "color_jitter", "random_grayscale",
    "RestrictedUnpickler", "safe_load_pickle", "read_idx",
]
