"""The typed experiment configuration: YAML files, dotted overrides and one-line errors.

A config is a YAML mapping validated by the pydantic models below. Unknown keys and bad values
raise :class:`ConfigError` with one line naming the key and the valid choices.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config file, key or value is wrong. The message is one line naming it and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Which dataset and how it is split and augmented."""

    dataset: str = "mnist1d"
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="extra loader options")
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0, description=(
        "noisy validation split per class (ELR: 0.1); the noise is drawn on the whole training set "
        "first, so an exact count is exact over train+val together (ELR draws each part separately)"))
    augment: Literal["auto", "none", "crop", "crop_flip"] = "auto"
    train_size: int | None = Field(None, ge=1, description="keep a class-stratified, seeded subset of the training set")
    test_size: int | None = Field(None, ge=1, description="keep the first test_size test examples")


class NoiseConfig(_Strict):
    """How the training labels are corrupted (``kind: none`` keeps them), or a saved label file."""

    kind: str = "none"
    rate: float | None = Field(0.0, ge=0.0, lt=1.0, description="ignored for kinds none, matrix and human")
    seed: int | None = Field(None, description="noise seed; default: the run seed")
    file: str | None = Field(None, description="a label file written by `noisylab noise` or a run")
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from .noise import KINDS

        if v not in KINDS:
            raise ValueError(f"unknown noise kind '{v}' (valid: {', '.join(KINDS)})")
        return v


class ModelConfig(_Strict):
    arch: str = "cnn1d"
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model factory")


class LossConfig(_Strict):
    """The per-batch loss of the standard method. ``lam``/``beta`` are ELR's, ``q`` is GCE's."""

    name: Literal["ce", "gce", "elr"] = "ce"
    lam: float = Field(3.0, ge=0.0)
    beta: float = Field(0.7, ge=0.0, lt=1.0)
    q: float = Field(0.7, gt=0.0, le=1.0)


ELR_PLUS_KEYS = frozenset({"mixup_alpha", "ema_alpha", "ema_update", "ema_step", "coef_step", "warmup_epochs", "reweight_labels"})


class MethodConfig(_Strict):
    """The training recipe. ``standard``: one network with ``loss``. ``elr_plus``: ELR+ (two
    networks, mixup, weight-averaged targets; seed-methods.md 1.4), which uses ``loss.lam`` and
    ``loss.beta`` and the keys below (defaults: the paper's CIFAR-10 settings)."""

    name: Literal["standard", "elr_plus"] = "standard"
    loss: LossConfig = Field(default_factory=LossConfig)
    mixup_alpha: float = Field(1.0, gt=0.0, description="ELR+: mixup Beta(alpha, alpha)")
    ema_alpha: float = Field(0.997, ge=0.0, lt=1.0, description="ELR+: weight-averaging decay")
    ema_update: bool = Field(True, description="ELR+: ramp the decay up over ema_step iterations")
    ema_step: int = Field(40000, ge=0, description="ELR+: iterations of the EMA decay ramp")
    coef_step: int = Field(0, ge=0, description="ELR+: iterations of the regularizer ramp (0: none)")
    warmup_epochs: int = Field(0, ge=0, description="ELR+: epochs of plain CE first")
    reweight_labels: bool | Literal["auto"] = Field(
        "auto", description="ELR+: weight the mixed labels by the target (auto: only for 100 classes, as the paper's code)")

    @model_validator(mode="after")
    def _keys_of_the_method(self) -> "MethodConfig":
        if self.name != "elr_plus":
            # a dumped config lists every key with its default, so only changed values are stray
            stray = sorted(k for k in ELR_PLUS_KEYS & self.model_fields_set
                           if getattr(self, k) != type(self).model_fields[k].default)
            if stray:
                raise ValueError(f"method.{stray[0]} applies only to method elr_plus (method.name is '{self.name}')")
        return self


class OptimConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.02, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-3, ge=0.0)
    nesterov: bool = False


class ScheduleConfig(_Strict):
    """Learning-rate schedule, stepped once per epoch (as in the ELR code)."""

    name: Literal["constant", "multistep", "cosine", "cosine_restarts"] = "constant"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0.0)
    T_0: int = Field(10, ge=1)
    T_mult: int = Field(1, ge=1)
    eta_min: float = Field(0.0, ge=0.0)


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    drop_last: bool = False
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    track_memorization: bool = True
    progress: bool = True
    tensorboard: bool | Literal["auto"] = Field("auto", description="true, false, or auto (when installed)")
    log_every: int = Field(50, ge=1, description="progress-bar refresh in steps (each costs a device sync)")


class DetectConfig(_Strict):
    """How the run flags suspected wrong labels at the end."""

    source: Literal["auto", "targets", "pred_probs"] = "auto"
    filter_by: Literal["predicted_neq_given", "confident_learning", "low_self_confidence"] = "predicted_neq_given"
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="for low_self_confidence")


class Config(_Strict):
    """A whole experiment."""

    name: str = "run"
    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v == "auto" or v == "cpu" or v == "mps" or v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        if v.isdigit():  # the seed repos' `-d 0` means the first GPU
            return f"cuda:{v}"
        raise ValueError(f"unknown device '{v}' (valid: auto, cpu, cuda, cuda:N, mps)")

    @model_validator(mode="after")
    def _noise_rate_given(self) -> "Config":
        if self.noise.kind not in ("none", "human", "matrix") and self.noise.file is None and self.noise.rate is None:
            raise ValueError(f"noise.rate is required for noise kind '{self.noise.kind}'")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------- loading
def _format_error(err: ValidationError, model: type[BaseModel]) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        parent: Any = model
        for part in first["loc"][:-1]:
            field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
            parent = field.annotation if field is not None else None
        valid = sorted(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        return f"unknown config key '{loc}'" + (f" (valid keys here: {', '.join(valid)})" if valid else "")
    msg = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"config key '{loc}': {msg}{shown}" if loc else f"config: {msg}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value parsed as YAML, so ``0.1``, ``true``, ``[1, 2]`` work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted ``key=value`` in the nested dict ``data`` (in place; returns it)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' not found (see configs/ for examples)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file '{p}' is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must contain a mapping of keys, not {type(data).__name__}")
    return data


def build_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, Config)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from the defaults), apply dotted overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    return build_config(apply_overrides(data, list(overrides or [])))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
