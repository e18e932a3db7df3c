"""``deploy/k8s`` as ``kubectl apply -k`` would create it, checked offline: every object valid for
Kubernetes (kubernetes-validate's schemas, strict), and the topology an operator expects — a
3-node JetStream cluster, every envstore service replicated with probes and resource requests,
every secret from files that make-secrets.sh generates, and each service's settings resolving to
those shared secrets. No cluster runs here: what the kubelet would hand each container is
reproduced from the manifests (tests/deploy/kubelet.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from envstore.common.settings import EnvstoreSettings
from envstore.common.telemetry import TelemetrySettings
from envstore.launcher.cli import _parser
from envstore.launcher.nats_process import find_nats_server_executable
from envstore.launcher.stack import SERVICES
from tests.deploy.credentials import (
    CREDENTIALS,
    expected_nats_authorization,
    generated_values,
    held_credentials,
    nats_seed,
    run_make_secrets,
)
from tests.deploy.kubelet import container_environment, ingress_admitted, objects_by_name, selects
from tests.deploy.kustomize import pod_containers, pod_template, render

REPOSITORY = Path(__file__).parents[2]
DEPLOY = REPOSITORY / "deploy"
KUBERNETES = DEPLOY / "k8s"
# The oldest Kubernetes release still commonly run, and the newest the schemas cover.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
NATS_CREDENTIALS_VARIABLE = "ENVSTORE_NATS_CREDENTIALS_FILE"


@pytest.fixture(scope="module")
def kubernetes_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with its secrets generated as the README says."""
    directory = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(KUBERNETES, directory, ignore=shutil.ignore_patterns("secrets"))
    run_make_secrets(DEPLOY / "make-secrets.sh", str(directory / "secrets"))
    return directory


@pytest.fixture(scope="module")
def objects(kubernetes_directory: Path) -> list[dict]:
    return render(kubernetes_directory)


@pytest.fixture(scope="module")
def envstore_deployments(objects: list[dict]) -> dict[str, dict]:
    """The Deployments that run envstore, by the envstore service each runs."""
    deployments = {}
    for document in objects_by_name(objects, "Deployment").values():
        (container,) = pod_template(document)["containers"]
        deployments[_parser().parse_args(["service", *container["args"]]).name] = document
    return deployments


def workloads(objects: list[dict]) -> list[dict]:
    return [document for document in objects if document["kind"] in WORKLOAD_KINDS]


def pod_labels(workload: dict) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def container_port(workload: dict, name_or_number: str | int) -> int:
    for container in pod_containers(workload):
        for port in container.get("ports", []):
            if name_or_number in (port["name"], port["containerPort"]):
                return port["containerPort"]
    raise AssertionError(f"{workload['metadata']['name']} declares no port {name_or_number}")


def service_settings(
    objects: list[dict], workload: dict, root: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], EnvstoreSettings, TelemetrySettings]:
    """The environment and the settings an envstore container of ``workload`` starts with."""
    (container,) = pod_template(workload)["containers"]
    environment = container_environment(objects, workload, container, root)
    for name in list(os.environ):
        if name.startswith(("ENVSTORE_", "OTEL_")):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment, EnvstoreSettings(), TelemetrySettings()


def credential(settings: EnvstoreSettings, name: str) -> str | None:
    value = getattr(settings, name)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def test_every_object_is_valid_for_kubernetes(objects: list[dict]) -> None:
    kinds = {document["kind"] for document in objects}
    assert {"Namespace", "Deployment", "StatefulSet", "Service", "Secret", "ConfigMap", "NetworkPolicy"} <= kinds
    for version in KUBERNETES_VERSIONS:
        for document in objects:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{document['kind']} {document['metadata']['name']} (Kubernetes {version}): {error.message}")
    names = [(document["kind"], document["metadata"]["name"]) for document in objects]
    assert len(names) == len(set(names)), "two objects of one kind share a name"
    assert all(document["metadata"].get("namespace") == "envstore" for document in objects if document["kind"] != "Namespace")


