"""The docs' module map names every module of the package, and nothing that is not one."""

from __future__ import annotations

import re
from pathlib import Path

import airflow_provider_dreamina

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(airflow_provider_dreamina.__file__).parent


def modules() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_every_module_is_on_the_map_and_every_entry_is_a_module() -> None:
    text = (ROOT / "docs" / "modules.rst").read_text()
    mapped = set(re.findall(r"^``(airflow_provider_dreamina(?:\.\w+)*)``$", text, flags=re.MULTILINE))
    assert modules() - mapped == set(), "modules missing from docs/modules.rst"
    assert mapped - modules() == set(), "docs/modules.rst names modules that do not exist"


def test_every_subpackage_says_what_it_decides() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent.name in ("hooks", "operators", "sensors", "triggers"):
            continue  # Airflow's role packages, as in the official providers
        assert init.read_text().lstrip().startswith('"""'), f"{init} has no docstring"
