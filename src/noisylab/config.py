"""The typed experiment configuration: YAML files, dotted overrides and one-line errors.

A config is a YAML mapping validated by the pydantic models below. Unknown keys and bad values
raise :class:`ConfigError` with one line naming the key and the valid choices.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .detect.scores import DEFAULT_RANK_BY
from .registry import DETECTORS, LOSSES, METHODS, VIEWS, Registry, did_you_mean


class ConfigError(ValueError):
    """A config file, key or value is wrong. The message is one line naming it and the fix
    (line breaks of quoted user input are folded into spaces)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class _Strict(BaseModel):
    """The base of every config schema: unknown keys are refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _plain_data(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` when it is what YAML and JSON both keep as it is (str keys; str, bool, None,
    finite numbers, lists, mappings), else ValueError naming the offending part."""
    if depth > 20:
        raise ValueError(f"{where} is nested too deeply")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has the key {k!r}: keys must be text")
            _plain_data(v, f"{where}.{k}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _plain_data(v, f"{where}[{i}]", depth + 1)
    elif isinstance(value, float) and not (value == value and abs(value) != float("inf")):
        raise ValueError(f"{where} is {value}: give a finite number")
    elif not (value is None or isinstance(value, (str, bool, int, float))):
        raise ValueError(f"{where} is a {type(value).__name__}: give text, a number, true/false, a list or a mapping")
    return value


Schema = _Strict
"""The base class for a registered method's or loss's config schema (``name: Literal[...]``)."""

PlainOptions = Annotated[dict[str, Any], AfterValidator(lambda v: _plain_data(v, "options"))]

Seed = Annotated[int, Field(ge=0, lt=2**63, description="0 <= seed < 2**63")]


class DataConfig(_Strict):
    """Which dataset and how it is split and augmented."""

    dataset: str = "mnist1d"
    root: str | None = None
    options: PlainOptions = Field(default_factory=dict, description="extra loader options")
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0, description=(
        "noisy validation split per class (ELR: 0.1); the noise is drawn on the whole training set "
        "first, so an exact count is exact over train+val together (ELR draws each part separately)"))
    augment: str = Field("auto", description="recipe of the weak view (every method's first view); "
                                             "auto = the dataset default")
    strong_augment: str = Field("simclr", description="recipe of the strong views (SimCLR, the regularizer's InfoNCE)")
    down_sample: bool = Field(False, description=(
        "train on a subset balanced in the noisy labels: every noisy class keeps as many examples as the "
        "smallest (the ICLR-2023 repo's --down_sample, for linear probes under instance noise)"))
    train_size: int | None = Field(None, ge=1, description="keep a class-stratified, seeded subset of the training set")
    test_size: int | None = Field(None, ge=1, description="keep the first test_size test examples")

    @field_validator("augment", "strong_augment")
    @classmethod
    def _known_view(cls, v: str) -> str:
        return check_choice(v, ["auto", *VIEWS], "augmentation")


class NoiseConfig(_Strict):
    """How the training labels are corrupted (``kind: none`` keeps them), or a saved label file."""

    kind: str = "none"
    rate: float | None = Field(0.0, ge=0.0, lt=1.0, description="ignored for kinds none, matrix and human")
    seed: Seed | None = Field(None, description="noise seed; default: the run seed")
    file: str | None = Field(None, description="a label file written by `noisylab noise` or a run")
    options: PlainOptions = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from .noise import KINDS

        return check_choice(v, KINDS, "noise kind")


class ModelConfig(_Strict):
    """The network: a registry model (``arch``), plus a projection head for the methods that need
    one (SimCLR, the representation regularizer), optionally initialised from an encoder checkpoint."""

    arch: str = "cnn1d"
    options: PlainOptions = Field(default_factory=dict, description="keyword arguments of the model factory")
    encoder_checkpoint: str | None = Field(None, description=(
        "initialise the encoder (and projection head) from `noisylab pretrain`'s encoder.pt or the "
        "ICLR-2023 repo's SimCLR checkpoint (f.* / g.* keys)"))
    proj_dim: int = Field(128, ge=1, description="projection head output (SimCLR: 128)")
    proj_hidden: int | None = Field(None, ge=1, description="projection head hidden width (default: the feature width)")


