"""Open registries: every pluggable thing registers itself, with its config schema where it has
one, beside its definition, one way for all of them.

```python
@register_method("coteaching", schema=CoTeachingConfig)
class CoTeachingMethod(Method): ...

@register_loss("gce", schema=GCELossConfig)
def build_gce(cfg, num_examples, num_classes, given): return GCELoss(q=cfg.q)

@register_model("fastnet")
def fastnet(num_classes, input_shape, **options) -> nn.Module: ...

@register_dataset("cifar10")
def load_cifar10(root=None, **options) -> DataBundle: ...

@register_view("crop_flip")
def crop_flip(bundle) -> BatchTransform: ...

@register_detector("history")
def from_history(ev: Evidence) -> np.ndarray: ...
```

The config's ``method`` and ``method.loss`` sections, the CLI's choices and the did-you-mean
lists are read from here, so a new method, loss, model, dataset, view or detector is a new file
and nothing else (timm's ``@register_model`` is the model for this). The built-in entries live in the modules named in
each registry's ``builtins``; they are imported by name the first time a registry is read, so
this module imports nothing of noisylab's and no import cycle can start here. A plugin outside
the package registers the same way once its module is imported (``noisylab train`` imports the
modules listed in ``NOISYLAB_PLUGINS``, comma-separated).
"""
from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


def did_you_mean(word: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a misspelled ``word``, or ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, the object (a class or a builder), its config schema and
    ``extras``, what its registry documents beyond the object (a detector's ``counts_with``)."""

    name: str
    obj: Any
    schema: type | None
    extras: Mapping[str, Any] = field(default_factory=dict)


class Registry:
    """Names -> :class:`Entry`: the package's modules in name order, then the ``NOISYLAB_PLUGINS``
    modules, each module's entries in registration order.

    It reads like a read-only mapping of names to the registered objects (``name in r``,
    ``r[name]``, ``list(r)``, ``len(r)``); :meth:`get` gives the whole :class:`Entry` and the
    one-line error for an unknown name.

    Args:
        kind: what is registered, for messages (``"method"``).
        package: the package whose modules register the built-in entries on import.
    """

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, Entry] = {}
        self._loaded = False

    def register(self, name: str, schema: type | None = None, **extras: Any) -> Callable[[Any], Any]:
        """Decorator: register the decorated class or function under ``name`` with ``schema`` (and
        ``extras``, kept in its :class:`Entry`).

        A schema's ``name`` field must default to ``name`` (it is the section's discriminator)."""
        def wrap(obj: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            if schema is not None:
                field = getattr(schema, "model_fields", {}).get("name")
                if field is None or field.default != name:
                    raise ValueError(f"{self.kind} '{name}': its schema {schema.__name__} needs a field "
                                     f"`name: Literal['{name}'] = '{name}'`")
            self._entries[name] = Entry(name, obj, schema, dict(extras))
            return obj

        return wrap

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            package = importlib.import_module(self.package)
            builtins = sorted(f"{self.package}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
                              if not m.name.startswith("_"))
            plugins = [m.strip() for m in os.environ.get("NOISYLAB_PLUGINS", "").split(",") if m.strip()]
            modules = [*builtins, *plugins]
            for module in modules:
                importlib.import_module(module)
            # the order of the modules (then of registration in each), whoever imported one first
            rank = {m: i for i, m in enumerate(modules)}
            order = sorted(enumerate(self._entries.values()),
                           key=lambda ie: (rank.get(getattr(ie[1].obj, "__module__", ""), len(rank)), ie[0]))
            self._entries = {e.name: e for _, e in order}

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and name in self._entries

    def get(self, name: str) -> Entry:
        """The entry ``name``; one ValueError line with a did-you-mean and the valid names if unknown."""
        self._load()
        if name not in self._entries:
            names = list(self._entries)
            raise ValueError(f"unknown {self.kind} '{name}'{did_you_mean(name, names)} (valid: {', '.join(names)})")
        return self._entries[name]

    def schema(self, name: str) -> type:
        return self.get(name).schema

    def __getitem__(self, name: str) -> Any:
        """The registered object ``name`` (KeyError if unknown; :meth:`get` for the message)."""
        self._load()
        return self._entries[name].obj

    def __iter__(self):
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def entries(self) -> list[Entry]:
        self._load()
        return list(self._entries.values())


METHODS = Registry("method", "noisylab.methods")
"""Training methods: the class (a :class:`noisylab.methods.Method`) and its ``method`` schema."""

LOSSES = Registry("loss", "noisylab.losses")
"""Classification losses usable as ``method.loss``: a builder
``build(cfg, num_examples, num_classes, given) -> nn.Module`` and its schema."""

MODELS = Registry("model", "noisylab.models")
"""Network architectures: ``factory(num_classes, input_shape, **options) -> nn.Module``
(:func:`noisylab.models.create_model`)."""

MODEL_FAMILIES = Registry("model family", "noisylab.models")
"""Libraries whose every model is one name ``prefix:NAME`` (``timm:convnext_tiny``): a factory
``factory(model_name, num_classes, input_shape, **options) -> nn.Module``."""

DATASETS = Registry("dataset", "noisylab.data")
"""Dataset loaders: ``loader(root=None, **options) -> DataBundle`` (``data.dataset``)."""

VIEWS = Registry("augmentation", "noisylab.data")
"""Training views by the name configs use (``data.augment``, ``data.strong_augment``): a builder
``recipe(bundle) -> transform``, the transform batched ``(uint8 [B, C, H, W], generator) -> float``.
A transform that depends on which example it sees in which epoch sets ``uses_example_index = True``
and is then called ``(x, generator, index=int64 [B] dataset indices, epoch=int)``
(:func:`noisylab.data.transforms.apply_view`)."""

DETECTORS = Registry("detector", "noisylab.detect")
"""Label-error detectors: ``detector(ev: Evidence) -> P [n, C]``, each example's estimated true
class (``detect.method``, ``noisylab detect --method``). ``counts_with=fn``, an optional
``fn(ev) -> [n, C]`` of the same shape: the estimate whose confident joint says how many labels are
wrong, when ``P`` ranks better than it counts (:func:`noisylab.detect.detectors.from_history`)."""

register_method = METHODS.register
register_loss = LOSSES.register
register_model = MODELS.register
register_model_family = MODEL_FAMILIES.register
register_dataset = DATASETS.register
register_view = VIEWS.register
register_detector = DETECTORS.register
