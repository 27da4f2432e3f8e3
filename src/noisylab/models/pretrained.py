"""Pretrained backbones from timm and torchvision by name: ``timm:NAME`` and ``torchvision:NAME``.

    model.arch=timm:convnext_tiny model.options.pretrained=true         # fine-tune (noisylab train)
    noisylab find-issues photos/ --backbone timm:convnext_tiny           # frozen: embed once, then seconds

:func:`create_backbone` gives the network without its classifier (``[B, 3, H, W] -> [B, D]``) and
the input it expects (:class:`BackboneInput`: size, resize, mean, std; timm's data config, or the
torchvision weights' own transforms). Weights come from the usual caches: timm's from the Hugging
Face hub cache (``HF_HOME``, default ``~/.cache/huggingface``), torchvision's from
``TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch``); ``checkpoint=FILE`` loads a local
file instead. Where a download would be needed and cannot happen, one line says which file to put
where.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .registry import ModelError, register_model_family

LIBRARIES = ("timm", "torchvision")


@dataclass(frozen=True)
class BackboneInput:
    """What a backbone's images look like: the shorter side resized to ``resize`` (bilinear), a
    centred ``size x size`` crop, scaled to [0, 1] and normalised with ``mean``, ``std``."""

    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def parse_spec(spec: str) -> tuple[str, str]:
    library, _, name = spec.partition(":")
    if library not in LIBRARIES or not name:
        raise ModelError(f"backbone '{spec}' must be timm:NAME or torchvision:NAME (e.g. timm:resnet50)")
    return library, name


def _missing_timm_weights(name: str, err: BaseException) -> ModelError:
    return ModelError(
        f"the Hugging Face hub cache (HF_HOME, default ~/.cache/huggingface) has no weights for timm model '{name}' "
        f"and they cannot be downloaded ({' '.join(str(err).split())[:120]}); download them once where there is a "
        f"network (python -c \"import timm; timm.create_model('{name}', pretrained=True)\"), copy that cache here, "
        "or give a local weights file (find-issues --checkpoint FILE, model.options.checkpoint=FILE)")


def _timm_backbone(name: str, pretrained: bool, checkpoint: str | None) -> tuple[nn.Module, BackboneInput]:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise ModelError("timm backbones need timm: pip install 'noisylab[timm]'") from None
    kwargs = {"num_classes": 0}
    if checkpoint is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(checkpoint)}
    try:
        net = timm.create_model(name, pretrained=pretrained or checkpoint is not None, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ModelError(f"timm has no model '{name}' (timm.list_models('*{name[:6]}*') lists similar ones)") from None
        raise ModelError(f"timm model '{name}': {' '.join(str(err).split())[:300]}") from None
    except (OSError, ValueError) as err:  # LocalEntryNotFoundError is an OSError
        raise _missing_timm_weights(name, err) from None
    cfg = resolve_data_config({}, model=net)
    size = int(cfg["input_size"][-1])
    return net, BackboneInput(size, int(round(size / float(cfg.get("crop_pct", 0.875)))), tuple(cfg["mean"]),
                              tuple(cfg["std"]))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file read with ``weights_only=True`` (no code
    runs); a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is opened."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets one line
        raise ModelError(f"checkpoint '{path}' is not a readable weights file ({type(err).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint '{path}' holds no state dict")
    return state


def _strip_classifier(net: nn.Module) -> nn.Module:
    """torchvision's classification models with their last linear layer replaced by identity."""
    for attr in ("fc", "heads", "head"):
        if isinstance(getattr(net, attr, None), (nn.Linear, nn.Sequential)):
            setattr(net, attr, nn.Identity())
            return net
    classifier = getattr(net, "classifier", None)
    if isinstance(classifier, nn.Sequential) and isinstance(classifier[-1], nn.Linear):
        classifier[-1] = nn.Identity()
        return net
    if isinstance(classifier, nn.Linear):
        net.classifier = nn.Identity()
        return net
    raise ModelError(f"cannot find the classifier of torchvision model {type(net).__name__} to remove it")


def _torchvision_backbone(name: str, pretrained: bool, checkpoint: str | None) -> tuple[nn.Module, BackboneInput]:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except ValueError:
        raise ModelError(f"torchvision has no model '{name}' (torchvision.models.list_models() lists them)") from None
    net = torchvision.models.get_model(name, weights=None)
    if checkpoint is not None:
        try:
            net.load_state_dict(read_state_dict(checkpoint))
        except RuntimeError as err:
            raise ModelError(f"checkpoint '{checkpoint}' does not fit torchvision model '{name}' "
                             f"({' '.join(str(err).split())[:200]})") from None
    elif pretrained:
        try:
            net.load_state_dict(weights.get_state_dict(progress=False))
        except OSError as err:  # URLError: no network and no cached file
            file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            raise ModelError(f"torchvision's weights for '{name}' are not at {file} and cannot be downloaded "
                             f"({' '.join(str(err).split())[:120]}); put {Path(weights.url).name} there (from "
                             f"{weights.url}) or give a local weights file (find-issues --checkpoint FILE, "
                             "model.options.checkpoint=FILE)") from None
    t = weights.transforms()
    size = int(t.crop_size[0])
    resize = int(t.resize_size[0]) if t.resize_size else size
    return _strip_classifier(net), BackboneInput(size, resize, tuple(t.mean), tuple(t.std))


def create_backbone(spec: str, pretrained: bool = True, checkpoint: str | Path | None = None) -> tuple[nn.Module, BackboneInput]:
    """``(network [B, 3, H, W] -> [B, D], its input)`` for ``timm:NAME`` or ``torchvision:NAME``."""
    library, name = parse_spec(spec)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ModelError(f"checkpoint file '{checkpoint}' not found")
    build = _timm_backbone if library == "timm" else _torchvision_backbone
    return build(name, pretrained, str(checkpoint) if checkpoint is not None else None)


def feature_size(net: nn.Module, inp: BackboneInput) -> int:
    """D, from one forward pass of a blank image (eval mode, no gradient)."""
    was = net.training
    net.eval()
    with torch.no_grad():
        d = int(net(torch.zeros(1, 3, inp.size, inp.size)).flatten(1).shape[1])
    net.train(was)
    return d


class PretrainedClassifier(nn.Module):
    """A library backbone with a new linear classifier (the registry's model interface)."""

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, inp: BackboneInput):
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.fc = nn.Linear(num_features, num_classes)
        self.input = inp

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _family(library: str):
    def factory(model_name: str, num_classes: int, input_shape: tuple[int, ...], pretrained: bool = False,
                checkpoint: str | None = None) -> nn.Module:
        """``library:model_name`` with a new ``fc``; inputs should be normalised with the backbone's
        mean and std (``noisylab find-issues --finetune`` sets them; see :func:`create_backbone`)."""
        if len(input_shape) != 3 or input_shape[0] != 3:
            raise ModelError(f"{library}:{model_name} takes RGB images [3, H, W], got inputs {tuple(input_shape)}")
        net, inp = create_backbone(f"{library}:{model_name}", pretrained=pretrained, checkpoint=checkpoint)
        return PretrainedClassifier(net, feature_size(net, inp), num_classes, inp)

    return factory


register_model_family("timm")(_family("timm"))
register_model_family("torchvision")(_family("torchvision"))
