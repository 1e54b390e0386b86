"""Run configs for ``kseg train``: one YAML file per run, kept beside its results.

Every ``kseg train`` option has a key: its flag without the leading dashes, with ``_`` or ``-``
(``batch_size`` / ``batch-size``); ``model_arg`` is a mapping of builder arguments. The command
line wins over the file. ``--print-config`` prints the resolved run as YAML and exits; every run
writes the same YAML to ``OUT/config.yaml``, which ``--config`` takes back::

    kseg train --config run.yaml                  # run.yaml: {model: segnet_basic, data: camvid, crop: [180, 240]}
    kseg train --config run.yaml --epochs 3       # the file, three epochs
    kseg train --config run.yaml --print-config   # the resolved run, nothing trained

Like mmsegmentation's config files, minus the inheritance.
"""

import json
import pathlib

__all__ = ["load_config", "expand_argv", "resolved_config", "write_config", "dump_config", "train_keys"]

_META = ("config", "print_config", "help")


def _train_actions():
    from kseg.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices["train"]._actions if a.dest not in _META}


def train_keys():
    """The config keys ``kseg train`` accepts (the options' ``dest`` names)."""
    return sorted(_train_actions())


def load_config(path):
    """A run config (YAML or JSON) as ``{key: value}`` with ``_`` keys; unknown keys are an error."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            cfg = json.loads(text)
        else:
            import yaml

            cfg = yaml.safe_load(text)
    except Exception as err:  # yaml.YAMLError, json.JSONDecodeError
        raise ValueError(f"config {path}: cannot parse it ({err})") from err
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise ValueError(f"config {path}: expected a mapping of option: value, got {type(cfg).__name__}")
    keys = set(train_keys())
    out = {}
    for key, value in cfg.items():
        k = str(key).replace("-", "_")
        if k == "model_args":
            k = "model_arg"
        if k not in keys:
            raise ValueError(f"config {path}: unknown key {key!r}; the keys are kseg train's options: "
                             f"{', '.join(sorted(keys))}")
        out[k] = value
    return out


def _as_argv(cfg):
    actions = _train_actions()
    argv = []
    for key, value in cfg.items():
        action = actions[key]
        flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
        if value is None:
            continue
        if action.nargs == 0:  # store_true
            if value:
                argv.append(flag)
            continue
        if key == "model_arg":
            items = value.items() if isinstance(value, dict) else (str(v).split("=", 1) for v in value)
            for k, v in items:
                argv += [flag, f"{k}={v if isinstance(v, str) else repr(v)}"]
            continue
        if isinstance(value, (list, tuple)):
            argv += [flag, *(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def expand_argv(argv):
    """``kseg train ... --config FILE ...`` -> the file's options as flags, then the command line's."""
    argv = list(argv)
    if not argv or argv[0] != "train":
        return argv
    path = None
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
    if path is None:
        return argv
    return [argv[0], *_as_argv(load_config(path)), *argv[1:]]


def resolved_config(args):
    """The parsed ``kseg train`` arguments as a config dict (every option, defaults included)."""
    cfg = {}
    for key in train_keys():
        if not hasattr(args, key):
            continue
        value = getattr(args, key)
        if key == "model_arg":
            value = dict(value or [])
        elif isinstance(value, tuple):
            value = list(value)
        cfg[key] = value
    return cfg


def dump_config(cfg):
    import yaml

    return yaml.safe_dump(cfg, sort_keys=True, default_flow_style=None)


def write_config(args, out_dir):
    """Write the resolved config to ``out_dir/config.yaml`` (``kseg train --config`` reads it back).

    A folder holding a run is first checked as training will check it (:func:`kseg.runs.check_out_dir`):
    a finished or interrupted run without ``--resume`` / ``--overwrite`` is refused before anything in it
    changes, and a finished run's config is left as it is on ``--resume``.
    """
    from kseg import runs

    out = pathlib.Path(out_dir)
    path = out / "config.yaml"
    if not getattr(args, "overwrite", False):
        if runs.check_out_dir(out, resume=bool(getattr(args, "resume", False))) == "finished":
            return path
    out.mkdir(parents=True, exist_ok=True)
    from kseg.io import atomic_write_text

    atomic_write_text(path, "# kseg train --config " + str(path) + "  reruns this run\n"
                      + dump_config(resolved_config(args)))
    return path
