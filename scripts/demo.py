"""`make demo` and `make demo-ui`: the example DAGs against a local RunComfy emulator, no token needed.

    python scripts/demo.py        run dreamina_image_to_video once (`airflow dags test`), check the
                                  video it saved, and print where it and its manifest are
    python scripts/demo.py --ui   start Airflow (`airflow standalone`) with every example DAG and the
                                  emulator, print the URL and login, run until Ctrl-C

Airflow lives in `.airflow-demo/` and videos go to `demo-output/`, both in the project root; the
user's own ~/airflow and any `AIRFLOW__...` or `AIRFLOW_CONN_...` settings in the shell are ignored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing, suppress
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / ".airflow-demo"
OUTPUT = ROOT / "demo-output"
DAGS = ROOT / "example_dags"
DAG_ID = "dreamina_image_to_video"
UI_LOGIN = ("admin", "admin")
# A real Dreamina video is megabytes; the emulator's is 256 KiB. Anything this small is broken.


class DemoError(Exception):
    """What went wrong, in words a newcomer can act on."""


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def airflow_env(**settings: str) -> dict[str, str]:
    """This machine's environment without Airflow settings, plus the demo's own."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
        and name not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")
    }
    # `airflow standalone` starts its components as `airflow ...` from PATH: use this interpreter's.
    path = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), inherited.get("PATH")]))
    return {
        **inherited,
        "PATH": path,
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME / 'airflow.db'}",
        "AIRFLOW_VAR_DREAMINA_OUTPUT_DIR": str(OUTPUT),
        **settings,
    }