# ----------------------------------------------------------------------------- registry sections
# Each method and each loss registers its schema beside its class (noisylab.registry); a section
# validates against the schema registered under its ``name``.
def _registered(registry: Registry, default: str):
    """A config section whose schema is the one ``registry`` holds under the section's ``name``
    (``default`` when the name is left out): the open union of every registered kind."""
    def validate(value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict):
            return value if value is None else registry.schema(default).model_validate(value)  # pydantic's own error
        name = value.get("name", default)
        if not isinstance(name, str) or name not in registry:
            names = registry.names()
            raise ValidationError.from_exception_data(registry.kind, [{
                "type": "union_tag_invalid", "loc": ("name",), "input": name,
                "ctx": {"discriminator": "'name'", "tag": str(name), "expected_tags": ", ".join(map(repr, names))}}])
        return registry.schema(name).model_validate(value)

    return Annotated[Any, BeforeValidator(validate), _Section(registry, default)]


class _Section:
    """Marks a field as a registry section (for error messages: the schema of the keys there)."""

    def __init__(self, registry: Registry, default: str) -> None:
        self.registry, self.default = registry, default


LossConfig = _registered(LOSSES, "ce")
"""A ``method.loss`` section: any registered loss (``noisylab.registry.LOSSES``)."""


MethodConfig = _registered(METHODS, "standard")
"""The ``method`` section: any registered method (``noisylab.registry.METHODS``)."""


def union_members(section: Any) -> dict[str, type[BaseModel]]:
    """``{name: schema}`` of a registry section (:data:`MethodConfig`, :data:`LossConfig`)."""
    marker = _section_of(section)
    return {e.name: e.schema for e in marker.registry.entries()} if marker is not None else {}


def _section_of(annotation: Any) -> "_Section | None":
    if get_origin(annotation) is Annotated:
        return next((m for m in get_args(annotation)[1:] if isinstance(m, _Section)), None)
    return None


class OptimConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.02, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-3, ge=0.0)
    nesterov: bool = False
    norm_bias_lr_scale: float = Field(1.0, gt=0.0, description=(
        "learning rate of normalisation-layer biases as a multiple of lr (their weight decay divided by "
        "it, so the decay per step is unchanged); airbench uses 64"))