def test_nats_is_a_three_node_jetstream_cluster_with_durable_writes(
    objects: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, envstore_deployments: dict[str, dict]
) -> None:
    nats = objects_by_name(objects, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    headless = objects_by_name(objects, "Service")[nats["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
    assert selects({"matchLabels": headless["spec"]["selector"]}, pod_labels(nats))
    (container,) = pod_template(nats)["containers"]
    assert {"name": "SERVER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]

    # The configuration the node is started with, and the volume its JetStream store is on.
    configuration_path = container["args"][container["args"].index("--config") + 1]
    container_environment(objects, nats, container, tmp_path)  # writes the mounted files
    configuration = (tmp_path / configuration_path.lstrip("/")).read_text()
    claims = {claim["metadata"]["name"] for claim in nats["spec"]["volumeClaimTemplates"]}
    store_directory = re.search(r"^\s*store_dir:\s*(\S+)", configuration, re.MULTILINE).group(1)
    assert any(
        mount["name"] in claims and store_directory.startswith(mount["mountPath"]) for mount in container["volumeMounts"]
    ), "JetStream's store is not on the node's persistent volume"
    assert re.search(r"^\s*sync_interval:\s*always\s*$", configuration, re.MULTILINE)

    # Each node routes to every node, by the names the headless Service gives the pods.
    cluster_port = container_port(nats, "cluster")
    members = {f"{nats['metadata']['name']}-{ordinal}.{headless['metadata']['name']}" for ordinal in range(3)}
    routes = set(re.findall(r"nats-route://([^:\s]+):(\d+)", configuration))
    assert routes == {(member, str(cluster_port)) for member in members}
    assert re.search(rf"^\s*listen:\s*0\.0\.0\.0:{cluster_port}\s*$", configuration, re.MULTILINE)
    # nats-server itself accepts the file, as each node (server_name from the pod's name).
    for member in sorted(members):
        checked = subprocess.run(
            [str(find_nats_server_executable()), "-t", "-c", str(tmp_path / configuration_path.lstrip("/"))],
            env={**os.environ, "SERVER_NAME": member.split(".")[0]},
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert checked.returncode == 0, checked.stderr

    # envstore's services connect to all three nodes and keep the stream at 3 replicas.
    client_port = container_port(nats, "client")
    for service, deployment in envstore_deployments.items():
        _, settings, _ = service_settings(objects, deployment, tmp_path / service, monkeypatch)
        servers = {(urlparse(url).hostname, urlparse(url).port) for url in settings.nats_url.split(",")}
        assert servers == {(member, client_port) for member in members}, service
        assert settings.nats_stream_replicas == 3, service

    budget = objects_by_name(objects, "PodDisruptionBudget")["nats"]
    assert budget["spec"]["maxUnavailable"] == 1 and selects(budget["spec"]["selector"], pod_labels(nats))


def test_every_envstore_service_runs_replicated_from_the_pinned_image(
    objects: list[dict], envstore_deployments: dict[str, dict]
) -> None:
    assert set(envstore_deployments) == set(SERVICES)
    version = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]["version"]
    budgets = objects_by_name(objects, "PodDisruptionBudget").values()
    for service, deployment in envstore_deployments.items():
        assert deployment["spec"]["replicas"] >= 2, service
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, service
        (container,) = pod_template(deployment)["containers"]
        assert container["image"] == f"envstore:{version}", service
        # A drained node never takes the last replica.
        (budget,) = [budget for budget in budgets if selects(budget["spec"]["selector"], pod_labels(deployment))]
        assert 1 <= budget["spec"]["minAvailable"] < deployment["spec"]["replicas"], service


def test_every_container_has_probes_and_resource_requests(objects: list[dict]) -> None:
    for workload in workloads(objects):
        for container in pod_containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, f"{where} has no {probe}"
                if "httpGet" in container[probe]:
                    container_port(workload, container[probe]["httpGet"]["port"])
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= set(requests), f"{where} requests {requests}"
            assert "memory" in container["resources"]["limits"], f"{where} has no memory limit"


def test_envstore_probes_ask_each_service_where_it_answers(
    objects: list[dict], envstore_deployments: dict[str, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Liveness asks /healthz, readiness /readyz, on the port the service's settings make it
    serve them: the API's and the registry's own port, every worker's metrics listener."""
    for service, deployment in envstore_deployments.items():
        _, settings, telemetry = service_settings(objects, deployment, tmp_path / service, monkeypatch)
        serving_port = {"api": settings.api_port, "registry": settings.registry_port}.get(service, telemetry.metrics_port)
        assert serving_port, f"{service} serves no listener to probe"
        (container,) = pod_template(deployment)["containers"]
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            request = container[probe]["httpGet"]
            assert request["path"] == path, (service, probe)
            assert container_port(deployment, request["port"]) == serving_port, (service, probe)
        if service != "api":
            # Prometheus finds the metrics listener by the pod's annotations.
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert int(annotations["prometheus.io/port"]) == telemetry.metrics_port, service


def test_images_are_pinned(objects: list[dict]) -> None:
    for workload in workloads(objects):
        for container in pod_containers(workload):
            image = container["image"]
            name, _, tag = image.partition("@")[0].rpartition(":")
            pinned_by_digest = re.search(r"@sha256:[0-9a-f]{64}$", image)
            assert pinned_by_digest or (name and re.fullmatch(r"v?\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?", tag)), (
                f"{workload['metadata']['name']}: image {image} is not pinned to a version"
            )


def test_every_pod_runs_unprivileged(objects: list[dict]) -> None:
    """The Namespace enforces Pod Security's `restricted` level: every pod must meet it, or it is
    refused at admission."""
    namespace = objects_by_name(objects, "Namespace")["envstore"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in workloads(objects):
        pod = pod_template(workload)
        where = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        for container in pod_containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context["readOnlyRootFilesystem"] is True, where
            writable = {mount["mountPath"] for mount in container["volumeMounts"] if not mount.get("readOnly")}
            assert writable, f"{where} has nowhere to write"


def test_no_secret_is_written_in_the_manifests(kubernetes_directory: Path, objects: list[dict]) -> None:
    """Secrets exist only as files make-secrets.sh generates (git-ignored) and Secrets generated
    from them; manifests and ConfigMaps name files, never values."""
    kustomization_sources = [
        entry.rpartition("=")[2]
        for generator in yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["secretGenerator"]
        for entry in generator["files"]
    ]
    for source in kustomization_sources:
        assert source.startswith("secrets/"), source
        ignored = subprocess.run(["git", "check-ignore", "-q", str(KUBERNETES / source)], cwd=REPOSITORY)
        assert ignored.returncode == 0, f"deploy/k8s/{source} would be committed"
    committed = [path for path in KUBERNETES.rglob("*") if path.is_file() and "secrets" not in path.parts]
    credentials_in_url = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
    for path in committed:
        text = path.read_text()
        assert not re.search(r"^kind:\s*Secret\s*$", text, re.MULTILINE), f"{path.name} writes a Secret"
        assert not credentials_in_url.search(text), f"{path.name} has a URL with credentials"
    secret_name = re.compile(r"TOKEN|SECRET|PASSWORD|_KEY$|_KEY_ID$|DATABASE_URL|CREDENTIALS", re.IGNORECASE)
    for workload in workloads(objects):
        for container in pod_containers(workload):
            for variable in container.get("env", []):
                if secret_name.search(variable["name"]) and not variable["name"].endswith("_FILE"):
                    assert "value" not in variable, f"{workload['metadata']['name']}: {variable['name']} written in the manifest"
    for config_map in objects_by_name(objects, "ConfigMap").values():
        for key, value in config_map["data"].items():
            assert not (secret_name.search(key) and not key.endswith("_FILE")), f"{config_map['metadata']['name']}: {key}"
    generated = {path.read_text().strip() for path in (kubernetes_directory / "secrets").iterdir()}
    for config_map in objects_by_name(objects, "ConfigMap").values():
        assert not any(value in text for value in generated for text in config_map["data"].values())


def test_every_service_reads_the_shared_secrets_and_only_those_it_needs(
    objects: list[dict],
    envstore_deployments: dict[str, dict],
    kubernetes_directory: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each service's settings resolve every credential it would otherwise generate per pod, to
    the same value in every service that uses it; a service gets no credential it does not use."""
    expected = generated_values(kubernetes_directory / "secrets")
    services = objects_by_name(objects, "Service")
    for service, deployment in envstore_deployments.items():
        environment, settings, _ = service_settings(objects, deployment, tmp_path / service, monkeypatch)
        held = held_credentials(environment)
        assert held == CREDENTIALS[service], service
        for name in held:
            assert credential(settings, name) == expected[name], (service, name)
        assert settings.storage_backend == "s3", service
        endpoint = urlparse(settings.s3_endpoint_url)
        assert endpoint.port in {port["port"] for port in services[endpoint.hostname]["spec"]["ports"]}, service
    # The database URLs name the PostgreSQL Service and the roles postgres/init-roles.sh creates.
    postgres_ports = {port["port"] for port in services["postgres"]["spec"]["ports"]}
    for name, role in (("database_url", "envstore"), ("reader_database_url", "envstore_reader")):
        url = urlparse(expected[name])
        assert (url.hostname, url.port, url.username, url.path) == ("postgres", 5432, role, "/envstore")
        assert url.port in postgres_ports
        assert re.search(rf"CREATE ROLE {role} LOGIN", (KUBERNETES / "postgres" / "init-roles.sh").read_text())
    # SeaweedFS enforces the very keys the services sign with.
    seaweedfs = objects_by_name(objects, "StatefulSet")["seaweedfs"]
    (container,) = pod_template(seaweedfs)["containers"]
    weed_environment = container_environment(objects, seaweedfs, container, tmp_path / "seaweedfs")
    assert weed_environment["AWS_ACCESS_KEY_ID"].strip() == expected["s3_access_key"]
    assert weed_environment["AWS_SECRET_ACCESS_KEY"].strip() == expected["s3_secret_key"]


def test_each_service_reaches_nats_with_its_own_key_and_the_nodes_admit_only_those(
    objects: list[dict],
    envstore_deployments: dict[str, dict],
    kubernetes_directory: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets_directory = kubernetes_directory / "secrets"
    seeds = set()
    for service, deployment in envstore_deployments.items():
        environment, settings, _ = service_settings(objects, deployment, tmp_path / service, monkeypatch)
        assert NATS_CREDENTIALS_VARIABLE in environment, service
        assert settings.nats_credentials.get_secret_value() == nats_seed(secrets_directory, service), service
        seeds.add(settings.nats_credentials.get_secret_value())
    assert len(seeds) == len(envstore_deployments), "two services share a NATS identity"
    # Every node reads the authorization for exactly those keys (and the operators' two).
    nats = objects_by_name(objects, "StatefulSet")["nats"]
    (container,) = pod_template(nats)["containers"]
    container_environment(objects, nats, container, tmp_path / "nats")
    configuration_path = container["args"][container["args"].index("--config") + 1]
    configuration = (tmp_path / "nats" / configuration_path.lstrip("/")).read_text()
    (included,) = re.findall(r"^include\s+(\S+)", configuration, re.MULTILINE)
    authorization = tmp_path / "nats" / configuration_path.lstrip("/")
    authorization = (authorization.parent / included).read_text()
    assert authorization == expected_nats_authorization(secrets_directory)


def test_builders_share_the_store_and_packagers_have_scratch_of_their_own(
    objects: list[dict], envstore_deployments: dict[str, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = objects_by_name(objects, "PersistentVolumeClaim")
    builder = envstore_deployments["builder"]
    _, settings, _ = service_settings(objects, builder, tmp_path / "builder", monkeypatch)
    (container,) = pod_template(builder)["containers"]
    volumes = {volume["name"]: volume for volume in pod_template(builder)["volumes"]}
    (store_mount,) = [
        mount
        for mount in container["volumeMounts"]
        if "persistentVolumeClaim" in volumes[mount["name"]] and not mount.get("readOnly")
    ]
    claim = claims[volumes[store_mount["name"]]["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "builder replicas on different nodes share the store"
    assert settings.environments_root == tmp_path / "builder" / store_mount["mountPath"].lstrip("/")

    for service in ("packager", "solver", "registry", "api", "api.webhooks"):
        deployment = envstore_deployments[service]
        assert not any("persistentVolumeClaim" in volume for volume in pod_template(deployment)["volumes"]), service
        _, settings, _ = service_settings(objects, deployment, tmp_path / service, monkeypatch)
        (container,) = pod_template(deployment)["containers"]
        volumes = {volume["name"]: volume for volume in pod_template(deployment)["volumes"]}
        (data_mount,) = [
            mount
            for mount in container["volumeMounts"]
            if settings.data_dir == tmp_path / service / mount["mountPath"].lstrip("/")
        ]
        assert "emptyDir" in volumes[data_mount["name"]], service


def test_services_reach_the_ports_their_pods_declare(objects: list[dict]) -> None:
    pods = workloads(objects)
    for service in objects_by_name(objects, "Service").values():
        (workload,) = [pod for pod in pods if selects({"matchLabels": service["spec"]["selector"]}, pod_labels(pod))]
        for port in service["spec"]["ports"]:
            assert container_port(workload, port["targetPort"]) == port["port"], service["metadata"]["name"]


def test_network_policies_keep_the_bus_and_the_databases_to_envstore(objects: list[dict]) -> None:
    """NATS has no authentication yet: its client port must admit envstore's services only."""
    policies = list(objects_by_name(objects, "NetworkPolicy").values())
    by_name = {workload["metadata"]["name"]: workload for workload in workloads(objects)}
    labels = {name: pod_labels(workload) for name, workload in by_name.items()}
    outsider = {"app.kubernetes.io/name": "anything-else"}

    def admitted(source: dict[str, str], target: str, port_name: str) -> bool:
        return ingress_admitted(policies, labels[target], source, container_port(by_name[target], port_name))

    services = ["api", "registry", "solver", "builder", "packager", "webhooks"]
    for target, port in (("nats", "client"), ("nats", "cluster"), ("postgres", "postgres"), ("seaweedfs", "s3")):
        assert not admitted(outsider, target, port), f"any pod reaches {target}:{port}"
    for service in services:
        assert admitted(labels[service], "nats", "client"), service
        assert admitted(labels[service], "seaweedfs", "s3"), service
        assert admitted(labels[service], "postgres", "postgres") == (service in {"api", "registry"}), service
        assert admitted(outsider, service, "metrics" if service != "api" else "http"), f"Prometheus cannot scrape {service}"
    assert admitted(labels["nats"], "nats", "cluster")
    assert admitted(outsider, "api", "http") and admitted(outsider, "registry", "http")
