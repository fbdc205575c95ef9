"""The example DAGs import cleanly, quickly and without touching the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLE_DAGS = Path(__file__).resolve().parents[1] / "example_dags"
EXPECTED_DAG_IDS = [
    "dreamina_asset_consumer",
    "dreamina_async_hook",
    "dreamina_content_pipeline",
    "dreamina_image_to_video",
    "dreamina_single_task",
]

# Run in a fresh interpreter, so that the provider's own modules are imported (not taken from
# the cache) while every way out to the network is watched.
_IMPORT_DAGS = textwrap.dedent(
    """
    import json, socket, sys, time

    attempts = []

    def refuse(name):
        def call(*args, **kwargs):
            attempts.append(f"{name}{args[1:] if name.startswith('socket.connect') else args[:2]}")
            raise OSError(f"network access while parsing DAGs: {name}")
        return call

    socket.socket.connect = refuse("socket.connect")
    socket.socket.connect_ex = refuse("socket.connect_ex")
    socket.create_connection = refuse("socket.create_connection")
    socket.getaddrinfo = refuse("socket.getaddrinfo")

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    started = time.monotonic()
    bag = DagBag(dag_folder=sys.argv[1])  # no Airflow examples: load_examples is off
    print(json.dumps({
        "dag_ids": sorted(bag.dag_ids),
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "attempts": attempts,
        "seconds": time.monotonic() - started,
        "tasks": {dag_id: sorted(bag.dags[dag_id].task_ids) for dag_id in bag.dag_ids},
        "pools": sorted({t.pool for dag in bag.dags.values() for t in dag.tasks}),
        "params": {dag_id: sorted(bag.dags[dag_id].params) for dag_id in bag.dag_ids},
        "labelled": {
            dag_id: sorted(t.task_id for t in dag.tasks if getattr(t, "map_index_template", None))
            for dag_id, dag in bag.dags.items()
        },
        "outlets": {
            dag_id: {t.task_id: sorted(a.name for a in t.outlets) for t in dag.tasks if t.outlets}
            for dag_id, dag in bag.dags.items()
        },
    }))
    """
)


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Were a DAG file to look anything up while parsing, this is where it would go.
            "AIRFLOW_CONN_DREAMINA_DEFAULT": json.dumps(
                {"conn_type": "dreamina", "host": "https://unreachable.invalid", "password": "parse-token"}
            ),
        }
    )
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_DAGS, str(EXAMPLE_DAGS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def test_every_example_dag_imports_without_errors(parsed: dict[str, object]) -> None:
    assert parsed["import_errors"] == {}
    assert parsed["dag_ids"] == EXPECTED_DAG_IDS


def test_importing_the_example_dags_makes_no_network_call(parsed: dict[str, object]) -> None:
    assert parsed["attempts"] == []


def test_example_dags_parse_quickly(parsed: dict[str, object]) -> None:
    # Parsing runs in the DAG processor every few seconds: no heavy work at import time. The
    # bound is loose (the first file pays for importing the provider); a network call or a
    # file scan at parse time would break it.
    assert float(parsed["seconds"]) < 10  # type: ignore[arg-type]


def test_the_examples_have_the_tasks_the_readme_describes(parsed: dict[str, object]) -> None:
    assert parsed["tasks"] == {
        "dreamina_asset_consumer": ["summarize"],
        "dreamina_async_hook": ["check_funds", "follow"],
        "dreamina_content_pipeline": [
            "plan",
            "publish",
            "read_batch",
            "video.download",
            "video.download_again",
            "video.generate",
            "video.regenerate",
            "video.review",
            "video.review_again",
            "video.verdict",
        ],
        "dreamina_image_to_video": ["download", "submit", "wait"],
        "dreamina_single_task": ["download", "generate"],
    }
    assert "dreamina" in parsed["pools"]  # type: ignore[operator]


def test_every_download_announces_its_videos_to_the_gallery(parsed: dict[str, object]) -> None:
    outlets = parsed["outlets"]
    assert outlets == {  # the gallery finds videos through these events
        "dreamina_asset_consumer": {},
        "dreamina_async_hook": {},
        "dreamina_content_pipeline": {
            "publish": ["dreamina_daily_videos"],
            "video.download": ["dreamina_videos"],
            "video.download_again": ["dreamina_videos"],
        },
        "dreamina_image_to_video": {"download": ["dreamina_videos"]},
        "dreamina_single_task": {"download": ["dreamina_videos"]},
    }


def test_the_pipeline_can_be_reviewed_and_labels_its_rows(parsed: dict[str, object]) -> None:
    assert parsed["params"]["dreamina_content_pipeline"] == ["budget_usd", "review"]  # type: ignore[index]
    # Every mapped task says which row it is.
    assert parsed["labelled"]["dreamina_content_pipeline"] == [  # type: ignore[index]
        "video.download",
        "video.download_again",
        "video.generate",
        "video.regenerate",
        "video.review",
        "video.review_again",
        "video.verdict",
    ]