def airflow(arguments: list[str], env: dict[str, str], log: Path, timeout: float) -> None:
    """Run an Airflow CLI command, its output going to `log`; raise with the log's tail on failure."""
    with log.open("wb") as output:
        try:
            result = subprocess.run(  # noqa: S603 - this interpreter running Airflow's CLI
                [sys.executable, "-m", "airflow", *arguments],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DemoError(f"`airflow {' '.join(arguments)}` took over {timeout:.0f} s; see {log}") from None
    if result.returncode != 0:
        raise DemoError(
            f"`airflow {' '.join(arguments)}` failed (exit code {result.returncode}); the end of {log}:\n"
            + tail(log)
        )


def tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the demo database, once per Airflow version."""
    airflow_version = metadata.version("apache-airflow")
    stamp = HOME / f".migrated-{airflow_version}"
    if stamp.exists() and (HOME / "airflow.db").exists():
        return
    say(f"creating the Airflow {airflow_version} database in {HOME.relative_to(ROOT)}/")
    airflow(["db", "migrate"], env, HOME / "db-migrate.log", timeout=300)
    stamp.touch()


def check_video(video: Path) -> dict[str, Any]:
    """The saved video decodes, frame by frame, and is exactly what its manifest describes."""
    from airflow_provider_dreamina.operators.dreamina import MANIFEST_SUFFIX
    from airflow_provider_dreamina.outputs.decode import decode_all
    from airflow_provider_dreamina.outputs.video import VideoFacts, inspect_file

    manifest_path = video.with_name(video.name + MANIFEST_SUFFIX)
    if not video.is_file():
        raise DemoError(f"the download task reported no video at {video}")
    if not manifest_path.is_file():
        raise DemoError(f"the video {video} has no manifest beside it ({manifest_path.name})")
    data = video.read_bytes()
    manifest = json.loads(manifest_path.read_text())
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.get("sha256") or len(data) != manifest.get("bytes"):
        raise DemoError(
            f"{video} ({len(data)} bytes, sha256 {digest}) does not match its manifest "
            f"({manifest.get('bytes')} bytes, sha256 {manifest.get('sha256')})"
        )
    facts = inspect_file(video)
    if manifest.get("video") != facts.as_manifest():
        raise DemoError(f"the manifest's video facts {manifest.get('video')} are not the file's {facts}")
    decoded = decode_all(video, name=video.name)
    if decoded != facts.frames:
        raise DemoError(f"{video} decodes to {decoded} of its {facts.frames} frames")
    summary = VideoFacts.from_manifest(manifest["video"]).summary()
    return dict(manifest, manifest_path=str(manifest_path), summary=summary, decoded=decoded)


def run_once() -> None:
    """`make demo`: one run of the example DAG, then proof of what it wrote."""
    from airflow_provider_dreamina.emulator import run_emulator

    started = time.monotonic()
    HOME.mkdir(exist_ok=True)
    OUTPUT.mkdir(exist_ok=True)
    migrate(airflow_env())
    # Short durations, but long enough that the sensor really defers to the trigger.
    with run_emulator(queue_seconds=1, run_seconds=4) as emulator:
        say(f"RunComfy emulator listening on {emulator.base_url}")
        env = airflow_env(AIRFLOW_CONN_DREAMINA_DEFAULT=emulator.connection_json())
        log = HOME / f"{DAG_ID}.log"
        say(f"running {DAG_ID} (submit >> wait >> download) with `airflow dags test`; log: {log}")
        airflow(["dags", "test", DAG_ID], env, log, timeout=180)
        jobs = emulator.requests()
        counters = emulator.counters()
    if len(jobs) != 1 or counters["submissions"] != 1:
        raise DemoError(f"expected exactly one generation at the emulator, saw {len(jobs)}; see {log}")
    request_id = jobs[0]["request_id"]
    videos = sorted(OUTPUT.rglob(f"{request_id}.mp4"))
    if len(videos) != 1:
        raise DemoError(f"request {request_id} succeeded, but {OUTPUT} holds no {request_id}.mp4; see {log}")
    manifest = check_video(videos[0])
    poster = manifest.get("poster") or {}
    say(f"request {request_id} made {manifest['summary']}, saved and decoded frame by frame")
    print(
        f"\n  video     {videos[0]}\n"
        f"            {manifest['summary']}; all {manifest['decoded']} frames decode\n"
        f"  poster    {poster.get('stored_uri', '(none)')}\n"
        f"  manifest  {manifest['manifest_path']}\n"
        f"  size      {manifest['bytes']} bytes\n"
        f"  sha256    {manifest['sha256']} (matches the manifest)\n"
        f"\nDone in {time.monotonic() - started:.0f} s. `make demo-ui` shows the example DAGs in the UI.",
        flush=True,
    )


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def choose_port(preferred: int) -> int:
    if port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_airflow(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"airflow standalone exited with code {process.returncode}:\n{tail(log)}")
        with suppress(httpx.HTTPError, ValueError):
            health = httpx.get(f"{url}/api/v2/monitor/health", timeout=5, trust_env=False).json()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if all((health.get(part) or {}).get("status") == "healthy" for part in parts):
                return
        time.sleep(1)
    raise DemoError(f"Airflow was not healthy within {timeout:.0f} s; the end of {log}:\n{tail(log)}")


def api_client(url: str, login: tuple[str, str]) -> httpx.Client:
    """A client of Airflow's REST API, signed in as the demo user."""
    client = httpx.Client(base_url=url, timeout=10, trust_env=False)
    answer = client.post("/auth/token", json={"username": login[0], "password": login[1]})
    answer.raise_for_status()
    client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return client


def emulator_port() -> int:
    """The emulator's port: the one of the last demo when it is free, so saved connections still work."""
    remembered = HOME / "emulator-port"
    preferred = int(os.environ.get("DEMO_EMULATOR_PORT") or 0) or (
        int(remembered.read_text()) if remembered.is_file() else 8765
    )
    port = choose_port(preferred)
    if remembered.is_file() and port != preferred:
        say(f"port {preferred} of the last demo's emulator is taken: using {port}; update connections to it")
    remembered.write_text(str(port))
    return port


def ensure_connection(url: str, login: tuple[str, str], emulator_json: str) -> None:
    """`dreamina_default` in Airflow's database (so the UI lists it, and Test works), aimed at the emulator.

    The port is stored beside the URL because the UI's Test in Airflow 3.3.2 sends the stored
    port and refuses a connection whose port is empty.
    """
    wanted = json.loads(emulator_json)
    body = {
        "connection_id": "dreamina_default",
        "conn_type": "dreamina",
        "host": wanted["host"],
        "port": int(wanted["host"].rsplit(":", 1)[1]),
        "password": wanted["password"],
        "extra": json.dumps(wanted["extra"]),
        "description": "The demo's RunComfy emulator (no token needed)",
    }
    with closing(api_client(url, login)) as client:
        existing = client.get("/api/v2/connections/dreamina_default")
        if existing.status_code == 404:
            client.post("/api/v2/connections", json=body).raise_for_status()
        elif str(existing.json().get("host") or "").startswith("http://127.0.0.1:"):
            # An earlier demo's emulator on another port; a connection the user aimed elsewhere stays.
            client.patch("/api/v2/connections/dreamina_default", json=body).raise_for_status()


def unpause_examples(url: str, login: tuple[str, str], timeout: float = 90) -> list[str]:
    """Unpause every example DAG once the DAG processor has stored it; returns their ids."""
    with closing(api_client(url, login)) as client:
        expected = sorted(path.stem for path in DAGS.glob("dreamina_*.py"))
        deadline = time.monotonic() + timeout
        while True:
            dags = client.get("/api/v2/dags", params={"dag_id_pattern": "dreamina_", "limit": 100}).json()
            found = sorted(dag["dag_id"] for dag in dags["dags"])
            if found == expected or time.monotonic() > deadline:
                break
            time.sleep(1)
        if found != expected:
            raise DemoError(f"the DAG processor stored {found}, not {expected}, within {timeout:.0f} s")
        for dag_id in found:
            client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
    return found


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_ui() -> None:
    """`make demo-ui`: Airflow standalone with the example DAGs and the emulator, until Ctrl-C."""
    from airflow_provider_dreamina.emulator import run_emulator

    # The end-to-end harness's process control: tag every process, stop groups, sweep the tagged.
    sys.path.insert(0, str(ROOT))
    from tests.e2e.harness import MARKER_VARIABLE, kill_marked_processes, stop_process_groups

    # Ctrl-C, and a plain `kill`, stop Airflow and the emulator cleanly (even when started from a
    # script whose shell ignores SIGINT in background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)

    HOME.mkdir(exist_ok=True)
    OUTPUT.mkdir(exist_ok=True)
    port = choose_port(int(os.environ.get("DEMO_PORT", "8080")))
    url = f"http://localhost:{port}"
    user, password = UI_LOGIN
    # The simple auth manager reads passwords from this file and generates none for users in it.
    passwords = HOME / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({user: password}) + "\n")
    marker = secrets.token_hex(8)
    settings = {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(choose_port(8793)),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(choose_port(8794)),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        # The Test button of Admin → Connections (disabled by default).
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        MARKER_VARIABLE: marker,
    }
    migrate(airflow_env(**settings))
    airflow(
        ["pools", "set", "dreamina", "4", "Dreamina generations (demo)", "--include-deferred"],
        airflow_env(**settings),
        HOME / "pools.log",
        timeout=120,
    )
    # Jobs a little slower than in `make demo`, so the UI shows tasks waiting in the deferred state.
    with run_emulator(port=emulator_port(), queue_seconds=3, run_seconds=15) as emulator:
        # The connection lives in the database (see ensure_connection), not in the environment,
        # so that the UI lists it, tests it, and edits to it take effect.
        env = airflow_env(**settings)
        log = HOME / "standalone.log"
        say(f"RunComfy emulator listening on {emulator.base_url}")
        say(f"starting `airflow standalone` (scheduler, triggerer, dag processor, API server); log: {log}")
        with log.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "airflow", "standalone"],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_for_airflow(url, process, log)
            ensure_connection(url, UI_LOGIN, emulator.connection_json())
            dag_ids = unpause_examples(url, UI_LOGIN)
            print(
                f"\n  Airflow UI  {url}\n"
                f"  login       {user} / {password}\n"
                f"  DAGs        {', '.join(dag_ids)} (unpaused)\n"
                f'  gallery     {url}/plugin/dreamina-videos  ("Dreamina videos" in the navigation)\n'
                f"  videos      {OUTPUT}/\n"
                f"  emulator    {emulator.base_url}  (dreamina_default: Admin → Connections, Test icon)\n"
                "\n  dreamina_content_pipeline (daily) runs its latest interval now unless it already has;\n"
                "  its asset then triggers dreamina_asset_consumer. Trigger dreamina_image_to_video\n"
                "  yourself, with any prompt.\n"
                "\nPress Ctrl-C to stop Airflow and the emulator.",
                flush=True,
            )
            while process.poll() is None:
                time.sleep(1)
            raise DemoError(f"airflow standalone exited on its own (code {process.returncode}); see {log}")
        except KeyboardInterrupt:
            say("stopping Airflow and the emulator")
        finally:
            # Standalone's process group, then any task process of ours that left it.
            stop_process_groups([process], grace=15)
            kill_marked_processes(marker)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ui", action="store_true", help="start the Airflow UI instead of one DAG run")
    arguments = parser.parse_args()
    try:
        run_ui() if arguments.ui else run_once()
    except DemoError as error:
        print(f"\n[demo] FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
