"""Provider metadata for Airflow's ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_dreamina import __version__

_INTEGRATION = "Dreamina (RunComfy)"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-dreamina",
        "name": "Dreamina",
        "description": (
            "Generate videos from an image and a prompt with ByteDance Dreamina 3.0 Pro "
            "image-to-video, served by RunComfy's Model API."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://www.runcomfy.com/models/bytedance/dreamina-3-0/pro/image-to-video/api",
                "tags": ["ai", "service"],
            }
        ],
        "hooks": [
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_dreamina.hooks.dreamina"]}
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_dreamina.operators.dreamina"],
            }
        ],
        "sensors": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_dreamina.sensors.dreamina"],
            }
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_dreamina.triggers.dreamina"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "dreamina",
                "hook-class-name": "airflow_provider_dreamina.hooks.dreamina.DreaminaHook",
                "hook-name": "Dreamina (RunComfy)",
                "conn-fields": {
                    "allowed_output_hosts": {
                        "label": "Allowed output hosts",
                        "schema": {"type": ["array", "null"], "items": {"type": "string"}},
                        "description": (
                            "Hosts beyond *.runcomfy.net that outputs may be downloaded from; "
                            "plain http is allowed only for these (for example a local emulator)."
                        ),
                    },
                    "allowed_image_roots": {
                        "label": "Allowed image roots",
                        "schema": {"type": ["array", "null"], "items": {"type": "string"}},
                        "description": (
                            "Directories and object-storage prefixes (such as /data/frames or "
                            "s3://bucket/inputs/) under which local and object-storage input images may "
                            "be read, for every DAG using this connection. Nothing else is read."
                        ),
                    },
                    "allowed_image_hosts": {
                        "label": "Allowed image hosts",
                        "schema": {"type": ["array", "null"], "items": {"type": "string"}},
                        "description": (
                            "Hosts the image preflight may fetch from although they are not public "
                            "https hosts (for example a local emulator); plain http is allowed only for "
                            "these."
                        ),
                    },
                    "request_deadline": {
                        "label": "Deadline per API call (seconds)",
                        "schema": {"type": ["number", "null"], "default": 120},
                        "description": (
                            "Wall-clock limit on one call and its whole answer, however slowly it arrives."
                        ),
                    },
                    "preflight_deadline": {
                        "label": "Image preflight deadline (seconds)",
                        "schema": {"type": ["number", "null"], "default": 60},
                    },
                    "download_deadline": {
                        "label": "Download deadline per output (seconds)",
                        "schema": {"type": ["number", "null"], "default": 3600},
                    },
                    "max_error_seconds": {
                        "label": "Outage tolerance while waiting (seconds)",
                        "schema": {"type": ["number", "null"], "minimum": 0, "default": 900},
                        "description": (
                            "How long a wait rides out transient errors (5xx, 429, resets, timeouts) "
                            "while the paid generation runs on; a task's max_error_seconds takes "
                            "precedence."
                        ),
                    },
                    "timeout": {
                        "label": "Read timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": 30},
                    },
                    "max_retries": {
                        "label": "Retries for reads and cancels",
                        "schema": {"type": ["integer", "null"], "default": 5},
                    },
                    "account_url": {
                        "label": "Account API URL",
                        "schema": {"type": ["string", "null"]},
                        "description": (
                            "Where the balance is asked, with the same token (default "
                            "https://api.runcomfy.net)."
                        ),
                    },
                    "min_balance_usd": {
                        "label": "Balance reserve (USD)",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                        "description": (
                            "A task fails without submitting when its generation would leave less "
                            "than this on the account; a task's min_balance_usd takes precedence."
                        ),
                    },
                    "price_usd": {
                        "label": "Price per generation (USD)",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                        "description": "Used for estimates when RunComfy's model info gives no price.",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"host": "Base URL", "password": "API token"},
                    "placeholders": {
                        "host": "https://model-api.runcomfy.net",
                        "password": "RunComfy API token",
                    },
                },
            }
        ],
        "extra-links": [
            "airflow_provider_dreamina.links.DreaminaOutputLink",
            "airflow_provider_dreamina.links.DreaminaGalleryLink",
        ],
        # No "plugins" here: the gallery is registered through the `airflow.plugins` entry point,
        # which Airflow loads with its default configuration; listing it here too would make Airflow
        # skip it as "already registered" (and report that as a plugin import error) whenever
        # [core] lazy_discover_providers is False.
    }
