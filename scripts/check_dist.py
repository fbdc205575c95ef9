"""Check the built artifacts as a user meets them: `make check-dist` (after `make dist`).

The wheel holds the package and nothing else; the sdist holds what rebuilding and testing need.
Then the wheel (never the source tree) is installed into a clean virtualenv with the constraints,
and Airflow, with its default configuration and a home of its own, must list the provider, show the
gallery plugin without plugin import errors, and parse every example DAG without import errors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "airflow_provider_dreamina"
# What the sdist must hold beside the package: enough to rebuild, test and read the docs.
SDIST_MUST_HOLD = (
    "pyproject.toml",
    "README.md",
    "CHANGELOG.md",
    "LICENSE",
    "Makefile",
    "docs/modules.rst",
    "docs/lineage.rst",
    "docs/metrics.rst",
    "constraints/airflow-3.3.2.txt",
    "example_dags/dreamina_image_to_video.py",
    "tests/conftest.py",
    "scripts/check_dist.py",
)
_REPORT = """
import json, sys
from airflow import plugins_manager
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
plugins = plugins_manager.get_plugin_info()
# Airflow 3.1 keeps the errors in a module attribute.
errors = getattr(plugins_manager, "get_import_errors", lambda: plugins_manager.import_errors)()
print(json.dumps({
    "plugins": [plugin["name"] for plugin in plugins],
    "plugin_errors": errors,
    "dag_ids": sorted(bag.dag_ids),
    "dag_errors": {str(path): str(error) for path, error in bag.import_errors.items()},
}))
"""


def fail(message: str) -> None:
    print(f"check-dist: {message}", file=sys.stderr)
    raise SystemExit(1)


def only(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        fail(f"expected one {pattern} in {directory}, found {[path.name for path in found]}: run make dist")
    return found[0]


def check_wheel(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    strays = [name for name in names if not name.startswith((f"{PACKAGE}/", f"{PACKAGE.replace('_', '-')}"))]
    strays = [name for name in strays if ".dist-info/" not in name]
    if strays:
        fail(f"the wheel holds more than the package: {strays[:10]}")
    for needed in (f"{PACKAGE}/py.typed", f"{PACKAGE}/plugins/templates/gallery.html"):
        if needed not in names:
            fail(f"the wheel lacks {needed}")
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    if "[airflow.plugins]" not in text or "[apache_airflow_provider]" not in text:
        fail(f"the wheel's entry points miss airflow.plugins or apache_airflow_provider:\n{text}")
    print(f"check-dist: {wheel.name}: {len(names)} files, the package only")


def check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}
    missing = [name for name in SDIST_MUST_HOLD if name not in names]
    if missing:
        fail(f"the sdist lacks {missing}")
    strays = sorted(name for name in names if name.startswith((".venv", ".airflow", "dist/", ".git/")))
    if strays:
        fail(f"the sdist holds local files: {strays[:10]}")
    print(f"check-dist: {sdist.name}: {len(names)} files, {len(SDIST_MUST_HOLD)} required ones present")


def run(command: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def check_installed(wheel: Path, constraints: Path, work: Path) -> None:
    started = time.monotonic()
    target = work / "venv"
    venv.create(target, with_pip=True)
    python = str(target / "bin" / "python")
    run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
            "-c",
            str(constraints),
        ]
    )
    print(f"check-dist: installed the wheel into a clean virtualenv in {time.monotonic() - started:.0f} s")
    home = work / "airflow"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PATH=f"{target / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    )
    airflow = str(target / "bin" / "airflow")
    providers = json.loads(_json_part(run([airflow, "providers", "list", "--output", "json"], env)))
    if not any(provider.get("package_name") == "airflow-provider-dreamina" for provider in providers):
        fail(f"airflow providers list does not show airflow-provider-dreamina: {providers}")
    plugins = json.loads(_json_part(run([airflow, "plugins", "--output", "json"], env)))
    if not any(plugin.get("name") == "dreamina_gallery" for plugin in plugins):
        fail(f"airflow plugins does not show the gallery with the default configuration: {plugins}")
    report = json.loads(
        run([python, "-c", _REPORT, str(ROOT / "example_dags")], env).strip().splitlines()[-1]
    )
    if report["plugins"].count("dreamina_gallery") != 1 or report["plugin_errors"]:
        fail(f"the gallery did not load once without errors: {report}")
    if report["dag_errors"] or not report["dag_ids"]:
        fail(f"example DAGs did not parse: {report['dag_errors'] or 'no DAGs found'}")
    print(
        "check-dist: airflow providers list shows airflow-provider-dreamina; airflow plugins shows "
        f"dreamina_gallery; {len(report['dag_ids'])} example DAGs parse without import errors"
    )


def _json_part(output: str) -> str:
    """Airflow's CLI may print a line or two before the JSON."""
    return output[output.index("[") :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints" / "airflow-3.3.2.txt")
    args = parser.parse_args()
    wheel, sdist = only(args.dist, "*.whl"), only(args.dist, "*.tar.gz")
    check_wheel(wheel)
    check_sdist(sdist)
    with tempfile.TemporaryDirectory(prefix="dreamina-check-dist-") as work:
        check_installed(wheel.resolve(), args.constraints.resolve(), Path(work))


if __name__ == "__main__":
    main()
