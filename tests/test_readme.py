"""The README's quick start and model table stay true to the package."""

import pathlib
import re

from kseg.models import registry

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_model_table_is_generated_from_the_registry():
    text = README.read_text()
    start, end = text.index(registry.README_START), text.index(registry.README_END)
    table = text[start + len(registry.README_START):end].strip()
    assert table == registry.markdown_table(), "run: python -m kseg.models.registry README.md"
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(registry.list_models()) > 0


def test_quick_start_has_the_three_commands_ci_runs():
    quick = README.read_text().split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(pip install[^#\n]*|kseg demo[^#\n]*|pytest[^#\n]*)", quick, re.M)
    assert [c.split()[0] for c in commands] == ["pip", "kseg", "pytest"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[0].strip() in ci and "\npytest" in ci
