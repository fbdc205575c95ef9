"""The gallery appears with Airflow's default configuration, and once, without an import error, when
providers are discovered eagerly too (``[core] lazy_discover_providers = False``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# What a user sees (`airflow plugins`) and what Airflow's UI reports as plugin import errors.
_LOADED = """
import json
from airflow import plugins_manager
info = plugins_manager.get_plugin_info()
# Airflow 3.1 keeps the errors in a module attribute.
errors = getattr(plugins_manager, "get_import_errors", lambda: plugins_manager.import_errors)()
print(json.dumps({"names": [p["name"] for p in info], "errors": errors}))
"""


def _environment(home: Path, **settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__PLUGINS_FOLDER=str(home / "plugins"),
        **settings,
    )
    return env


def _loaded(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _LOADED], env=env, capture_output=True, text=True, timeout=240, check=True
    )
    loaded: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_airflow_plugins_lists_the_gallery_with_the_default_configuration(tmp_path: Path) -> None:
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run(
        [str(airflow), "plugins", "--output", "json"],
        env=_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    listed = json.loads(done.stdout[done.stdout.index("[") :])
    (gallery,) = [plugin for plugin in listed if plugin["name"] == "dreamina_gallery"]
    assert "airflow_provider_dreamina" in json.dumps(gallery)
    assert "Dreamina videos" in json.dumps(gallery["external_views"])


@pytest.mark.parametrize("lazy", ["True", "False"], ids=["lazy-discovery", "eager-discovery"])
def test_the_gallery_loads_once_without_import_errors(tmp_path: Path, lazy: str) -> None:
    loaded = _loaded(_environment(tmp_path, AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS=lazy))
    assert loaded["names"].count("dreamina_gallery") == 1
    # Other providers may trip over their own double registration (the OpenLineage provider 2.20
    # does, when discovered eagerly); none of the errors may be this provider's.
    ours = {where: error for where, error in loaded["errors"].items() if "dreamina" in f"{where} {error}"}
    assert ours == {}
