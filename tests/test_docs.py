"""The README and the documentation site stay true to the code and to the example DAGs.

``make docs`` builds the site with warnings as errors; these checks run with the unit tests, so a
change that adds an argument, an extra or an error class without documenting it fails at once.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from airflow_provider_dreamina import exceptions
from airflow_provider_dreamina.get_provider_info import get_provider_info
from airflow_provider_dreamina.operators.dreamina import (
    DreaminaDownloadOperator,
    DreaminaImageToVideoOperator,
)
from airflow_provider_dreamina.sensors.dreamina import DreaminaRequestSensor

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
EXAMPLE_DAGS = ROOT / "example_dags"
# The README's one example is a copy of this marked block of an example DAG.
README_EXAMPLE = (EXAMPLE_DAGS / "dreamina_single_task.py", "dreamina_single_task")

_LITERALINCLUDE = re.compile(
    r"^\.\. literalinclude:: (?P<path>\S+)\n(?P<options>(?:   :[\w-]+:.*\n)+)", flags=re.MULTILINE
)


def marked_block(path: Path, name: str) -> str:
    """The lines between ``# [START name]`` and ``# [END name]``, as ``literalinclude`` shows them."""
    lines = path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == f"# [START {name}]"]
    ends = [i for i, line in enumerate(lines) if line.strip() == f"# [END {name}]"]
    assert len(starts) == 1 and len(ends) == 1, f"{path.name}: one START and one END marker for {name!r}"
    assert starts[0] < ends[0], f"{path.name}: START {name!r} comes after its END"
    return "\n".join(lines[starts[0] + 1 : ends[0]]).strip("\n")


def test_readme_is_a_short_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "make demo" in text and "make test" in text
    assert "make docs" in text and "docs/_build/html/index.html" in text


def test_the_readme_example_is_the_example_dag() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the README shows one Python example"
    assert blocks[0].strip("\n") == marked_block(*README_EXAMPLE), (
        f"the README's example differs from the block {README_EXAMPLE[1]!r} of {README_EXAMPLE[0].name}: "
        "copy the block into the README"
    )


def test_every_marker_in_the_example_dags_is_closed() -> None:
    for path in sorted(EXAMPLE_DAGS.glob("*.py")):
        names = re.findall(r"^\s*# \[START (\S+)\]$", path.read_text(), flags=re.MULTILINE)
        for name in names:
            marked_block(path, name)


def literalincludes() -> list[tuple[str, Path, dict[str, str]]]:
    found = []
    for page in sorted(DOCS.glob("*.rst")):
        for match in _LITERALINCLUDE.finditer(page.read_text()):
            options = dict(re.findall(r"   :([\w-]+):\s*(.*)", match["options"]))
            found.append((page.name, (DOCS / match["path"]).resolve(), options))
    return found


def test_the_docs_show_code_only_from_the_example_dags() -> None:
    includes = literalincludes()
    assert includes
    for page, path, options in includes:
        assert path.parent == EXAMPLE_DAGS, f"{page} includes {path}: code comes from example_dags/"
        start = options.get("start-after", "").removeprefix("[START ").removesuffix("]")
        end = options.get("end-before", "").removeprefix("[END ").removesuffix("]")
        assert start and start == end, f"{page}: include {path.name} between START/END markers of one name"
        marked_block(path, start)
    for page in sorted(DOCS.glob("*.rst")):
        assert ".. code-block:: python" not in page.read_text(), f"{page.name}: include the code from a DAG"


def test_every_module_on_the_map_is_in_the_api_reference() -> None:
    mapped = set(
        re.findall(
            r"^``(airflow_provider_dreamina(?:\.\w+)*)``$", (DOCS / "modules.rst").read_text(), re.MULTILINE
        )
    )
    documented = set()
    for page in ("api.rst", "internals.rst"):
        documented |= set(re.findall(r"^\.\. automodule:: (\S+)$", (DOCS / page).read_text(), re.MULTILINE))
    assert mapped - documented == set(), "add these modules to docs/internals.rst (or docs/api.rst)"
    assert documented - mapped == set(), "docs/api.rst or docs/internals.rst name modules not on the map"


def documented_names(page: str) -> set[str]:
    """The names in the first column of the page's tables (``* - ``name``, ``other```)."""
    names = set()
    for row in re.findall(r"^   \* - (.*)$", (DOCS / page).read_text(), flags=re.MULTILINE):
        names.update(re.findall(r"``(\w+)``", row))
    return names


@pytest.mark.parametrize(
    ("operator", "page"),
    [
        (DreaminaImageToVideoOperator, "operators.rst"),
        (DreaminaDownloadOperator, "operators.rst"),
        (DreaminaRequestSensor, "sensors.rst"),
    ],
)
def test_every_argument_is_documented(operator: type, page: str) -> None:
    arguments = {
        name
        for name, parameter in inspect.signature(operator.__init__).parameters.items()
        if name != "self" and parameter.kind is not inspect.Parameter.VAR_KEYWORD
    }
    assert arguments - documented_names(page) == set(), f"document these arguments in docs/{page}"


def test_every_connection_extra_is_documented() -> None:
    source = (ROOT / "airflow_provider_dreamina" / "runcomfy" / "settings.py").read_text()
    read = set(re.findall(r'extra(?:\.get\(|\[)"(\w+)"', source))
    read |= set(re.findall(r'_seconds\(\s*extra,\s*"(\w+)"', source))
    (connection_type,) = get_provider_info()["connection-types"]
    in_form = set(connection_type["conn-fields"])
    assert in_form <= read, "the form shows extras the hook does not read"
    missing = read - documented_names("connections.rst")
    assert missing == set(), "document these extras in docs/connections.rst"


def test_every_error_is_in_the_errors_table_with_its_code() -> None:
    rows = re.findall(
        r"^   \* - ``(Dreamina\w+)`` \(``(\w+)``\)\n     - (yes|no)$",
        (DOCS / "hook.rst").read_text(),
        flags=re.MULTILINE,
    )
    table = {name: (code, retryable == "yes") for name, code, retryable in rows}
    classes = {
        name: cls
        for name, cls in vars(exceptions).items()
        if inspect.isclass(cls) and issubclass(cls, exceptions.DreaminaError)
    }
    assert set(classes) == set(table), "docs/hook.rst's errors table and exceptions.py list other classes"
    for name, cls in classes.items():
        expected = (cls.code, cls.retryable)
        assert table[name] == expected, f"docs/hook.rst: {name} has code and retryable {expected}"
