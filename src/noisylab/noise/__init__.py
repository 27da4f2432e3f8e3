"""Label noise: simulate it (symmetric, asymmetric, pair-flip, instance-dependent, any
transition matrix), load real human noise (CIFAR-10N / CIFAR-100N), save and report it.

Entry point: :func:`make_noisy_labels` returns a :class:`NoisyLabels` record (noisy and clean
labels, ``is_noisy``, ``actual_rate``, ``transition_matrix``, the generating spec, ``save`` /
``load`` / ``summary``). Helpers: :func:`split_per_class` (the ELR noisy validation split) and
:func:`down_sample` (the ICLR 2023 noisy-class balancing).

Sources: ELR repo (shengliu66/ELR, ``data_loader/cifar10.py`` / ``cifar100.py``); the ICLR 2023
code (UCSC-REAL/SelfSup_NoisyLabel, ``utils.py``, ``cifar_noisy.py``); Xia et al. 2020,
"Part-dependent label noise" (NeurIPS); Wei et al. 2022, CIFAR-N (ICLR).
"""
from ._generate import (
    CIFAR10_ASYMMETRIC_MAP,
    check_noise_spec,
    make_noisy_labels,
    regenerate,
    truncated_normal,
    truncated_normal_mean,
)
from ._human import CIFAR_N_FILES, HUMAN_VARIANTS, download_cifar_n, load_cifar_n
from ._labels import DAMAGED_NPZ_ERRORS, KINDS, NoiseError, NoisyLabels, plot_transition_matrix
from ._splits import down_sample, split_per_class, stratified_folds

__all__ = [
    "DAMAGED_NPZ_ERRORS", "KINDS", "NoiseError", "NoisyLabels", "make_noisy_labels", "regenerate", "check_noise_spec", "split_per_class", "down_sample",
    "stratified_folds",
    "load_cifar_n", "download_cifar_n", "plot_transition_matrix",
    "CIFAR10_ASYMMETRIC_MAP", "CIFAR_N_FILES", "HUMAN_VARIANTS", "truncated_normal", "truncated_normal_mean",
]
