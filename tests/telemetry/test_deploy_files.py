"""``deploy/``'s telemetry and image hold together without Docker: Prometheus scrapes every
replica of every service where it serves ``/metrics``, Grafana is provisioned with the data
sources its dashboard uses, and the image installs every package and data file. (Whether the
dashboard's series exist is checked against running services in ``test_build_telemetry``; the
compose topology and its secrets in ``tests/deploy/test_compose.py``.)"""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml


REPOSITORY = Path(__file__).parents[2]
DEPLOY = REPOSITORY / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def envstore_containers(compose: dict) -> dict[str, dict]:
    """The compose services that run envstore itself, by the envstore service each one runs."""
    return {
        definition["command"][0]: definition
        for definition in compose["services"].values()
        if definition.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def scrape_targets() -> dict[str, tuple[str, int, str]]:
    """Compose service name → (DNS record type, port, metrics path), from prometheus.yml's
    DNS-based service discovery."""
    configuration = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {}
    for job in configuration["scrape_configs"]:
        for discovery in job["dns_sd_configs"]:
            for name in discovery["names"]:
                targets[name] = (discovery["type"], discovery["port"], job.get("metrics_path", "/metrics"))
    return targets


def test_prometheus_scrapes_every_replica_of_every_service_where_it_serves_metrics(compose: dict) -> None:
    """Each job asks Docker's DNS for every container of one service (two replicas each)."""
    jobs = scrape_targets()
    for service, definition in envstore_containers(compose).items():
        name = next(key for key, value in compose["services"].items() if value is definition)
        environment = definition["environment"]
        port = int(environment["ENVSTORE_METRICS_PORT"]) or int(environment["ENVSTORE_API_PORT"])
        assert jobs.get(name) == ("A", port, "/metrics"), f"{service} is not scraped at every {name}:{port}"
    assert set(jobs) <= set(compose["services"])
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_grafana_is_provisioned_with_the_data_sources_and_the_dashboard(compose: dict) -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yml").read_text())["datasources"]
    uids = {source["uid"]: source for source in sources}
    for source in sources:
        assert urlparse(source["url"]).hostname in compose["services"]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "envstore.json").read_text())
    used = {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    used |= {
        target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    }
    assert used and used <= set(uids)
    assert uids["jaeger"]["type"] == "jaeger" and uids["prometheus"]["type"] == "prometheus"
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for subject in ("builds by state", "phase duration", "consumer lag", "projector lag", "registry bytes"):
        assert subject in titles

    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())["providers"]
    grafana_mounts = dict(volume.rsplit(":", 2)[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert grafana_mounts["./grafana/dashboards"] == providers[0]["options"]["path"]
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_the_image_installs_every_package_and_data_file() -> None:
    """The Dockerfile builds the wheel and installs it (not editable): every package and every data
    file under ``libs/`` and ``services/`` must be declared in pyproject.toml, or the image lacks it."""
    setuptools = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]
    directory_of = {package: Path(directory) for package, directory in setuptools["package-dir"].items()}

    def package_of(directory: Path) -> str:
        for package, root in directory_of.items():
            if directory == root or root in directory.parents:
                return ".".join([package, *directory.relative_to(root).parts])
        raise AssertionError(f"{directory} is under no package-dir root")

    tracked = subprocess.run(
        ["git", "ls-files", "libs", "services"], cwd=REPOSITORY, capture_output=True, text=True, check=True
    ).stdout.split()
    files = [Path(name) for name in tracked]
    packages = {package_of(path.parent) for path in files if path.name == "__init__.py"}
    assert packages <= set(setuptools["packages"]), (
        f"not installed: {sorted(packages - set(setuptools['packages']))}"
    )
    declared = setuptools.get("package-data", {})
    missing = [
        str(path)
        for path in files
        if path.suffix != ".py" and path.name not in declared.get(package_of(path.parent), [])
    ]
    assert not missing, (
        f"data files the image would lack (add them to [tool.setuptools.package-data]): {missing}"
    )

    copied = [
        source
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert all((REPOSITORY / source).exists() for source in copied)
    # What setup.py's build hook runs (it puts conda-store's UI into the wheel) is in the image's build.
    assert {"setup.py", "scripts/fetch_ui.py"} <= set(copied)
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert all(f"!{source}" in ignored or f"!{source}/" in ignored for source in copied), "copied but not in the context"
