"""OCI tools for tests, used as users use them: a tiny base image (Debian's static busybox) as an
OCI layout, image layouts written from envstore's storage, and skopeo/umoci/chroot runs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
REFERENCE_NAME = "org.opencontainers.image.ref.name"


def run(command: list[str | Path], timeout: float = 120, **options: Any) -> str:
    """A command's standard output; fails the test with its standard error."""
    completed = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=timeout, check=False, **options
    )
    assert completed.returncode == 0, f"{command} exited {completed.returncode}:\n{completed.stderr}"
    return completed.stdout


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def busybox_base_layout(layout: Path, tag: str = "base", architecture: str = "amd64") -> str:
    """An OCI layout holding one image: /bin/busybox (static) and its applets (/bin/sh …) as links.

    Returns the ``oci:<directory>:<tag>`` reference envstore's ``image_base`` setting takes.
    """
    assert BUSYBOX.exists(), "install Debian's busybox-static: apt-get install -y busybox-static"
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, mode in (("bin", tarfile.DIRTYPE, 0o755), ("tmp", tarfile.DIRTYPE, 0o1777)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, mode
            archive.addfile(info)
        content = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.mode, info.size = 0o755, len(content)
        archive.addfile(info, io.BytesIO(content))
        # Every applet (sh, cat, dd, tr …) as a link to busybox, as Debian's busybox image has.
        applets = run([BUSYBOX, "--list"]).split()
        for applet in sorted(set(applets) - {"busybox"}):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            archive.addfile(link)
    uncompressed = tar_bytes.getvalue()
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(layout, gzip.compress(uncompressed, mtime=0))}
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/sh"], "Labels": {"base": "busybox"}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(uncompressed).hexdigest()]},
        "history": [{"created_by": "tests: busybox-static"}],
    }
    config_descriptor = {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(layout, json.dumps(config).encode())}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": [layer],
    }
    manifest_descriptor = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_blob(layout, json.dumps(manifest).encode()),
        "annotations": {REFERENCE_NAME: tag},
    }
    (layout / "oci-layout").write_text(json.dumps(OCI_LAYOUT))
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_descriptor]}))
    return f"oci:{layout}:{tag}"


def export_layout(storage_root: Path, manifest_digest: str, layout: Path, tag: str) -> None:
    """Write the image whose manifest is ``manifest_digest`` from envstore's local storage as an
    OCI layout (what ``skopeo copy`` would write), for tools that read layouts."""
    blobs = storage_root / "blobs" / "sha256"

    def copy(digest: str) -> bytes:
        hex_digest = digest.removeprefix("sha256:")
        target = layout / "blobs" / "sha256" / hex_digest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blobs / hex_digest, target)
        return target.read_bytes()

    manifest_bytes = copy(manifest_digest)
    manifest = json.loads(manifest_bytes)
    for descriptor in [manifest["config"], *manifest["layers"]]:
        copy(descriptor["digest"])
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    index["manifests"] = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REFERENCE_NAME) != tag]
    index["manifests"].append(
        {
            "mediaType": manifest["mediaType"],
            "digest": manifest_digest,
            "size": len(manifest_bytes),
            "annotations": {REFERENCE_NAME: tag},
        }
    )
    (layout / "oci-layout").write_text(json.dumps(OCI_LAYOUT))
    index_path.write_text(json.dumps(index))


def unpack(layout_reference: str, bundle: Path) -> Path:
    """``umoci unpack`` an image (``<layout>:<tag>``) into a bundle; returns its rootfs."""
    run(["umoci", "unpack", "--rootless", "--image", layout_reference, bundle])
    return bundle / "rootfs"


def run_in_rootfs(rootfs: Path, *command: str) -> str:
    """Run a program inside an unpacked image, as a container would see its files (needs root)."""
    return run(["chroot", rootfs, *command])


@dataclass(frozen=True)
class Registry:
    """How skopeo reaches envstore's registry in tests: plain HTTP on loopback."""

    host: str  # 127.0.0.1:PORT

    def reference(self, name: str, tag_or_digest: str = "latest") -> str:
        separator = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"docker://{self.host}/{name}{separator}{tag_or_digest}"


def skopeo_copy(
    source: str, destination: str, credentials: str | None = None, debug: bool = False, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    command = ["skopeo"] + (["--debug"] if debug else []) + ["copy", "--src-tls-verify=false"]
    if credentials is not None:
        command.append(f"--src-creds={credentials}")
    else:
        command.append("--src-no-creds")
    command += [source, destination]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def skopeo_inspect(reference: str, credentials: str | None = None, raw: bool = False) -> subprocess.CompletedProcess[str]:
    command = ["skopeo", "inspect", "--tls-verify=false"]
    command.append(f"--creds={credentials}" if credentials is not None else "--no-creds")
    if raw:
        command.append("--raw")
    command.append(reference)
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
