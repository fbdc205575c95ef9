"""The provider metadata Airflow reads: every dotted path must import, every class must exist."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from airflow_provider_dreamina import __version__
from airflow_provider_dreamina.get_provider_info import get_provider_info
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook


def _import_dotted(path: str) -> object:
    module_name, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def test_every_module_and_class_imports() -> None:
    info = get_provider_info()
    for kind in ("hooks", "operators", "sensors", "triggers"):
        assert info[kind], kind
        for entry in info[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for connection in info["connection-types"]:
        assert _import_dotted(connection["hook-class-name"]) is DreaminaHook
    for link in info["extra-links"]:
        assert isinstance(_import_dotted(link), type)
    assert "airflow_provider_dreamina.links.DreaminaGalleryLink" in info["extra-links"]


def test_the_gallery_is_registered_once_through_the_plugins_entry_point() -> None:
    # Provider-info plugins load only with lazy discovery off, and a plugin registered both ways is
    # skipped the second time with an import error: the entry point alone (tests/plugins checks both).
    assert "plugins" not in get_provider_info()
    (entry_point,) = [ep for ep in entry_points(group="airflow.plugins") if "dreamina" in ep.value]
    plugin_class = entry_point.load()
    assert entry_point.name == plugin_class.name == "dreamina_gallery"
    assert [base.__name__ for base in plugin_class.__mro__][1] == "AirflowPlugin"


def test_connection_type_matches_the_hook() -> None:
    (connection,) = get_provider_info()["connection-types"]
    assert connection["connection-type"] == DreaminaHook.conn_type == "dreamina"
    assert connection["hook-name"] == DreaminaHook.hook_name
    behaviour = connection["ui-field-behaviour"]
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API token"}
    assert behaviour["placeholders"]["host"] == "https://model-api.runcomfy.net"
    # Airflow before 3.2 reads the same form from the hook.
    legacy = DreaminaHook.get_ui_field_behaviour()
    assert legacy["relabeling"] == behaviour["relabeling"]
    assert set(legacy["hidden_fields"]) == set(behaviour["hidden-fields"])
    assert "allowed_output_hosts" in connection["conn-fields"]
    # Every extra the spend module reads is in the form.
    assert {"account_url", "min_balance_usd", "price_usd"} <= set(connection["conn-fields"])


def test_metadata_and_entry_point() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-dreamina"
    assert info["versions"] == [__version__]
    (entry_point,) = [ep for ep in entry_points(group="apache_airflow_provider") if "dreamina" in ep.value]
    assert entry_point.load() is get_provider_info
