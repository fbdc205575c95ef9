"""Sphinx configuration of the airflow-provider-dreamina documentation site (``make docs``).

The build fetches nothing from the network (no intersphinx inventories), treats every warning as an
error and resolves every cross-reference inside the site (``-W -n``, see the Makefile). Examples are
included from the example DAGs between ``# [START name]`` and ``# [END name]`` markers, so every
piece of code the site shows is part of a DAG that the tests parse and run.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Importing the package for autodoc must not touch ~/airflow or load Airflow's examples.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow_provider_dreamina import __version__  # noqa: E402

# Airflow's API server imports FastAPI's test client, which warns about httpx; not ours to fix.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

project = "airflow-provider-dreamina"
author = "airflow-provider-dreamina developers"
copyright = "the airflow-provider-dreamina developers; Apache License 2.0"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build"]

# MyST reads SECURITY.md, RELIABILITY.md, BENCHMARKS.md and CHANGELOG.md, which pages here include
# as they are (``.. include:: ../SECURITY.md`` with ``:parser: myst_parser.sphinx_``): one source.
myst_heading_anchors = 3

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
    # A module documents what it defines; names it re-exports (``__all__``) are documented at home.
    "ignore-module-all": True,
}
# Sphinx 9's new autodoc writes the annotations it reads back onto pydantic's BaseModel, after which
# no model with ``extra="allow"`` can be defined (sphinx-doc/sphinx#14337): use the previous one.
autodoc_use_legacy_class_based = True
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "separated"
python_use_unqualified_type_names = True

# Names from other projects have no page here, and intersphinx would fetch their inventories from
# the network: they are shown as plain names. Every name of this provider must resolve.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(airflow|httpx|pydantic|pydantic_core|fastapi|starlette|sqlalchemy|fsspec|av|PIL|uvicorn"
        r"|upath|datetime|collections|typing|typing_extensions|enum|asyncio|logging|pathlib|io|os"
        r"|subprocess|threading|types|concurrent|contextlib|dataclasses|hashlib|json|ssl|socket"
        r"|weakref|email|urllib|http|queue|abc|numbers|decimal|re|ipaddress)(\..*)?",
    ),
    # Names that signatures and annotations show unqualified, from Airflow, pydantic and SQLAlchemy.
    (
        r"py:class",
        r"(Context|BaseOperator|TaskInstanceKey|PokeReturnValue|ObjectStoragePath|ConfigDict"
        r"|PydanticUndefined|Session|Query|AnswerT)",
    ),
    # Private base classes and type variables of the package, which the site does not document.
    (r"py:.*", r"airflow_provider_dreamina\..*\._\w+"),
    (r"py:.*", r"airflow_provider_dreamina\..*\.(T|AnswerT)"),
    # Sphinx splits the annotation of a private dataclass field (``tuple[A, B | None] | None``).
    (r"py:class", r"tuple\[.*"),
]

html_theme = "furo"
html_title = f"Dreamina provider {release}"
html_short_title = "Dreamina provider"
html_static_path = ["_static"]
html_css_files = ["dreamina.css"]
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": True,
}


def _resolve_like_python(app, env, node, contnode):
    """Resolve a short name in a docstring as Python would read it: a sibling module of the module
    the docstring is in, else the one object of the package with that name.

    Docstrings say ``:class:`DreaminaError``` and ``:mod:`transfer``` where the reader knows the
    package; Sphinx alone looks only in the docstring's own module. An ambiguous name still warns.
    """
    if node.get("refdomain") != "py" or node.get("refspecific"):
        return None
    target = node["reftarget"]
    domain = env.domains["py"]
    module = node.get("py:module") or ""
    package = module.rpartition(".")[0]
    candidates = [f"{package}.{target}"] if package else []
    for candidate in candidates:
        if candidate in domain.objects or candidate in domain.modules:
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], candidate, node, contnode
            )
    node["refspecific"] = True
    try:
        return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], target, node, contnode)
    finally:
        node["refspecific"] = False


def setup(app):
    app.connect("missing-reference", _resolve_like_python)
