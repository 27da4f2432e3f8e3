"""``fastnet``: the airbench94 network, a small fast CIFAR classifier.

Architecture of Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (arXiv
2404.00498, github.com/KellerJordan/cifar10-airbench), itself derived from hlb-cifar10. This is an
independent implementation of the network only (no training recipe: no lookahead/EMA, label
smoothing, test-time augmentation or learning-rate scaling of the BatchNorm biases).

Layers, for input ``[B, 3, H, W]`` (float, per-channel normalised, NCHW or channels_last)::

    whiten: Conv2d(3, 24, 2x2, no padding, bias)   weight fitted from data, frozen
    GELU
    3 x ConvGroup(c_in, c_out):  Conv3x3(same, no bias) -> MaxPool2d(2) -> BN -> GELU
                                 -> Conv3x3(same, no bias) -> BN -> GELU
        widths (64, 256, 256)
    global max pool -> [B, widths[-1]]                  (= MaxPool2d(3) on the 3x3 map of 32x32 input)
    fc: Linear(widths[-1], num_classes, bias=False), logits multiplied by ``logit_scale`` (1/9)

Spatial sizes at 32x32: 32 -> 31 (whiten) -> 15 -> 7 -> 3 -> 1; the smallest input that keeps a
non-empty map is 9x9 (9 -> 8 -> 4 -> 2 -> 1).

Initialisation as in airbench:

* the whitening layer (:meth:`FastNet.init_from_data`): the eigenvectors ``v_i`` of the
  second-moment matrix of all 2x2 patches of a sample of training images (12 x 12 for RGB; the
  inputs are mean-normalised, so this is their covariance) scaled by ``1 / sqrt(lambda_i + eps)``,
  largest eigenvalue first, followed by their negations (24 filters: the GELU after it keeps both
  signs of every whitened direction). The weight never trains (``requires_grad=False``); its bias
  starts at zero and trains, airbench freezes it after 3 epochs
  (:meth:`FastNet.set_whitening_bias_trainable`). The buffer ``whitening_fitted`` records that the
  layer was fitted and is part of the ``state_dict``, so a checkpoint restores the fitted layer
  (the training code should call ``init_from_data`` only while ``whitening_fitted`` is False);
* every 3x3 conv: PyTorch's default init, then its first ``min(c_in, c_out)`` output filters set
  to the identity (a one at the centre tap of the matching input channel, zeros elsewhere), an
  implicit residual connection;
* BatchNorm: ``eps=1e-12``, PyTorch momentum 0.4 (running stats updated as
  ``0.6 * running + 0.4 * batch``, airbench's "batchnorm_momentum 0.6" which is the decay), scale
  (weight) frozen at 1 and only the shift trained.

``forward_features`` returns the pooled ``[B, widths[-1]]`` vector; ``forward_head`` (= ``fc``,
which includes the logit scale, so code that calls ``model.fc(features)`` directly gets the same
logits) the scaled linear layer.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import ModelError, register_model
from .small import FeatureClassifier, check_num_classes, check_positive_int, image_shape

MIN_SIZE = 9
"""Smallest height/width: the 2x2 whitening conv and three 2x max-pools must leave a 1x1 map."""

WHITEN_KERNEL = 2


class ScaledLinear(nn.Linear):
    """``Linear(in, out, bias=False)`` whose output is multiplied by the constant ``scale``."""

    def __init__(self, in_features: int, out_features: int, scale: float) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:g}"


def identity_init_(weight: torch.Tensor) -> torch.Tensor:
    """Set the first ``min(out, in)`` filters of a conv weight ``[out, in, k, k]`` (odd ``k``) to the
    identity map: filter ``i`` is one at the centre tap of input channel ``i`` and zero elsewhere.
    The remaining filters keep their values. Returns ``weight``."""
    out_ch, in_ch, kh, kw = weight.shape
    n = min(out_ch, in_ch)
    with torch.no_grad():
        weight[:n] = 0
        idx = torch.arange(n, device=weight.device)
        weight[idx, idx, kh // 2, kw // 2] = 1
    return weight


class ConvGroup(nn.Module):
    """``conv3x3 -> maxpool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU``:
    ``[B, c_in, H, W] -> [B, c_out, H // 2, W // 2]``."""

    def __init__(self, in_ch: int, out_ch: int, bn_momentum: float, bn_eps: float,
                 bn_weight_trainable: bool, dirac: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.GELU()
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad_(bn_weight_trainable)
        if dirac:
            identity_init_(self.conv1.weight)
            identity_init_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(FeatureClassifier):
    """The airbench94 network (see the module docstring). ``input_shape`` must be ``(3, H, W)``
    with ``H, W >= 9``; ``num_features = widths[-1]``."""

    freezes_parameters_mid_run = True
    """:meth:`start_epoch` turns the whitening bias's ``requires_grad`` off after
    ``whiten_bias_epochs``: under DDP the wrapper must then look for unused parameters."""

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        widths: Sequence[int] = (64, 256, 256),
        logit_scale: float = 1 / 9,
        bn_momentum: float = 0.4,
        bn_eps: float = 1e-12,
        bn_weight_trainable: bool = False,
        dirac: bool = True,
        whiten_eps: float = 5e-4,
        whiten_bias_epochs: int = 3,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        c, h, w = image_shape(input_shape, "fastnet")
        if c != 3:
            raise ModelError(f"model 'fastnet' needs 3-channel images (3, H, W), got input_shape {input_shape!r}")
        if min(h, w) < MIN_SIZE:
            raise ModelError(f"model 'fastnet' needs images of at least {MIN_SIZE}x{MIN_SIZE}, "
                             f"got input_shape {input_shape!r}")
        self.num_classes = check_num_classes(num_classes)
        if isinstance(widths, int) or not isinstance(widths, Sequence) or len(widths) != 3:
            raise ModelError(f"widths must be 3 positive ints, got {widths!r}")
        widths = tuple(check_positive_int("width", wd) for wd in widths)
        if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) \
                or not 0.0 <= float(bn_momentum) <= 1.0:
            raise ModelError(f"bn_momentum must be in [0, 1] (PyTorch convention), got {bn_momentum!r}")
        for name, value in (("logit_scale", logit_scale), ("bn_eps", bn_eps), ("whiten_eps", whiten_eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value) > 0:
                raise ModelError(f"{name} must be a positive number, got {value!r}")

        if isinstance(whiten_bias_epochs, bool) or not isinstance(whiten_bias_epochs, int) or whiten_bias_epochs < 0:
            raise ModelError(f"whiten_bias_epochs must be an int >= 0, got {whiten_bias_epochs!r}")

        self.input_shape = (c, h, w)
        self.widths = widths
        self.whiten_eps = float(whiten_eps)
        self.whiten_bias_epochs = whiten_bias_epochs
        whiten_width = 2 * c * WHITEN_KERNEL ** 2
        self.whiten = nn.Conv2d(c, whiten_width, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        with torch.no_grad():
            self.whiten.bias.zero_()
        self.register_buffer("whitening_fitted", torch.tensor(False))
        self.act = nn.GELU()
        groups = []
        in_ch = whiten_width
        for out_ch in widths:
            groups.append(ConvGroup(in_ch, out_ch, float(bn_momentum), float(bn_eps), bool(bn_weight_trainable),
                                    bool(dirac)))
            in_ch = out_ch
        self.groups = nn.Sequential(*groups)
        self.num_features = in_ch
        self.fc = ScaledLinear(in_ch, self.num_classes, float(logit_scale))
        # NHWC convolutions: 1.2-1.5x faster training on these CPUs (oneDNN), and the fast layout on
        # GPUs with tensor cores; the weights are kept in it and each input is converted once
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] -> [B, widths[-1]]`` (global max pool of the last conv group)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.groups(self.act(self.whiten(x)))
        return torch.amax(x, dim=(2, 3))

    # forward_head / forward come from FeatureClassifier: ``self.fc`` is the scaled linear head.

    # ------------------------------------------------------------------ whitening
    def set_whitening_bias_trainable(self, trainable: bool) -> None:
        """Unfreeze (True) or freeze (False) the whitening layer's bias (its weight stays frozen)."""
        self.whiten.bias.requires_grad_(bool(trainable))

    def start_epoch(self, epoch: int) -> None:
        """The engine's hook before each epoch (through :meth:`noisylab.methods.Method.start_epoch`):
        the whitening bias trains in the first ``whiten_bias_epochs`` epochs only (airbench)."""
        frozen_copy = not any(p.requires_grad for p in self.groups.parameters())  # e.g. ELR+'s EMA networks
        self.set_whitening_bias_trainable(epoch < self.whiten_bias_epochs and not frozen_copy)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, chunk_size: int = 256) -> None:
        """Fit the whitening layer to ``images`` (float ``[N, 3, H, W]``, normalised as the model
        sees them; airbench uses 5,000 training images) and set ``whitening_fitted``.

        The 12 x 12 second-moment matrix of all 2x2 patches (stride 1, flattened in the
        ``(channel, row, col)`` order of a conv weight) is accumulated in float64, chunk by chunk,
        and decomposed with ``torch.linalg.eigh``. Filter ``i`` (eigenvalues descending) is
        ``v_i / sqrt(lambda_i + whiten_eps)``, filters ``12 + i`` their negations; the bias is reset
        to zero. Deterministic for given images."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"init_from_data needs a [N, C, H, W] tensor, got "
                             f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
        if not images.is_floating_point():
            raise ValueError("init_from_data needs float images normalised like the model's inputs, "
                             f"got {images.dtype}")
        n, c, h, w = images.shape
        k = WHITEN_KERNEL
        if c != self.whiten.in_channels or n < 1 or h < k or w < k:
            raise ValueError(f"init_from_data needs [N >= 1, {self.whiten.in_channels}, H >= {k}, W >= {k}] images, "
                             f"got {tuple(images.shape)}")
        dim = c * k * k
        second = torch.zeros(dim, dim, dtype=torch.float64)
        count = 0
        for start in range(0, n, chunk_size):
            chunk = images[start:start + chunk_size].detach().to("cpu", torch.float64)
            # [b, c, h', w', k, k] -> [b, h', w', c, k, k] -> [patches, c*k*k]
            patches = chunk.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, dim)
            second += patches.T @ patches
            count += patches.shape[0]
        second /= count
        if not torch.isfinite(second).all():
            raise ValueError("init_from_data: the images contain non-finite values")
        evals, evecs = torch.linalg.eigh(second)  # ascending; columns are eigenvectors
        evals, evecs = evals.flip(0), evecs.flip(1)
        filters = (evecs / torch.sqrt(evals.clamp(min=0) + self.whiten_eps)).T  # [dim, dim], row i = filter i
        weight = torch.cat((filters, -filters)).reshape_as(self.whiten.weight)
        self.whiten.weight.copy_(weight.to(self.whiten.weight.dtype))
        self.whiten.bias.zero_()
        self.whitening_fitted.fill_(True)


@register_model("fastnet")
def fastnet(num_classes: int, input_shape: tuple[int, ...], widths: Sequence[int] = (64, 256, 256),
            logit_scale: float = 1 / 9, bn_momentum: float = 0.4, bn_eps: float = 1e-12,
            bn_weight_trainable: bool = False, dirac: bool = True, whiten_eps: float = 5e-4,
            whiten_bias_epochs: int = 3, channels_last: bool = True) -> FastNet:
    """airbench94 network for 3-channel images >= 9x9 (designed for 32x32). kwargs:
    ``widths=(64, 256, 256)``, ``logit_scale=1/9``, ``bn_momentum=0.4`` (PyTorch convention),
    ``bn_eps=1e-12``, ``bn_weight_trainable=False``, ``dirac=True``, ``whiten_eps=5e-4``,
    ``whiten_bias_epochs=3`` (the whitening bias trains in the first epochs only),
    ``channels_last=True`` (NHWC weights and inputs).
    Call ``model.init_from_data(train_images[:5000])`` before training to fit the whitening layer."""
    return FastNet(num_classes, input_shape, widths=widths, logit_scale=logit_scale, bn_momentum=bn_momentum,
                   bn_eps=bn_eps, bn_weight_trainable=bn_weight_trainable, dirac=dirac, whiten_eps=whiten_eps,
                   whiten_bias_epochs=whiten_bias_epochs, channels_last=channels_last)
