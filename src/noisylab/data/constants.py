"""Normalisation constants and augmentation parameters of the papers, per dataset.

All means / standard deviations are per channel, in ``[0, 1]`` units (an image is divided by
255 before ``(x - mean) / std``). Sources:

* CIFAR-10 / CIFAR-100: the constants of the ELR repo (``ELR/data_loader``),
  also used by the ICLR-2023 repo for its weak, strong and test transforms (``utils.py``, ``CE.py``). Note the
  CIFAR-10 *std* ``(0.2023, 0.1994, 0.2010)`` is the widely copied value, not the exact per-pixel
  std of the training set (~0.247, 0.243, 0.261); we keep the papers' numbers.
* Clothing1M: ELR+ ``data_loader/clothing1m`` transforms.
* WebVision / ILSVRC12: the usual ImageNet statistics, as in ELR+.
* MNIST: the customary ``(0.1307,) / (0.3081,)``; Fashion-MNIST: ``(0.2860,) / (0.3530,)``, the
  training-set statistics (checked against the Debian ``dataset-fashion-mnist`` files).
"""
from __future__ import annotations

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

CLOTHING1M_MEAN = (0.6959, 0.6537, 0.6371)
CLOTHING1M_STD = (0.3113, 0.3192, 0.3214)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)

# --- crop / resize recipes ------------------------------------------------------------------
CIFAR_CROP_PADDING = 4
"""RandomCrop(32, padding=4) + RandomHorizontalFlip (ELR, ELR+, ICLR-2023 weak view)."""

CLOTHING1M_RESIZE = 256
CLOTHING1M_CROP = 224
"""Train: Resize(256) -> RandomCrop(224) -> HFlip; eval: Resize(256) -> CenterCrop(224) (ELR+)."""

WEBVISION_RESIZE = 256
WEBVISION_CROP = 227
"""Train: RandomCrop(227) -> HFlip; eval: CenterCrop(227), on images pre-resized to 256 (ELR+)."""

# --- SimCLR views (ICLR-2023 repo, `utils.py`; torchvision defaults) ------
SIMCLR_SCALE = (0.08, 1.0)
"""RandomResizedCrop area range (torchvision default)."""
SIMCLR_RATIO = (3.0 / 4.0, 4.0 / 3.0)
"""RandomResizedCrop aspect-ratio range (torchvision default)."""
SIMCLR_FLIP_P = 0.5
SIMCLR_JITTER = (0.4, 0.4, 0.4, 0.1)
"""ColorJitter(brightness, contrast, saturation, hue)."""
SIMCLR_JITTER_P = 0.8
SIMCLR_GRAY_P = 0.2

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
"""ITU-R 601 luma weights, as torchvision's ``rgb_to_grayscale``."""

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CLOTHING1M_CLASSES = [
    "T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
    "Jacket", "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear",
]
"""Order of Clothing1M's ``category_names_eng.txt`` (label 0..13)."""

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package installs the gzipped IDX files."""
