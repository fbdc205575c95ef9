"""What a DAG file pays to import the provider: nothing that only a running task needs."""

from __future__ import annotations

import json
import subprocess
import sys

# Loaded when a task runs, never while a DAG file is parsed.
RUNTIME_ONLY = (
    "airflow_provider_dreamina.hooks.dreamina",
    "airflow_provider_dreamina.models",
    "airflow_provider_dreamina.triggers.dreamina",
    "airflow_provider_dreamina.waiting.policy",
    "airflow_provider_dreamina.runcomfy.send",
    "airflow_provider_dreamina.inputs.prepare",
    "airflow_provider_dreamina.submission.reattach",
    "airflow_provider_dreamina.outputs.saving",
    "airflow_provider_dreamina.metrics",
    "airflow_provider_dreamina.lineage",
    "openlineage",
    "statsd",
    "PIL",
)


def test_dag_facing_modules_load_no_runtime_machinery() -> None:
    code = (
        "import json, sys\n"
        "import airflow.sdk\n"
        "import airflow_provider_dreamina.operators.dreamina\n"
        "import airflow_provider_dreamina.sensors.dreamina\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = set(
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout.splitlines()[-1]
        )
    )
    assert not loaded & set(RUNTIME_ONLY)


def test_public_names_still_import() -> None:
    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook, DreaminaSettings  # noqa: F401
    from airflow_provider_dreamina.models import DEFAULT_MODEL_ID, ImageToVideoInput  # noqa: F401
    from airflow_provider_dreamina.operators.download import DreaminaDownloadOperator as Download
    from airflow_provider_dreamina.operators.dreamina import (  # noqa: F401
        MANIFEST_SUFFIX,
        DreaminaDownloadOperator,
        DreaminaImageToVideoOperator,
        DreaminaOutputLink,
    )
    from airflow_provider_dreamina.sensors.dreamina import DreaminaRequestSensor  # noqa: F401
    from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger  # noqa: F401

    assert DreaminaDownloadOperator is Download


def test_trigger_classpath_is_a_literal_that_imports() -> None:
    import importlib

    from airflow_provider_dreamina.triggers.dreamina import TRIGGER_CLASSPATH, DreaminaRequestTrigger

    classpath, kwargs = DreaminaRequestTrigger("r1").serialize()
    assert (
        classpath == TRIGGER_CLASSPATH == "airflow_provider_dreamina.triggers.dreamina.DreaminaRequestTrigger"
    )
    module, _, name = classpath.rpartition(".")
    revived = getattr(importlib.import_module(module), name)(**kwargs)
    assert revived.serialize() == (classpath, kwargs)