class ScheduleConfig(_Strict):
    """Learning-rate schedule: stepped once per epoch (as in the ELR code), except ``triangle``,
    stepped after every optimizer step (airbench's warm-up and linear decay)."""

    name: Literal["constant", "multistep", "cosine", "cosine_restarts", "triangle"] = "constant"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0.0)
    T_0: int = Field(10, ge=1)
    T_mult: int = Field(1, ge=1)
    eta_min: float = Field(0.0, ge=0.0)
    start: float = Field(0.2, ge=0.0, description="triangle: multiplier at the first step")
    peak: float = Field(0.23, ge=0.0, le=1.0, description="triangle: share of the steps to reach the full lr")
    end: float = Field(0.07, ge=0.0, description="triangle: multiplier at the last step")


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    last_batch: str = Field("keep", description=(
        "the examples left after an epoch's full batches: keep (a smaller last batch, as PyTorch's "
        "DataLoader), drop (a different few each epoch) or spread (one more in each full batch, so no "
        "batch is smaller than batch_size; own-data recipe)"))
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    compile: bool = Field(False, description=(
        "torch.compile each network in place (inductor; checkpoints unchanged). Off by default: on 2 CPU cores "
        "it made fastnet's training steps 0.91-0.94x as fast (bench/compile_speed.py); on CUDA it may pay"))
    track_memorization: bool = True
    progress: bool = True
    tensorboard: bool | Literal["auto"] = Field("auto", description="true, false, or auto (when installed)")
    log_every: int = Field(50, ge=1, description="progress-bar refresh in steps (each costs a device sync)")
    memorization_from: Literal["training", "sample"] = Field("training", description=(
        "what the memorization curves read each epoch: training = the latest training-pass prediction of "
        "every training example (free: the forward passes training makes anyway, augmented, layers in "
        "training mode; at most 50,000 examples, the alarm's); sample = an evaluation pass of the epoch's "
        "model over memorization_sample un-augmented training examples (one more forward pass over them)"))
    memorization_sample: int = Field(5000, ge=0, description=(
        "memorization_from=sample: this many training examples (a fixed seeded draw; 0 = all of them)"))
    init_samples: int = Field(5000, ge=1, description=(
        "training images a data-dependent initialisation sees (fastnet's whitening layer; a seeded draw)"))
    lookahead_every: int = Field(0, ge=0, description="Lookahead weight averaging every this many steps (0 = off; airbench: 5)")
    lookahead_decay: float = Field(0.95 ** 5, ge=0.0, le=1.0, description="Lookahead's final decay")
    lookahead_ramp: float = Field(3.0, ge=0.0, description="decay = lookahead_decay * progress ** lookahead_ramp")
    skip_nonfinite: bool = Field(False, description="skip batches whose loss is NaN/inf instead of stopping "
                                                    "(one device sync per step)")
    state_precision: Literal["auto", "float32", "float16"] = Field("auto", description=(
        "storage of the [N, C] per-example tables (ELR targets, the detection record): auto = float16 "
        "from 2^27 entries (e.g. 134k examples x 1000 classes), float32 below"))
    state_storage: Literal["auto", "memory", "file"] = Field("auto", description=(
        "where the [N, C] per-example tables live: memory, or file = memory-mapped files in state_dir (the "
        "operating system keeps in memory what it has room for; CPU only); auto = file for a table of an eighth "
        "of the physical memory or more, on a CPU device, memory below. Never changes a number"))
    state_dir: str | None = Field(None, description=(
        "folder of the memory-mapped state files (default: output_dir); they are unlinked at once, so "
        "nothing stays there after the run"))

    @model_validator(mode="before")
    @classmethod
    def _old_drop_last_key(cls, data: Any) -> Any:
        """Configs before ``last_batch`` said ``drop_last: true | false``."""
        if isinstance(data, dict) and "drop_last" in data:
            if "last_batch" in data:
                raise ValueError("train.drop_last is now train.last_batch (keep | drop | spread): give only last_batch")
            data = dict(data)
            flag = data.pop("drop_last")
            data["last_batch"] = {True: "drop", False: "keep"}.get(flag, flag)
        return data

    @field_validator("last_batch")
    @classmethod
    def _known_last_batch(cls, v: str) -> str:
        from .data.batching import LAST_BATCH

        return check_choice(v, LAST_BATCH, "last_batch")


class DetectConfig(_Strict):
    """How the run flags suspected wrong labels at the end (noisylab.detect)."""

    method: str = Field("history", description="the detector: a name in noisylab.detect.DETECTORS (`noisylab detect --help` lists them)")
    filter_by: str = Field("auto", description="how the detector's probabilities become flags: auto = expected_f1 "
                                               "with cleanlab installed, else predicted_neq_given")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="for low_self_confidence")
    rank_by: str = Field(DEFAULT_RANK_BY, description="the quality score that ranks the examples (the quality "
                                                      "column): relative_confidence, self_confidence, normalized_margin")

    @model_validator(mode="before")
    @classmethod
    def _old_source_key(cls, data: Any) -> Any:
        """Configs of noisylab 0.1 runs said ``detect.source`` (auto | targets | pred_probs)."""
        if isinstance(data, dict) and "source" in data:
            data = dict(data)
            source = data.pop("source")
            if source in ("targets", "pred_probs"):
                data.setdefault("method", "targets" if source == "targets" else "predictions")
        return data

    @field_validator("method")
    @classmethod
    def _known_detector(cls, v: str) -> str:
        return check_choice(v, tuple(DETECTORS), "detector")

    @field_validator("rank_by")
    @classmethod
    def _known_score(cls, v: str) -> str:
        from .detect import SCORES

        return check_choice(v, SCORES, "quality score")

    @field_validator("filter_by")
    @classmethod
    def _known_filter(cls, v: str) -> str:
        from .detect import FILTERS

        return check_choice(v, FILTERS, "filter")


