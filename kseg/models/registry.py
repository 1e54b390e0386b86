"""One registry of model cards: it drives the README table, the CLI (`--model NAME`) and the tests.

A model file registers its public builder with :func:`register`::

    @register(ModelCard(name="segnet", paper="SegNet: ...", year=2017, ...))
    def SegNet(num_classes=11, input_shape=(360, 480, 3), ...): ...

``kseg.models.get("segnet")`` returns the card; ``card.build(num_classes=12)`` (or calling the
card) builds the model; ``kseg.models.list()`` lists the names. :func:`get`, :func:`list_models`
and :func:`cards` import the model modules first (TensorFlow); :func:`static_cards` reads the same
cards from ``_card_table.py``, generated with the README table, without importing anything.
"""

import dataclasses
import importlib
import pprint
from typing import Callable, Optional

__all__ = ["ModelCard", "register", "get", "list_models", "cards", "static_cards", "markdown_table",
           "update_readme", "update_card_table", "signature_table"]

_REGISTRY = {}
_LOADED = False


def _ensure_loaded():
    """Register every card: the model modules register theirs when imported (lazily, see kseg.models)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        load_all = getattr(importlib.import_module("kseg.models"), "load_all", None)
        if load_all is not None:  # None: kseg.models stubbed to import single modules (no TensorFlow)
            load_all()


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
        input_sizes: which input sizes the model takes: ``"any"`` or the sizes and why (the
            builders' errors say the same).
        caffe_rename: ``{authors' Caffe layer name: kseg layer name}`` where they differ (for
            :func:`kseg.models.weights.assign_caffe`).
        caffe_skip: kseg layers the authors' Caffe files hold no weights for.
        builder: the public builder function (set by :func:`register`).

    ``card.presets`` lists the authors' released weights the model loads by name
    (``weights="voc"``): :class:`kseg.models.presets.Preset` records from
    ``kseg.models.presets.PRESETS[card.name]``. Loading one also sets the model's ``preprocess``
    layer to the preset's input transform (``channel_order``, ``mean``, ``std``, ``input_scale``);
    the builders' default transform is generic (:func:`kseg.models.weights.set_preprocessing`).
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
    input_sizes: str = "any"
    caffe_rename: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)
    caffe_skip: tuple = ()
    builder: Optional[Callable] = None

    @property
    def presets(self):
        """The authors' released weights this model loads by name (``kseg.models.presets.PRESETS``)."""
        try:
            from kseg.models.presets import PRESETS
        except ImportError:  # the preset data module is optional while it is being written
            return ()
        return tuple(PRESETS.get(self.name, ()))

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
            "presets": [p.name for p in self.presets],
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
    _ensure_loaded()
    key = str(name).lower().replace("-", "").replace("_", "")
    for card_name, card in _REGISTRY.items():
        if card_name.replace("-", "").replace("_", "") == key:
            return card
    raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")


def list_models(task=None):
    """Registered model names (optionally only those of one `task`), sorted."""
    _ensure_loaded()
    return sorted(n for n, c in _REGISTRY.items() if task is None or c.task == task)


def cards():
    """All registered cards, sorted by name."""
    return [_REGISTRY[n] for n in list_models()]


CARD_TABLE = "_card_table.py"
_CARD_FIELDS = [f.name for f in dataclasses.fields(ModelCard) if f.name != "builder"]


def _card_record(card):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(card).items() if k in _CARD_FIELDS}


def card_table_source():
    """The text of ``_card_table.py``: every registered card's fields except the builder."""
    records = pprint.pformat([_card_record(c) for c in cards()], width=110, sort_dicts=False)
    return (f'"""Generated by `python -m kseg.models.registry README.md` from the registry: the model cards\n'
            f'without their builders, for `kseg list` (no TensorFlow import). Do not edit."""\n\nCARDS = {records}\n')


def static_cards():
    """The cards of the generated table (``builder`` is None): no model module, no TensorFlow is imported.

    ``tests/test_readme.py`` checks that the table equals the live registry.
    """
    from kseg.models._card_table import CARDS

    return [ModelCard(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in r.items()}) for r in CARDS]


def update_card_table():
    """Rewrite ``_card_table.py`` next to this file; returns True if it changed."""
    import pathlib

    path = pathlib.Path(__file__).with_name(CARD_TABLE)
    new = card_table_source()
    old = path.read_text() if path.is_file() else None
    if new != old:
        path.write_text(new)
    return new != old


def signature_table():
    """docs/weights.md's "Builder signatures" table: every builder's defaults and own options (imports them)."""
    import inspect

    common = ("num_classes", "input_shape", "weights", "encoder_weights", "width_multiplier", "input_tensor", "name")
    rows = ["| model | builder | num_classes | input_shape default | model options (after the common seven) "
            "| input sizes |", "| --- | --- | ---: | --- | --- | --- |"]
    for card in cards():
        params = inspect.signature(card.builder).parameters
        if tuple(params)[:7] != common:
            raise ValueError(f"{card.name}: the builder's first parameters are {tuple(params)[:7]}, not {common}")
        own = [f"`**{k}`" if v.kind == v.VAR_KEYWORD else f"`{k}={v.default!r}`" for k, v in list(params.items())[7:]]
        rows.append(f"| `{card.name}` | `kseg.{card.builder.__name__}` | {params['num_classes'].default} | "
                    f"`{params['input_shape'].default}` | {', '.join(own) or '-'} | {card.input_sizes} |")
    return "\n".join(rows)


README_START = "<!-- models:start (generated by `python -m kseg.models.registry README.md`) -->"
README_END = "<!-- models:end -->"


def markdown_table():
    """The README's model table, one row per registered card."""
    rows = [
        "| model | paper | params | classes | output stride | task | backends | TFLite builtins |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for c in cards():
        rows.append(
            f"| `{c.name}` | [{c.authors} {c.year}]({c.url}) | {c.num_params:,} | {c.default_num_classes} | "
            f"{c.output_stride} | {c.task} | {', '.join(c.backends)} | {'yes' if c.tflite_builtins else 'no'} |"
        )
    return "\n".join(rows)


def update_readme(path):
    """Rewrite the table between the README markers; returns True if the file changed."""
    with open(path) as f:
        text = f.read()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{path} has no {README_START!r} ... {README_END!r} section")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{markdown_table()}\n{README_END}{tail}"
    if new != text:
        with open(path, "w") as f:
            f.write(new)
    return new != text


if __name__ == "__main__":
    import sys

    # Run as a script this file is `__main__`, not the module the models register with.
    from kseg.models import registry

    for readme in sys.argv[1:] or ["README.md"]:
        print(f"{readme}: {'updated' if registry.update_readme(readme) else 'up to date'}")
    print(f"kseg/models/{registry.CARD_TABLE}: {'updated' if registry.update_card_table() else 'up to date'}")
