"""What every chaos scenario asserts afterwards: paid once, saved intact, nothing partial, no token.

Each check reads the emulator's own records (its counters and requests, and its outputs fetched
anew with faults off) and compares them with what the deployment left on disk and in PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from airflow_provider_dreamina.emulator import EmulatorHandle
from tests.distributed.harness import Deployment

# The download operator writes `<file>.json` beside each file (README, "Manifest").
MANIFEST_SUFFIX = ".json"


@dataclass
class Payments:
    """Paid submissions at the emulator."""

    submissions: int
    distinct_inputs: int
    duplicates: int
    succeeded: list[str]


def payments(emulator: EmulatorHandle) -> Payments:
    jobs = emulator.requests()
    inputs = Counter(json.dumps(job["input"], sort_keys=True) for job in jobs)
    return Payments(
        submissions=emulator.counters()["submissions"],
        distinct_inputs=len(inputs),
        duplicates=sum(count - 1 for count in inputs.values()),
        succeeded=[job["request_id"] for job in jobs if job["state"] == "succeeded"],
    )


def source_digest(emulator: EmulatorHandle, request_id: str) -> str:
    """SHA-256 of a request's output as the emulator serves it (call with faults cleared)."""
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=120, trust_env=False) as client:
        answer = client.get(f"/v1/requests/{request_id}/result")
        answer.raise_for_status()
        digest = hashlib.sha256()
        with client.stream("GET", answer.json()["output"]["video"]) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def saved_outputs(folder: Path) -> dict[str, dict[str, Any]]:
    """Manifest of every saved file in ``folder``, by request id; checks each file against it."""
    saved: dict[str, dict[str, Any]] = {}
    for manifest_path in sorted(folder.glob(f"*{MANIFEST_SUFFIX}")):
        manifest = json.loads(manifest_path.read_text())
        video = manifest_path.with_name(manifest_path.name.removesuffix(MANIFEST_SUFFIX))
        assert video.is_file(), f"{manifest_path} describes a file that is not there"
        assert video.stat().st_size == manifest["bytes"], f"{video} is not the size its manifest says"
        assert file_digest(video) == manifest["sha256"], f"{video} does not match its manifest's SHA-256"
        assert manifest["request_id"] not in saved, f"request {manifest['request_id']} was saved twice"
        saved[manifest["request_id"]] = manifest
    return saved


def leftovers(folder: Path) -> list[str]:
    """Partial or temporary files: hidden names, ``.partial-`` names, ``.tmp`` names."""
    if not folder.exists():
        return []
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and (path.name.startswith(".") or ".partial" in path.name or path.suffix == ".tmp")
    )


def partial_files(folder: Path) -> dict[str, int]:
    """Size of each of the downloads' partial (not yet renamed) files so far."""
    sizes = {}
    for name in leftovers(folder):
        with suppress(FileNotFoundError):  # renamed into place meanwhile
            sizes[name] = (folder / name).stat().st_size
    return sizes


def partial_bytes(folder: Path) -> int:
    """Bytes in the downloads' partial (not yet renamed) files so far."""
    return sum(partial_files(folder).values())


def assert_nothing_partial(folder: Path) -> None:
    assert leftovers(folder) == [], f"partial or temporary files left in {folder}"


def assert_every_paid_output_saved(
    emulator: EmulatorHandle, folder: Path, *, unsaved_accepted: Collection[str] = ()
) -> dict[str, dict[str, Any]]:
    """Each succeeded request (but the accepted ones) is saved once in ``folder``, byte for byte."""
    emulator.clear_faults()
    emulator.configure(download_bytes_per_second=None)
    saved = saved_outputs(folder)
    paid = set(payments(emulator).succeeded) - set(unsaved_accepted)
    assert set(saved) == paid, f"saved {sorted(saved)}, paid and succeeded {sorted(paid)}"
    for request_id, manifest in saved.items():
        assert manifest["sha256"] == source_digest(emulator, request_id), f"{request_id}: SHA-256 differs"
    return saved


@dataclass
class TokenSearch:
    files: int
    bytes: int
    leaks: list[str]


def search_token(deployment: Deployment, token: str) -> TokenSearch:
    """The token in any log file (tasks, triggers, every component) or anywhere in the database."""
    needle = token.encode()
    paths = deployment.log_files() + sorted(deployment.process_logs_dir.glob("*.log"))
    leaks, searched = [], 0
    for path in paths:
        content = path.read_bytes()
        searched += len(content)
        if needle in content:
            leaks.append(str(path))
    dump = deployment.database_bytes()
    searched += len(dump)
    if needle in dump:
        leaks.append("the PostgreSQL database (pg_dump)")
    return TokenSearch(files=len(paths), bytes=searched, leaks=leaks)


def assert_token_nowhere(deployment: Deployment, token: str) -> TokenSearch:
    found = search_token(deployment, token)
    assert found.leaks == []
    # The search covered real material: task logs at least.
    assert any("dag_id=" in str(path) for path in deployment.log_files()), "no task log searched"
    return found