class CVConfig(_Strict):
    """K-fold cross-validation: out-of-sample probabilities for every training example (cleanlab's input)."""

    folds: int = Field(0, ge=0, description="0 = off; K >= 2 trains K models, each on K-1 folds")

    @field_validator("folds")
    @classmethod
    def _not_one(cls, v: int) -> int:
        if v == 1:
            raise ValueError("cv.folds=1 leaves nothing to predict on: use 0 (off) or at least 2")
        return v


class EvalConfig(_Strict):
    """How the engine evaluates and predicts (test accuracy, memorization, detection evidence)."""

    tta: Literal["none", "flip", "flip_translate"] = Field("none", description=(
        "test-time augmentation of image classifiers for the final model's accuracy on the evaluation sets "
        "(summary.json 'tta'): mean logits over mirror images (flip) and one-pixel shifts (flip_translate)"))


class Config(_Strict):
    """A whole experiment."""

    name: str = "run"
    seed: Seed = 0
    device: str = "auto"
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=lambda: METHODS.schema("standard")())
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    cv: CVConfig = Field(default_factory=CVConfig)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v == "auto" or v == "cpu" or v == "mps" or v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        if v.isdigit():  # the seed repos' `-d 0` means the first GPU
            return f"cuda:{v}"
        raise ValueError(f"unknown device '{v}' (valid: auto, cpu, cuda, cuda:N, mps)")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # the run folder is output_dir/name: a name must not reach outside output_dir
        if not v or v.strip() != v or v in (".", "..") or any(c in v for c in '/\\\0:'):
            raise ValueError(f"run name {v!r} must be a plain folder name (letters, digits, - _ .), "
                             "not empty and without / or \\")
        if len(v.encode()) > 100:
            raise ValueError(f"run name is {len(v.encode())} bytes long; use at most 100")
        return v

    @model_validator(mode="after")
    def _noise_rate_given(self) -> "Config":
        if self.noise.kind not in ("none", "human", "matrix") and self.noise.file is None and self.noise.rate is None:
            raise ValueError(f"noise.rate is required for noise kind '{self.noise.kind}'")
        if self.noise.kind in RATELESS_KINDS and self.noise.rate not in (None, 0.0) and self.noise.file is None:
            raise ValueError(f"noise.rate {self.noise.rate:g} means nothing for noise kind '{self.noise.kind}' "
                             f"(the labels {'stay as given' if self.noise.kind == 'none' else 'come from the ' + ('matrix' if self.noise.kind == 'matrix' else 'human label file')}); "
                             "set noise.kind (e.g. symmetric) or drop noise.rate")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------- loading
def _walk(model: type[BaseModel], loc: tuple, data: Any = None) -> tuple[list[str], Any]:
    """The config-file path of a pydantic error location and the schema that holds its last key
    (a registry section's schema is the one its ``name`` in ``data`` picks)."""
    path: list[str] = []
    node: Any = model
    parts = list(loc)
    while parts:
        part = str(parts.pop(0))
        path.append(part)
        data = data.get(part) if isinstance(data, dict) else None
        field = node.model_fields.get(part) if isinstance(node, type) and issubclass(node, BaseModel) else None
        if field is None:
            node = None
            continue
        section = _section_of(field.annotation) or next(
            (m for m in field.metadata if isinstance(m, _Section)), None)
        node = field.annotation
        if section is not None:
            name = data.get("name", section.default) if isinstance(data, dict) else section.default
            node = section.registry.schema(name) if name in section.registry else None
    return path, node


def _format_error(err: ValidationError, model: type[BaseModel], data: Any = None) -> str:
    first = err.errors()[0]
    if first["type"] == "extra_forbidden":
        path, _ = _walk(model, first["loc"], data)
        _, parent = _walk(model, first["loc"][:-1], data) if len(first["loc"]) > 1 else ([], model)
        valid = sorted(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        hint = did_you_mean(path[-1], valid) if valid else ""
        return f"unknown config key '{'.'.join(path)}'{hint}" + (f" (valid keys here: {', '.join(valid)})" if valid else "")
    path, _ = _walk(model, first["loc"], data)
    loc = ".".join(path)
    msg = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    if first["type"] == "union_tag_invalid":
        tags = first.get("ctx", {}).get("expected_tags", "").replace("'", "")
        tag = first["ctx"]["tag"]
        where = loc if loc.endswith("name") else f"{loc}.name"
        return f"config key '{where}': unknown name '{tag}'{did_you_mean(tag, tags.split(', '))} (valid: {tags})"
    as_number = _as_float(got)
    if as_number is not None and as_number != as_number:
        return f"config key '{loc}': not a number (nan); give a number"
    if as_number is not None and as_number in (float("inf"), float("-inf")):
        return f"config key '{loc}': {as_number} is not a finite number"
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {_short(got)})"
    return f"config key '{loc}': {msg}{shown}" if loc else f"config: {msg}"


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip().lstrip("."))
    except (ValueError, OverflowError):
        return None
    return None


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        return f"<a {type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[: limit - 5] + "...'"


