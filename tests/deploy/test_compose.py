"""``deploy/compose.yaml`` in the topology of ``deploy/k8s``, checked statically (no Docker engine
runs here): valid by the Compose specification, a 3-node NATS cluster started from the very
configuration Kubernetes uses, two replicas of every envstore service behind one gateway, and
every secret a file that make-secrets.sh generates, resolving to the same value in every service
that uses it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from compose_spec import PyCompose

from envstore.common.settings import EnvstoreSettings
from envstore.launcher.cli import _parser
from envstore.launcher.stack import SERVICES
from tests.deploy.credentials import (
    CREDENTIALS,
    expected_nats_authorization,
    generated_values,
    held_credentials,
    nats_seed,
    run_make_secrets,
)

DEPLOY = Path(__file__).parents[2] / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
NATS_NODES = ("nats-0", "nats-1", "nats-2")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def envstore_services(compose: dict) -> dict[str, tuple[str, dict]]:
    """envstore service → (compose service name, definition), for the services built from the image."""
    return {
        _parser().parse_args(["service", *definition["command"]]).name: (name, definition)
        for name, definition in compose["services"].items()
        if definition.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


@pytest.fixture(scope="module")
def secrets_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/secrets as `bash deploy/make-secrets.sh` makes it (run from a copy of deploy/)."""
    copy = tmp_path_factory.mktemp("compose") / "deploy"
    copy.mkdir()
    shutil.copy(DEPLOY / "make-secrets.sh", copy / "make-secrets.sh")
    run_make_secrets(copy / "make-secrets.sh")
    return copy / "secrets"


def bind_mounts(definition: dict) -> dict[str, str]:
    """Container path → the file of deploy/ bind-mounted there."""
    mounts = {}
    for volume in definition.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def test_the_file_follows_the_compose_specification() -> None:
    """Parsed by compose_spec (a parser that refuses what Compose would refuse: unknown keys,
    wrong types, bad durations, ports, volume options), after YAML's merge keys are applied."""
    PyCompose.from_json(json.dumps(yaml.safe_load(COMPOSE_FILE.read_text())))


def test_every_envstore_service_runs_twice_from_one_image(compose: dict, envstore_services: dict) -> None:
    assert set(envstore_services) == set(SERVICES)
    assert len({definition["image"] for _, definition in envstore_services.values()}) == 1
    for service, (_, definition) in envstore_services.items():
        assert definition["deploy"]["replicas"] >= 2, service
        # Two replicas cannot publish one host port: users come in through the gateway.
        assert "ports" not in definition, service
        for node in NATS_NODES:
            assert definition["depends_on"][node]["condition"] == "service_healthy", service


