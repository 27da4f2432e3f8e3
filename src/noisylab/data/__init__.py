"""Datasets: loaders returning :class:`DataBundle` records, and the batched input pipeline."""
from .base import (
    Batch,
    DataBundle,
    DataError,
    EvalBatches,
    Normalize,
    StandardAugment,
    TrainBatches,
    eval_transform,
    random_crop,
    random_hflip,
)
from .registry import list_datasets, load_dataset, register_dataset
from .augment import (
    CropFlipNormalize,
    MultiView,
    SimCLRAugment,
    color_jitter,
    random_grayscale,
    resized_crop,
    VIEW_RECIPES,
    view_transform,
)
from .cifar import RestrictedUnpickler, safe_load_pickle
from .files import FileDataBundle, FileEvalBatches, FileImages, FileTrainBatches, is_file_backed
from .idx import read_idx
from .pipeline import build_train_transform, eval_split_names, example_paths, make_eval_batches, make_train_batches
from .sampling import BalancedSubset, balanced_subset

# loaders (@register_dataset) and views (@register_view) register themselves when their registry
# (noisylab.registry.DATASETS, VIEWS) is first read: it imports every module of this package

__all__ = [
    "Batch", "DataBundle", "DataError", "EvalBatches", "Normalize", "StandardAugment", "TrainBatches",
    "eval_transform", "random_crop", "random_hflip",
    "list_datasets", "load_dataset", "register_dataset",
    "make_train_batches", "make_eval_batches", "build_train_transform", "eval_split_names", "example_paths",
    "FileDataBundle", "FileImages", "FileTrainBatches", "FileEvalBatches", "is_file_backed",
    "BalancedSubset", "balanced_subset",
    "CropFlipNormalize", "SimCLRAugment", "MultiView", "VIEW_RECIPES", "view_transform", "resized_crop",
    "color_jitter", "random_grayscale",
    "RestrictedUnpickler", "safe_load_pickle", "read_idx",
]
