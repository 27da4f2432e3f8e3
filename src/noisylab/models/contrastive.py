"""Encoder + projection head for the representation regulariser of Cheng et al., "Mitigating
Memorization of Noisy Labels via Regularization between Representations" (ICLR 2023), and
checkpoints of the (SimCLR-)pretrained encoder.

* :class:`ProjectionHead` -- the SimCLR projection head ``g`` of the paper's code
  (``Linear(D, H, bias=False) - BatchNorm1d(H) - ReLU - Linear(H, 128)``), with the same
  layer indices (0, 1, 2, 3) so the official ``g.*`` weights load by index.
* :class:`ContrastiveNet` -- a registry model (:class:`~noisylab.models.small.FeatureClassifier`)
  as the encoder ``f`` plus its linear classifier ``fc``, and a :class:`ProjectionHead` ``g`` on
  the same ``[B, D]`` feature.
* :func:`save_encoder_checkpoint` / :func:`load_encoder_checkpoint` -- the encoder (without the
  classifier) and the projector, in noisylab's own format or read from the official layout
  (``torch.save(model.state_dict())`` of a module with a ``Sequential`` encoder ``f`` made of
  torchvision ResNet children and a projection head ``g``). Files are read with
  ``torch.load(weights_only=True)`` only: a crafted pickle cannot run code.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .registry import ModelError
from .small import FeatureClassifier

ENCODER_FORMAT = "noisylab-encoder-v1"
#: registry architectures the official ``f.*`` layout maps onto (torchvision BasicBlock ResNets
#: with a 3x3 stride-1 stem and no max-pool); value = blocks per stage, used to name the depth
#: of a foreign checkpoint in error messages
OFFICIAL_ARCHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
_RESERVED = ("format", "arch", "arch_options", "num_features", "encoder", "projector")
# official encoder children: 0 conv1, 1 bn1, 2 relu, 3..6 layer1..layer4, 7 avgpool
_OFFICIAL_CHILD = {"0": "conv1", "1": "bn1", "3": "layer1", "4": "layer2", "5": "layer3", "6": "layer4"}


class ProjectionHead(nn.Sequential):
    """SimCLR projection head ``[B, in_dim] -> [B, out_dim]`` (un-normalised).

    Layers (indices as in the official ``g``): ``0`` ``Linear(in_dim, hidden, bias=False)``,
    ``1`` ``BatchNorm1d(hidden)``, ``2`` ``ReLU``, ``3`` ``Linear(hidden, out_dim)``;
    ``hidden`` defaults to ``in_dim`` (512 -> 512 -> 128 in the paper).
    """

    def __init__(self, in_dim: int, hidden: int | None = None, out_dim: int = 128) -> None:
        hidden = in_dim if hidden is None else hidden
        for name, value in (("in_dim", in_dim), ("hidden", hidden), ("out_dim", out_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"ProjectionHead: {name} must be a positive int, got {value!r}")
        super().__init__(
            nn.Linear(in_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )
        self.in_dim, self.hidden, self.out_dim = in_dim, hidden, out_dim


class ContrastiveNet(nn.Module):
    """Encoder, linear classifier and projection head sharing one representation.

    ``backbone`` is a registry model: ``backbone.forward_features`` is the encoder
    (``x -> [B, D]``) and ``backbone.fc`` the classifier (``[B, D] -> [B, C]``).
    ``projector`` is ``ProjectionHead(D, proj_hidden, proj_dim)`` (``[B, D] -> [B, proj_dim]``).
    ``forward(x) == classify(features(x))`` (the logits), so the net stands in for a classifier;
    ``forward_features`` / ``forward_head`` are aliases of :meth:`features` / :meth:`classify`.
    """

    def __init__(self, backbone: FeatureClassifier, proj_dim: int = 128, proj_hidden: int | None = None) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module) or not hasattr(backbone, "forward_features") \
                or not isinstance(getattr(backbone, "fc", None), nn.Linear):
            raise ModelError(f"ContrastiveNet needs a registry model (forward_features + fc), "
                             f"got {type(backbone).__name__}")
        self.backbone = backbone
        self.projector = ProjectionHead(int(backbone.num_features), proj_hidden, proj_dim)

    @property
    def num_features(self) -> int:
        """D, the size of the encoder representation."""
        return int(self.backbone.num_features)

    @property
    def num_classes(self) -> int:
        """C, the number of classifier outputs."""
        return int(self.backbone.fc.out_features)

    @property
    def proj_dim(self) -> int:
        """Size of the projection ``project(features)``."""
        return self.projector.out_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder: ``x`` (e.g. ``[B, C, H, W]``) ``-> [B, D]``."""
        return self.backbone.forward_features(x)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Projection head: ``[B, D] -> [B, proj_dim]`` (not normalised)."""
        return self.projector(features)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Linear classifier ``backbone.fc``: ``[B, D] -> [B, C]`` logits."""
        return self.backbone.fc(features)

    forward_features = features
    forward_head = classify

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x -> [B, C]`` logits, ``classify(features(x))``."""
        return self.classify(self.features(x))


class MultiViewNet(nn.Module):
    """Runs a :class:`ContrastiveNet` on several views of a batch in ONE ``forward`` call.

    Each view goes through the network separately (BatchNorm statistics per view, as the
    ICLR-2023 scripts' separate ``model(images_k)`` calls); one call per step is what
    DistributedDataParallel needs to synchronise the gradients of a step that uses several views.

    ``forward(views, logits, proj)``: ``views`` a tuple of ``[B, ...]`` tensors; ``logits`` and
    ``proj`` one bool per view (which outputs to compute). Returns one ``(logits [B, C] | None,
    projection [B, proj_dim] | None)`` pair per view. ``net`` is the wrapped ContrastiveNet.
    """

    def __init__(self, net: ContrastiveNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, views: tuple[torch.Tensor, ...], logits: tuple[bool, ...], proj: tuple[bool, ...]
                ) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
        out = []
        for x, want_logits, want_proj in zip(views, logits, proj, strict=True):
            f = self.net.features(x)
            out.append((self.net.classify(f) if want_logits else None, self.net.project(f) if want_proj else None))
        return out


# ---------------------------------------------------------------------------------- checkpoints
def save_encoder_checkpoint(
    net: ContrastiveNet,
    path: str | Path,
    arch: str,
    arch_options: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write the encoder (backbone without ``fc.*``) and the projector of ``net`` to ``path``.

    The file is ``{"format": "noisylab-encoder-v1", "arch", "arch_options", "num_features",
    "encoder", "projector", **extra}``, written atomically (``path.tmp`` + ``os.replace``).
    ``arch``/``arch_options`` are the registry name and kwargs the backbone was built with.
    ``extra`` (e.g. epoch, loss) must hold only plain data (numbers, strings, lists, dicts,
    tensors) and must not use the reserved keys.
    """
    path = Path(path)
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ModelError(f"save_encoder_checkpoint: extra keys {clash} are reserved (rename them)")
    _check_plain(dict(arch_options), "arch_options")
    _check_plain(extra, "extra")
    encoder = {k: v.detach().cpu() for k, v in net.backbone.state_dict().items() if not k.startswith("fc.")}
    projector = {k: v.detach().cpu() for k, v in net.projector.state_dict().items()}
    state = {
        "format": ENCODER_FORMAT,
        "arch": str(arch),
        "arch_options": dict(arch_options),
        "num_features": net.num_features,
        "encoder": encoder,
        "projector": projector,
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_encoder_checkpoint(net: ContrastiveNet, path: str | Path, arch: str) -> dict[str, Any]:
    """Load an encoder checkpoint into ``net`` (whose backbone is registry model ``arch``).

    Accepted layouts:

    * ``"noisylab"`` -- written by :func:`save_encoder_checkpoint`; its ``arch`` must equal ``arch``;
    * ``"official"`` -- the state dict of the paper's code (``f.*`` encoder, optional ``g.*``
      projector; possibly wrapped as ``{"state_dict": ...}`` and/or with a DataParallel
      ``module.`` prefix), for ``arch`` ``resnet18``/``resnet34``: ``f.0 -> conv1``,
      ``f.1 -> bn1``, ``f.3..f.6 -> layer1..layer4``, ``downsample -> shortcut``,
      ``g.N -> projector.N``. Official ``fc.*`` weights are ignored.

    The encoder must match exactly (keys and shapes; a missing BatchNorm ``num_batches_tracked``
    counter is tolerated). The projector is loaded when present and its keys/shapes fit
    ``net.projector``, else left as is (``"projector_skipped"`` says why). The classifier ``fc``
    is never touched. Everything is checked before anything is copied, so a refused file leaves
    ``net`` unchanged. Any problem raises :class:`ModelError` with a one-line message.

    Returns ``{"layout": "noisylab"|"official", "path", "encoder_tensors": int,
    "projector": bool, "projector_skipped": str|None, "meta": {...}}`` where ``meta`` holds the
    noisylab file's ``arch``, ``arch_options``, ``num_features`` and extra entries.
    """
    path = Path(path)
    raw = _read(path)
    where = f"encoder checkpoint '{path}'"
    meta: dict[str, Any] = {}
    if "format" in raw:
        if raw["format"] != ENCODER_FORMAT:
            raise ModelError(f"{where} has format {raw['format']!r}, not {ENCODER_FORMAT!r} "
                             f"(give a file written by save_encoder_checkpoint or an official f.*/g.* state dict)")
        saved_arch = raw.get("arch")
        if saved_arch != arch:
            raise ModelError(f"{where} holds a '{saved_arch}' encoder but the model is '{arch}' "
                             f"(build the model as '{saved_arch}' with arch_options {raw.get('arch_options')!r})")
        encoder, projector = raw.get("encoder"), raw.get("projector")
        if not _is_tensor_dict(encoder) or (projector is not None and not _is_tensor_dict(projector)):
            raise ModelError(f"{where} is damaged: 'encoder'/'projector' are not tensor dicts "
                             f"(re-export it with save_encoder_checkpoint)")
        layout = "noisylab"
        meta = {k: v for k, v in raw.items() if k not in ("format", "encoder", "projector")}
        fix = f"build the model with the checkpoint's arch_options {raw.get('arch_options')!r}"
    else:
        encoder, projector = _official_to_noisylab(raw, arch, where)
        layout = "official"
        fix = (f"the official encoder is a width-64 {arch} on 3-channel images; "
               f"build the model as '{arch}' with width=64 and input_shape (3, H, W)")

    _check_encoder(net, encoder, arch, where, fix)
    proj_ok, skipped = _projector_fits(net, projector)

    # everything checked: copy in (fc and, if skipped, the projector keep their values)
    result = net.backbone.load_state_dict(encoder, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    if proj_ok:
        net.projector.load_state_dict(projector, strict=False)  # keys checked (bar BN counters)
    return {
        "layout": layout,
        "path": str(path),
        "encoder_tensors": len(encoder),
        "projector": proj_ok,
        "projector_skipped": skipped,
        "meta": meta,
    }


# ------------------------------------------------------------------------------------- helpers
def _read(path: Path) -> dict[str, Any]:
    where = f"encoder checkpoint '{path}'"
    if not path.is_file():
        raise ModelError(f"{where} does not exist or is not a file (give the path of a .pt/.pth file)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        glob = re.search(r"GLOBAL\s+([\w.]+)", text, flags=re.IGNORECASE)
        if "weights" in text.lower() and glob:
            raise ModelError(f"{where} references {glob.group(1)}, which torch.load(weights_only=True) refuses "
                             f"(the pickle would import or run code); nothing was executed (only plain "
                             f"state dicts are accepted: re-save it with torch.save(model.state_dict(), path))") from None
        raise ModelError(f"{where} is not a readable torch file (UnpicklingError: truncated, corrupt or not a "
                         f"checkpoint; re-save it with torch.save)") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise ModelError(f"{where} is not a readable torch file ({type(err).__name__}: truncated or not a "
                         f"checkpoint; re-save it with torch.save)") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ModelError(f"{where} holds a {type(raw).__name__}, not a state dict "
                         f"(save model.state_dict() or use save_encoder_checkpoint)")
    return raw


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _check_plain(obj: object, what: str) -> None:
    """Only data ``torch.load(weights_only=True)`` reads back (no custom classes)."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _check_plain(item, what)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ModelError(f"save_encoder_checkpoint: {what} has a non-str key {k!r} (use str keys)")
            _check_plain(v, what)
        return
    raise ModelError(f"save_encoder_checkpoint: {what} holds a {type(obj).__name__}, which weights_only "
                     f"loading cannot read (store numbers, strings, lists, dicts or tensors)")


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _official_to_noisylab(raw: dict[str, Any], arch: str, where: str) -> tuple[dict, dict | None]:
    """Unwrap and rename an official ``f.*``/``g.*`` state dict to (encoder, projector) dicts."""
    state = raw
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if not _is_tensor_dict(state) or not any(k.startswith("f.") for k in state):
        keys = [k for k in state if isinstance(k, str)] if isinstance(state, dict) else []
        raise ModelError(f"{where} is neither a noisylab encoder checkpoint nor an official state dict with "
                         f"f.* encoder tensors (found keys: {_few(keys) or 'none'}; export the SimCLR "
                         f"model's state_dict or use save_encoder_checkpoint)")
    if arch not in OFFICIAL_ARCHS:
        raise ModelError(f"{where} has the official SelfSup_NoisyLabel layout (f.*/g.* keys), which maps only "
                         f"onto {'/'.join(OFFICIAL_ARCHS)}, not '{arch}' (build the model as resnet34 or resnet18)")
    foreign = sorted(k for k in state if not k.startswith(("f.", "g.", "fc.")))
    if foreign:
        raise ModelError(f"{where} has keys outside f.*/g.*/fc.*: {_few(foreign)} "
                         f"(strip them, keeping the encoder f.* and projector g.* tensors)")
    encoder: dict[str, torch.Tensor] = {}
    projector: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("g."):
            projector[key[2:]] = value
        elif key.startswith("f."):
            child, _, rest = key[2:].partition(".")
            if child not in _OFFICIAL_CHILD or not rest:
                raise ModelError(f"{where}: encoder key '{key}' is not part of a torchvision BasicBlock ResNet "
                                 f"encoder (f.0 conv1, f.1 bn1, f.3-f.6 layer1-4; export the official Model's f)")
            rest = re.sub(r"(^|\.)downsample\.", r"\1shortcut.", rest)
            encoder[f"{_OFFICIAL_CHILD[child]}.{rest}"] = value
    return encoder, (projector or None)


def _official_depth(encoder: Mapping[str, torch.Tensor]) -> str:
    """Name the resnet depth of an official encoder from its block counts (for error messages)."""
    counts = []
    for i in range(1, 5):
        idx = {int(m.group(1)) for k in encoder if (m := re.match(rf"layer{i}\.(\d+)\.", k))}
        counts.append(max(idx) + 1 if idx else 0)
    for name, blocks in OFFICIAL_ARCHS.items():
        if tuple(counts) == blocks:
            return f"; the file holds a {name} (blocks {counts})"
    return f"; the file's blocks per stage are {counts}"


def _check_encoder(net: ContrastiveNet, encoder: dict[str, torch.Tensor], arch: str, where: str, fix: str) -> None:
    expected = {k: v for k, v in net.backbone.state_dict().items() if not k.startswith("fc.")}
    missing = sorted(k for k in expected if k not in encoder and not k.endswith("num_batches_tracked"))
    unknown = sorted(k for k in encoder if k not in expected)
    if missing or unknown:
        parts = []
        if unknown:
            parts.append(f"unknown encoder keys {_few(unknown)}")
        if missing:
            parts.append(f"missing encoder keys {_few(missing)}")
        depth = _official_depth(encoder) if arch in OFFICIAL_ARCHS else ""
        raise ModelError(f"{where} does not fit the '{arch}' encoder: {'; '.join(parts)}{depth} "
                         f"(load it into the architecture it was saved from)")
    wrong = [f"{k} {tuple(encoder[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in encoder and encoder[k].shape != v.shape]
    if wrong:
        raise ModelError(f"{where} does not fit the '{arch}' encoder: shape mismatch at {_few(wrong, 2)} "
                         f"({fix})")


def _projector_fits(net: ContrastiveNet, projector: dict[str, torch.Tensor] | None) -> tuple[bool, str | None]:
    if projector is None:
        return False, "the checkpoint has no projector"
    expected = net.projector.state_dict()
    differ = sorted(k for k in set(projector) ^ set(expected) if not k.endswith("num_batches_tracked"))
    if differ or any(k not in expected for k in projector):
        return False, f"projector keys differ ({_few(differ or sorted(set(projector) - set(expected)))})"
    wrong = [k for k, v in expected.items() if k in projector and projector[k].shape != v.shape]
    if wrong:
        k = wrong[0]
        return False, (f"projector shapes differ ({k} {tuple(projector[k].shape)} vs model "
                       f"{tuple(expected[k].shape)}; set proj_dim/proj_hidden to match)")
    return True, None
