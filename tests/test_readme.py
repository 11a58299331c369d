"""The README's commands and promises against the package: what the first command installs and
runs, the extras, and the sections that salt's messages point to."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
PYPROJECT = (REPO / "pyproject.toml").read_text()
# distribution name -> import name, where they differ
IMPORT_NAMES = {
    "scikit-learn": "sklearn", "pyyaml": "yaml", "atlas-ftag-tools": "ftag",
    "puma-hep": "puma", "jsonargparse": "jsonargparse", "comet-ml": "comet_ml",
    "lion-pytorch": "lion_pytorch",
}  # fmt: skip


def commands() -> list[str]:
    """The one-line commands of the README's first section, in order."""
    section = README.split("## Two commands", 1)[1].split("\n# ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def requirements(key: str) -> list[str]:
    """The requirement strings of `key = [...]` in pyproject.toml (tomllib is 3.11+ only)."""
    body = re.search(rf"^{re.escape(key)} = \[(.*?)\]$", PYPROJECT, re.M | re.S)[1]
    return re.findall(r'"([^"]+)"', body)


def distribution(spec: str) -> str:
    return re.split(r"[<>=!\[ ]", spec, maxsplit=1)[0].lower()


def imported_by_salt() -> set[str]:
    """Top-level names of everything the salt package imports."""
    names = set()
    for path in (REPO / "salt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_the_first_command_installs_what_a_user_needs_and_the_tests_add_the_dev_tools():
    first, tests = commands()
    assert "pip install torch==2.13.0 -e . " in first  # no extras: no pytest, ruff, sklearn
    assert '-e ".[dev]"' in tests and "python -m pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install torch==2.13.0 -e ".[dev]" && python -m pytest' in ci


def test_the_first_command_tests_the_newest_run_and_prints_the_report_once():
    first = commands()[0]
    assert first.endswith("salt test logs/latest")  # no glob that two runs would both match
    assert "cat " not in first  # salt test prints the report itself


def test_salt_imports_no_development_tool_and_declares_what_it_imports():
    imported = imported_by_salt()
    dev = {IMPORT_NAMES.get(distribution(d), distribution(d)) for d in requirements("dev")}
    assert not imported & dev, f"salt imports development tools: {imported & dev}"
    declared = {
        IMPORT_NAMES.get(distribution(d), distribution(d)) for d in requirements("dependencies")
    }
    optional = {"comet_ml"}  # the Comet logger, imported only when configured
    stdlib = set(sys.stdlib_module_names)
    third_party = imported - stdlib - {"salt"} - optional
    assert third_party <= declared, f"imported but not declared: {third_party - declared}"


def test_sections_that_messages_name_exist():
    from salt.cli import COMET_SECTION

    assert f"## {COMET_SECTION}\n" in README


def test_reading_a_prediction_file_with_h5py_says_to_import_hdf5plugin():
    evaluation = README.split("\n# Evaluation\n", 1)[1].split("\n# ", 1)[0]
    assert "import hdf5plugin" in evaluation