def _fill_union_names(data: dict[str, Any]) -> dict[str, Any]:
    """Sections of a union schema written without their ``name`` take the default kind: the
    standard method, and the method's default loss."""
    method = data.get("method")
    if isinstance(method, dict):
        method.setdefault("name", "standard")
        if not isinstance(method["name"], str):
            raise ConfigError(f"config key 'method.name' must be a method name, not {type(method['name']).__name__}")
        schema = METHODS.schema(method["name"]) if method["name"] in METHODS else None
        loss = method.get("loss")
        if schema is not None and isinstance(loss, dict) and "loss" in schema.model_fields:
            loss.setdefault("name", schema.model_fields["loss"].default_factory().name)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value parsed as YAML, so ``0.1``, ``true``, ``[1, 2]`` work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key part")
    try:
        value = load_yaml_text(raw) if raw != "" else ""
    except DuplicateKey as err:
        raise ConfigError(f"override {_short(text)}: {err}") from None
    except yaml.YAMLError:
        value = raw
    except (ValueError, RecursionError):  # an int beyond Python's digit limit; nesting beyond the stack
        raise ConfigError(f"override '{_short(text)}': the value is too long or nested too deeply") from None
    return key.split("."), value


# Sections whose schema depends on their ``name``: switching the name starts them afresh.
UNION_SECTIONS = (("method",), ("method", "loss"))
RATELESS_KINDS = ("none", "human", "matrix")  # noise kinds whose level is not noise.rate


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted ``key=value`` in the nested dict ``data`` (in place; returns it).

    An override that changes the ``name`` of a method or loss section (``method.name=repreg``,
    ``method.loss.name=gce``) replaces that section by ``{name: new}``: the old kind's settings
    (ELR's ``lam``, say) mean nothing, or something else, to the new kind. Likewise another
    ``noise.kind`` drops ``noise.options`` (and ``noise.rate`` for kinds without a rate). Later
    overrides then set the new kind's keys, whatever their order on the command line (switches
    go first).
    """
    return apply_settings(data, [(parse_override(text), text) for text in overrides])


def _default_name(data: dict[str, Any], section: list[str]) -> str:
    """The kind a union section without a ``name`` has: the standard method, the method's default loss."""
    if section == ["method"]:
        return "standard"
    method = data.get("method") if isinstance(data.get("method"), dict) else {}
    name = method.get("name", "standard")
    schema = METHODS.schema(name) if name in METHODS else None
    loss = schema.model_fields.get("loss") if schema is not None else None
    return loss.default_factory().name if loss is not None else ""


def apply_settings(data: dict[str, Any], settings: list[tuple[tuple[list[str], Any], str]]) -> dict[str, Any]:
    """:func:`apply_overrides` for parsed ``((path, value), text)`` pairs (``text`` names the setting
    in errors)."""
    def is_switch(item) -> bool:
        (path, _), _ = item
        return (tuple(path[:-1]) in UNION_SECTIONS and path[-1] == "name") or path == ["noise", "kind"]

    switches = sorted(filter(is_switch, settings), key=lambda item: len(item[0][0]))  # method before method.loss
    for (path, value), text in switches + [item for item in settings if not is_switch(item)]:
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = child
        if path == ["noise", "kind"]:
            if node.get("kind", value) != value:  # another kind: its options mean nothing here
                node.pop("options", None)
                if value in RATELESS_KINDS:
                    node.pop("rate", None)
        elif is_switch(((path, value), text)) and node.get("name", _default_name(data, path[:-1])) != value:
            node.clear()
        node[path[-1]] = value
    return data


