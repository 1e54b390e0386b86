"""One registry of model cards: it drives the README table, the CLI (`--model NAME`) and the tests.

A model file registers its public builder with :func:`register`::

    @register(ModelCard(name="segnet", paper="SegNet: ...", year=2017, ...))
    def SegNet(num_classes=11, input_shape=(360, 480, 3), ...): ...

``kseg.models.get("segnet")`` returns the card; ``card.build(num_classes=12)`` (or calling the
card) builds the model; ``kseg.models.list()`` lists the names.
"""

import dataclasses
from typing import Callable, Optional

__all__ = ["ModelCard", "register", "get", "list_models", "cards"]

_REGISTRY = {}


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What a user (and the tests) should know about a model before building it.

    Attributes:
        name: registry key, lower case (``"segnet"``, ``"fcn8s"``).
        paper: paper title.
        authors: short author list.
        year: publication year.
        url: the paper (arXiv / CVF).
        reference_code: where the authors' own definition is (repo@commit : path).
        num_params: parameters at the builder's default arguments, counted like a Caffe
            prototxt (every weight, frozen ones included, except BatchNormalization moving
            statistics); asserted in tests.
        default_num_classes: classes at the default arguments (the dataset of the paper).
        output_stride: input size / size of the coarsest score map before upsampling (1 for
            models that predict at full resolution through a decoder).
        task: ``"semantic"``, ``"proposals"`` or ``"detection"``.
        backends: Keras backends the model runs on.
        tflite_builtins: whether the model converts to TFLite with builtin ops only.
        notes: anything a user must know (deviations, input handling).
        builder: the public builder function (set by :func:`register`).
    """

    name: str
    paper: str
    authors: str
    year: int
    url: str
    num_params: int
    default_num_classes: int
    output_stride: int
    reference_code: str = ""
    task: str = "semantic"
    backends: tuple = ("tensorflow", "jax")
    tflite_builtins: bool = True
    notes: str = ""
    builder: Optional[Callable] = None

    def build(self, **kwargs):
        """Build the model; keyword arguments go to the builder."""
        return self.builder(**kwargs)

    __call__ = build

    def summary_row(self):
        return {
            "name": self.name,
            "paper": f"{self.authors} {self.year}",
            "params": self.num_params,
            "output_stride": self.output_stride,
            "task": self.task,
        }


def register(card):
    """Decorator: attach `card` to a builder and add it to the registry."""

    def wrap(builder):
        if card.name in _REGISTRY:
            raise ValueError(f"model {card.name!r} is already registered")
        _REGISTRY[card.name] = dataclasses.replace(card, builder=builder)
        builder.card = _REGISTRY[card.name]
        return builder

    return wrap


def get(name):
    """The :class:`ModelCard` registered as `name` (case-insensitive; '-' and '_' ignored)."""
    key = str(name).lower().replace("-", "").replace("_", "")
    for card_name, card in _REGISTRY.items():
        if card_name.replace("-", "").replace("_", "") == key:
            return card
    raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")


def list_models(task=None):
    """Registered model names (optionally only those of one `task`), sorted."""
    return sorted(n for n, c in _REGISTRY.items() if task is None or c.task == task)


def cards():
    """All registered cards, sorted by name."""
    return [_REGISTRY[n] for n in list_models()]