def test_nats_is_three_nodes_started_from_the_kubernetes_configuration(
    compose: dict, envstore_services: dict, tmp_path: Path
) -> None:
    configuration_file = DEPLOY / "k8s" / "nats" / "nats.conf"
    configuration = configuration_file.read_text()
    routes = set(re.findall(r"nats-route://([^:\s]+):\d+", configuration))
    client_port = int(re.search(r"^listen:\s*[\d.]+:(\d+)", configuration, re.MULTILINE).group(1))
    store_directory = re.search(r"^\s*store_dir:\s*(\S+)", configuration, re.MULTILINE).group(1)
    data_volumes = set()
    aliases = set()
    for node in NATS_NODES:
        definition = compose["services"][node]
        config_path = definition["command"][definition["command"].index("--config") + 1]
        assert (DEPLOY / bind_mounts(definition)[config_path]).resolve() == configuration_file.resolve(), node
        assert definition["environment"]["SERVER_NAME"] == node
        (node_aliases,) = [network["aliases"] for network in definition["networks"].values()]
        aliases.update(node_aliases)
        (data,) = [volume for volume in definition["volumes"] if not volume.startswith("./")]
        name, target = data.split(":")[:2]
        assert store_directory.startswith(target), node
        data_volumes.add(name)
        # Nothing outside compose's network reaches NATS (which admits envstore's keys only).
        assert "ports" not in definition, node
        # The pid file's directory (lame duck mode signals through it) exists in the container.
        pid_directory = str(Path(re.search(r"^pid_file:\s*(\S+)", configuration, re.MULTILINE).group(1)).parent)
        assert pid_directory in definition["tmpfs"], node
    assert aliases == routes, "each route of nats.conf must name one node"
    assert len(data_volumes) == 3, "each node keeps its own JetStream store"

    for service, (_, definition) in envstore_services.items():
        environment = definition["environment"]
        servers = {(urlparse(url).hostname, urlparse(url).port) for url in environment["ENVSTORE_NATS_URL"].split(",")}
        assert servers == {(alias, client_port) for alias in aliases}, service
        assert environment["ENVSTORE_NATS_STREAM_REPLICAS"] == "3", service
        for key in ("ENVSTORE_S3_ENDPOINT_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            if key in environment:
                assert urlparse(environment[key]).hostname in compose["services"], (service, key)


def test_the_gateway_spreads_users_over_the_api_and_registry_replicas(
    compose: dict, envstore_services: dict, tmp_path: Path
) -> None:
    gateway = compose["services"]["gateway"]
    published = {int(port.split(":")[0]): int(port.split(":")[1]) for port in gateway["ports"]}
    site = DEPLOY / bind_mounts(gateway)["/etc/nginx/conf.d/default.conf"]
    text = site.read_text()
    upstreams = {
        int(listen): urlparse(upstream)
        for listen, upstream in re.findall(r"listen (\d+);.*?set \$\w+ (http://\S+);", text, re.DOTALL)
    }
    for service, setting in (("api", "ENVSTORE_API_PORT"), ("registry", "ENVSTORE_REGISTRY_PORT")):
        name, definition = envstore_services[service]
        port = int(definition["environment"][setting])
        assert published[port] == port, f"{service}'s port is not published by the gateway"
        assert (upstreams[port].hostname, upstreams[port].port) == (name, port), service
    # nginx accepts the site as the image includes it (inside http {}).
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    main = tmp_path / "nginx.conf"
    main.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{ include {site}; }}\n")
    checked = subprocess.run([nginx, "-t", "-q", "-c", str(main), "-e", "stderr"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_every_service_reads_the_shared_secrets_from_files_and_only_those_it_needs(
    compose: dict, envstore_services: dict, secrets_directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {name: secrets_directory.parent / definition["file"] for name, definition in compose["secrets"].items()}
    assert all(path.is_file() for path in files.values()), "compose names a secret make-secrets.sh does not make"
    expected = generated_values(secrets_directory)
    for service, (_, definition) in envstore_services.items():
        environment = definition["environment"]
        assert held_credentials(environment) == CREDENTIALS[service], service
        # What the container would see: each /run/secrets/<name> it is given, no other.
        for name in list(os.environ):
            if name.startswith(("ENVSTORE_", "OTEL_")):
                monkeypatch.delenv(name)
        for key, value in environment.items():
            if value.startswith("/run/secrets/"):
                assert key.endswith("_FILE"), (service, key)
                secret = value.removeprefix("/run/secrets/")
                assert secret in definition["secrets"], f"{service} reads {value} but is not given it"
                value = str(files[secret])
            monkeypatch.setenv(key, value)
        settings = EnvstoreSettings()
        for setting in CREDENTIALS[service]:
            value = getattr(settings, setting)
            value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            assert value == expected[setting], (service, setting)
        # Its own identity on the bus, and no other's.
        assert settings.nats_credentials.get_secret_value() == nats_seed(secrets_directory, service), service

    for setting, role in (("database_url", "envstore"), ("reader_database_url", "envstore_reader")):
        url = urlparse(expected[setting])
        assert (url.hostname, url.username) == ("postgres", role)
    postgres = compose["services"]["postgres"]
    for variable, secret in (
        ("POSTGRES_PASSWORD_FILE", "postgres_superuser_password"),
        ("POSTGRES_WRITER_PASSWORD_FILE", "postgres_writer_password"),
        ("POSTGRES_READER_PASSWORD_FILE", "postgres_reader_password"),
    ):
        assert postgres["environment"][variable] == f"/run/secrets/{secret}" and secret in postgres["secrets"]
    writer_password = (secrets_directory / "postgres-writer-password").read_text().strip()
    assert urlparse(expected["database_url"]).password == writer_password
    init_scripts = [target for target in bind_mounts(postgres) if target.startswith("/docker-entrypoint-initdb.d/")]
    assert [bind_mounts(postgres)[target] for target in init_scripts] == ["./k8s/postgres/init-roles.sh"]
    # SeaweedFS enforces the keys the services sign with: its shell command, run with `env` in
    # place of weed (compose's `$$` is a `$`), hands them over.
    seaweedfs = compose["services"]["seaweedfs"]
    assert seaweedfs["entrypoint"] == ["/bin/sh", "-c"]
    (command,) = seaweedfs["command"]
    command = command.replace("$$", "$").replace("exec /usr/bin/weed", "exec sh -c env weed")
    for secret in seaweedfs["secrets"]:
        command = command.replace(f"/run/secrets/{secret}", str(files[secret]))
    assert "/run/secrets/" not in command, "SeaweedFS reads a secret it is not given"
    weed_environment = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    assert f"AWS_ACCESS_KEY_ID={expected['s3_access_key']}\n" in weed_environment
    assert f"AWS_SECRET_ACCESS_KEY={expected['s3_secret_key']}\n" in weed_environment


def test_nats_nodes_admit_exactly_the_services_generated_keys(compose: dict, secrets_directory: Path) -> None:
    configuration_file = DEPLOY / "k8s" / "nats" / "nats.conf"
    (included,) = re.findall(r"^include\s+(\S+)", configuration_file.read_text(), re.MULTILINE)
    included_at = str(Path("/etc/nats") / included)
    for node in NATS_NODES:
        source = bind_mounts(compose["services"][node])[str(Path(included_at))]
        assert (DEPLOY / source).resolve() == (DEPLOY / "secrets" / "nats-authorization.conf").resolve(), node
    assert (secrets_directory / "nats-authorization.conf").read_text() == expected_nats_authorization(secrets_directory)


def test_make_secrets_generates_strong_distinct_secrets_once(secrets_directory: Path) -> None:
    generated = {path.name: path.read_text().strip() for path in secrets_directory.iterdir()}
    own = {name: value for name, value in generated.items() if not name.endswith("database-url")}
    assert all(len(value) >= 20 for value in own.values()), own.keys()
    assert len(set(own.values())) == len(own)
    assert secrets_directory.stat().st_mode & 0o777 == 0o700
    run_make_secrets(secrets_directory.parent / "make-secrets.sh")
    assert {path.name: path.read_text().strip() for path in secrets_directory.iterdir()} == generated


def test_builders_share_the_store_and_packagers_only_read_it(envstore_services: dict) -> None:
    _, builder = envstore_services["builder"]
    store = builder["environment"]["ENVSTORE_STORE_DIRECTORY"]
    (volume,) = [volume for volume in builder["volumes"] if volume.split(":")[1] == store]
    assert not volume.startswith("./") and not volume.endswith(":ro")
    for service, (_, definition) in envstore_services.items():
        if service == "builder":
            continue
        shared = [entry for entry in definition.get("volumes", []) if entry.split(":")[0] == volume.split(":")[0]]
        # Interim (issue 11, item 3): the packager reads the builder's prefix where it was built.
        assert shared == ([f"{volume.split(':')[0]}:{store}:ro"] if service == "packager" else []), service
