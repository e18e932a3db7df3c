"""``deploy/`` holds together without Docker: the compose file runs every service of the embedded
stack from the one image, Prometheus scrapes each of them where it serves ``/metrics``, Grafana is
provisioned with the data sources its dashboard uses, and the image installs every package and
data file. (Whether the dashboard's series exist is checked against running services in
``test_build_telemetry``.)"""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from envstore.launcher.cli import _parser
from envstore.launcher.stack import SERVICES

REPOSITORY = Path(__file__).parents[2]
DEPLOY = REPOSITORY / "deploy"
INFRASTRUCTURE = ("nats", "postgres", "seaweedfs", "jaeger", "prometheus", "grafana")


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


def scrape_targets() -> dict[str, str]:
    """host:port → metrics path, from prometheus.yml."""
    configuration = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    return {
        target: job.get("metrics_path", "/metrics")
        for job in configuration["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }


def test_compose_runs_every_service_from_one_image_beside_its_infrastructure(compose: dict) -> None:
    assert set(INFRASTRUCTURE) <= set(compose["services"])
    containers = envstore_containers(compose)
    assert set(containers) == set(SERVICES)
    assert len({definition["image"] for definition in containers.values()}) == 1
    for service, definition in containers.items():
        # The image's entrypoint is `envstore service`; the command must be a service it accepts.
        assert _parser().parse_args(["service", *definition["command"]]).name == service
        environment = definition["environment"]
        for key in (
            "ENVSTORE_NATS_URL",
            "ENVSTORE_DATABASE_URL",
            "ENVSTORE_S3_ENDPOINT_URL",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ):
            host = urlparse(environment[key]).hostname
            assert host in compose["services"], f"{service}: {key} points at {host}, not a compose service"
        assert environment["ENVSTORE_STORAGE_BACKEND"] == "s3"


def test_prometheus_scrapes_every_service_where_it_serves_metrics(compose: dict) -> None:
    targets = scrape_targets()
    for service, definition in envstore_containers(compose).items():
        name = next(key for key, value in compose["services"].items() if value is definition)
        environment = definition["environment"]
        port = int(environment["ENVSTORE_METRICS_PORT"]) or int(environment["ENVSTORE_API_PORT"])
        assert targets.get(f"{name}:{port}") == "/metrics", f"{service} is not scraped at {name}:{port}"
    assert {target.split(":")[0] for target in targets} <= set(compose["services"])
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


def test_compose_hands_secrets_over_as_files_generated_by_make_secrets(compose: dict, tmp_path: Path) -> None:
    """No shared default: the login password, the admin token and the token-signing key come
    from compose secrets (files made by deploy/make-secrets.sh), not from literal values."""
    secret_files = {name: definition["file"] for name, definition in compose["secrets"].items()}
    for service, definition in envstore_containers(compose).items():
        environment = definition["environment"]
        for key, secret in (("ADMIN_TOKEN", "admin_token"), ("AUTH_SECRET", "auth_secret"), ("AUTH_PASSWORD", "auth_password")):
            assert f"ENVSTORE_{key}" not in environment, (service, key)
            assert environment[f"ENVSTORE_{key}_FILE"] == f"/run/secrets/{secret}", (service, key)
            assert secret in definition["secrets"], (service, secret)
    copy = tmp_path / "deploy"
    copy.mkdir()
    (copy / "make-secrets.sh").write_bytes((DEPLOY / "make-secrets.sh").read_bytes())
    subprocess.run(["bash", str(copy / "make-secrets.sh")], check=True, capture_output=True)
    generated = {name: (copy / path).read_text().strip() for name, path in secret_files.items()}
    assert all(len(value) >= 32 for value in generated.values())
    assert len(set(generated.values())) == len(generated)
    assert (copy / "secrets").stat().st_mode & 0o777 == 0o700
    subprocess.run(["bash", str(copy / "make-secrets.sh")], check=True, capture_output=True)
    assert {name: (copy / path).read_text().strip() for name, path in secret_files.items()} == generated
