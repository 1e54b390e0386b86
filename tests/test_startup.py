"""Start-up: ``kseg --help | --version | list`` never import TensorFlow; ``import kseg`` is lazy (PEP 562)."""

import subprocess
import sys

import pytest

from kseg.models import registry

_NO_TF = """
import sys, kseg.cli
assert "tensorflow" not in sys.modules and "keras" not in sys.modules
for argv in (["--help"], ["--version"], ["list", "--help"]):
    try:
        kseg.cli.main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
assert kseg.cli.main(["list"]) == 0
heavy = sorted(m for m in ("tensorflow", "keras", "numpy", "jax") if m in sys.modules)
print("HEAVY", heavy)
"""


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)


def test_help_version_list_do_not_import_tensorflow():
    out = _run(_NO_TF).stdout
    assert "HEAVY []" in out
    assert "kseg 0.1.0" in out and "--verbose" in out
    lines = [line.split()[0] for line in out.splitlines() if line[:1].islower() and "semantic" in line]
    assert "segnet" in lines and "fcn8s" in lines  # the card table, printed without building models


def test_lazy_package_keeps_the_public_api():
    out = _run(
        "import sys, kseg\n"
        "assert 'tensorflow' not in sys.modules\n"
        "m = kseg.SegNetBasic(num_classes=3, input_shape=(16, 16, 3), width=4)\n"
        "assert 'tensorflow' in sys.modules and 'kseg.layers' in sys.modules and 'kseg.training' in sys.modules\n"
        "print(m.output_shape, kseg.models.get('fcn8s').num_params, kseg.crf.dense_crf.__name__,\n"
        "      'SegNet' in dir(kseg), kseg.models.segnet.SegNet is kseg.SegNet, kseg.export.__name__)\n"
        "try:\n    kseg.NoSuchModel\nexcept AttributeError as e:\n    print('ERR', e)\n"
    ).stdout
    assert "(None, 16, 16, 3) 134489759 dense_crf True True kseg.export" in out
    assert "ERR module 'kseg' has no attribute 'NoSuchModel'" in out


def test_static_card_table_equals_the_registry():
    live = registry.cards()
    assert [dict(vars(c), builder=None) for c in registry.static_cards()] == \
        [dict(vars(c), builder=None) for c in live], "run: python -m kseg.models.registry README.md"
    assert len(live) == len(registry.list_models()) > 20


@pytest.mark.parametrize("flag,level", [([], "2"), (["--verbose"], "0")])
def test_tensorflow_log_level_is_set_before_tensorflow_loads(flag, level):
    out = _run(
        "import os, sys, kseg.cli\n"
        "os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)\n"
        f"assert kseg.cli.main({flag!r} + ['list']) == 0\n"
        "print('LEVEL', os.environ['TF_CPP_MIN_LOG_LEVEL'], 'tensorflow' in sys.modules)\n"
    ).stdout
    assert f"LEVEL {level} False" in out


def test_commands_print_no_tensorflow_log_lines(tmp_path):
    missing = tmp_path / "missing.keras"
    proc = subprocess.run([sys.executable, "-m", "kseg.cli", "export", str(missing), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "kseg export: error" in proc.stderr and "missing.keras" in proc.stderr
    assert ".cc:" not in proc.stderr and "absl::InitializeLog" not in proc.stderr, proc.stderr
