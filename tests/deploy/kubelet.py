"""What a container of a rendered manifest would see, without a cluster: its environment
variables and the files of the Secrets and ConfigMaps mounted into it (written below a local
directory, with the variables that name them pointed there), and which pods a set of
NetworkPolicies lets connect to which."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.deploy.kustomize import pod_template


def objects_by_name(objects: list[dict], kind: str) -> dict[str, dict]:
    return {document["metadata"]["name"]: document for document in objects if document["kind"] == kind}


def container_environment(objects: list[dict], workload: dict, container: dict, root: Path) -> dict[str, str]:
    """``container``'s environment, its mounted Secret and ConfigMap files written below ``root``,
    and every variable whose value is a path into such a mount rewritten to the written file.
    A reference to a Secret, ConfigMap or key that does not exist fails, unless marked optional."""
    config_maps = objects_by_name(objects, "ConfigMap")
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environment.update(config_maps[source["configMapRef"]["name"]]["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
        elif "fieldRef" in variable["valueFrom"]:
            environment[variable["name"]] = f"<{variable['valueFrom']['fieldRef']['fieldPath']}>"
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            environment[variable["name"]] = volume_files(objects, {"secret": {"secretName": reference["name"]}})[
                reference["key"]
            ].decode()
    volumes = {volume["name"]: volume for volume in pod_template(workload).get("volumes", [])}
    for claim in workload["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "persistentVolumeClaim": {}}
    mount_paths = []
    for mount in container.get("volumeMounts", []):
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for relative, content in volume_files(objects, volumes[mount["name"]]).items():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).write_bytes(content)
        mount_paths.append(mount["mountPath"].rstrip("/"))
    for name, value in environment.items():
        # The innermost mount holding the path, as in the container.
        holding = [path for path in mount_paths if value == path or value.startswith(path + "/")]
        if holding:
            innermost = max(holding, key=len)
            environment[name] = str(root / innermost.lstrip("/")) + value[len(innermost) :]
    return environment


def volume_files(objects: list[dict], volume: dict) -> dict[str, bytes]:
    """The files a volume holds at start: those of its Secrets and ConfigMaps (none for emptyDir
    and claims)."""
    if "projected" in volume:
        files: dict[str, bytes] = {}
        for source in volume["projected"]["sources"]:
            kind = "secret" if "secret" in source else "configMap"
            files.update(_source_files(objects, kind, source[kind]["name"], source[kind]))
        return files
    if "secret" in volume:
        return _source_files(objects, "secret", volume["secret"]["secretName"], volume["secret"])
    if "configMap" in volume:
        return _source_files(objects, "configMap", volume["configMap"]["name"], volume["configMap"])
    return {}


def _source_files(objects: list[dict], kind: str, name: str, source: dict) -> dict[str, bytes]:
    document = objects_by_name(objects, "Secret" if kind == "secret" else "ConfigMap").get(name)
    if document is None:
        assert source.get("optional"), f"{kind} {name} is mounted but not rendered, and not optional"
        return {}
    if kind == "secret":
        data = {key: base64.b64decode(value) for key, value in document["data"].items()}
    else:
        data = {key: value.encode() for key, value in document["data"].items()}
    if "items" not in source:
        return data
    files = {}
    for item in source["items"]:
        assert item["key"] in data or source.get("optional"), f"{kind} {name} has no key {item['key']}"
        if item["key"] in data:
            files[item["path"]] = data[item["key"]]
    return files


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects a pod with ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        matched = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not matched:
            return False
    return True


def ingress_admitted(policies: list[dict], target: dict[str, str], source: dict[str, str], port: int) -> bool:
    """Whether a pod labelled ``source`` may open ``port`` on a pod labelled ``target`` of the same
    namespace, by Kubernetes' rules: allowed unless a policy selects the target for ingress, then
    only as one of the selecting policies' rules allows."""
    selecting = [
        policy
        for policy in policies
        if selects(policy["spec"]["podSelector"], target) and "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            peers = rule.get("from")
            for peer in peers or []:
                assert set(peer) == {"podSelector"}, f"{policy['metadata']['name']}: only pod selectors are evaluated"
            if (not ports or any(entry["port"] == port for entry in ports)) and (
                not peers or any(selects(peer["podSelector"], source) for peer in peers)
            ):
                return True
    return False