class DuplicateKey(yaml.YAMLError):
    """A mapping in a YAML text gives the same key twice (``key``, the 1-based ``first`` and
    ``second`` lines)."""

    def __init__(self, key: Any, first: int, second: int) -> None:
        where = f"line {first}" if first == second else f"lines {first} and {second}"
        super().__init__(f"key '{key}' is given twice ({where})")
        self.key, self.first, self.second = key, first, second


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python objects) that refuses a mapping with the same key twice,
    which PyYAML otherwise accepts silently, the later value winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may repeat base's keys
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
        return super().construct_mapping(node, deep)


def load_yaml_text(text: str) -> Any:
    """``text`` parsed as YAML with :class:`UniqueKeyLoader`: plain data only, no repeated keys."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)


PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
"""The recipes shipped with the package (``noisylab configs`` lists them; ``-c NAME`` reads one)."""


def packaged_configs() -> dict[str, str]:
    """Every packaged recipe: ``name -> the first sentence of its header comment`` (at most about
    90 characters), by name."""
    out = {}
    for path in sorted(PACKAGED_CONFIGS.glob("*.yaml")):
        header = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#").strip())
        first = _first_sentence(" ".join(header).strip())
        if len(first) > 90:
            first = first[:87].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
        out[path.stem] = first
    return out


def _first_sentence(text: str) -> str:
    """``text`` up to its first ``.`` or ``:`` that ends a clause outside parentheses (e.g. not the
    ``.`` of ``et al.``)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and ch in ".:" and (i + 1 == len(text) or text[i + 1] == " ") and not text[:i].endswith(" al"):
            return text[:i]
    return text


def resolve_config(path: str | Path) -> Path:
    """The file of ``-c PATH``: an existing path, else the packaged recipe of that name
    (``own_images`` or ``own_images.yaml``); ConfigError naming both when neither exists."""
    p = Path(path)
    if p.is_file():
        return p
    if p.parent == Path(".") and p.suffix in ("", ".yaml"):
        packaged = PACKAGED_CONFIGS / f"{p.stem}.yaml"
        if packaged.is_file():
            return packaged
    names = list(packaged_configs())
    hint = did_you_mean(p.stem, names) if p.parent == Path(".") else ""
    raise ConfigError(f"config file '{p}' not found{hint}: give a path or the name of a packaged recipe "
                      f"(`noisylab configs` lists them)")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in config file ``path`` (a path or a packaged recipe's name, :func:`resolve_config`)."""
    p = resolve_config(path)
    try:
        text = p.read_text(encoding="utf-8")
        data = load_yaml_text(text)
    except DuplicateKey as err:
        raise ConfigError(f"config file '{p}': {err}: keep one") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{p}' is not text (UTF-8 YAML expected)") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file '{p}': {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"config file '{p}' is not valid YAML{where}: {problem}") from None
    except (RecursionError, ValueError):  # ValueError: an int beyond Python's digit limit
        raise ConfigError(f"config file '{p}' is nested too deeply or holds a number too long to read") from None
    if data is None:
        raise ConfigError(f"config file '{p}' is empty: give at least the dataset, e.g. start from `noisylab configs` (mnist1d_elr)")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must contain a mapping of keys, not {type(data).__name__}")
    return data


def check_choice(value: str, choices: Any, what: str) -> str:
    """``value`` if it is one of ``choices`` (a registry's names), else one ValueError line with a
    did-you-mean and the valid names."""
    names = list(choices)
    if value not in names:
        raise ValueError(f"unknown {what} '{value}'{did_you_mean(value, names)} (valid: {', '.join(names)})")
    return value


def build_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(_fill_union_names(data))
    except ValidationError as err:
        raise ConfigError(_format_error(err, Config, data)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from the defaults), apply dotted overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    return build_config(apply_overrides(data, list(overrides or [])))


def save_config(cfg: Config, path: str | Path) -> None:
    from .checkpoint import atomic_write

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    atomic_write(path, lambda tmp: tmp.write_text(text))
