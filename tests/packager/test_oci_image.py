"""The DOCKER_MANIFEST image, as users and image tools see it: written as an OCI layout, read back by
skopeo and unpacked by umoci, the environment's program runs from the rootfs (chroot) and sees
``/opt/conda``; layers are per package and byte-for-byte reproducible, so environments share them,
a rebuild gives the same manifest digest, and a one-package change adds one package layer (and the
small environment layer).

The producer runs on real solves (rattler, from the offline demo channel) and real installs, one
storage shared by every image of a test, as the packager service shares it."""

from __future__ import annotations

import gc
import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import rattler

from envstore.common.build_keys import build_key
from envstore.common.demo_channel import (
    BUILD_TIMESTAMP_SECONDS,
    FIVE_PACKAGE_SPEC,
    PREFIX_PLACEHOLDER,
)
from envstore.common.events import BuildBuilt, BuildRef, BuildSubmitted
from envstore.common.hashing import specification_sha256
from envstore.common.lock import Lock, LockedPackage, locked_package_from_record
from envstore.common.settings import EnvstoreSettings, host_platform
from envstore.common.storage import LocalStorage
from envstore.packager.artifacts import oci_image
from envstore.packager.artifacts.inputs import BuildInputs
from envstore.packager.artifacts.oci_base_image import BaseImageError
from envstore.packager.artifacts.gzip_output import BLOCK_BYTES, GzipOutput
from envstore.packager.artifacts.oci_layer_plan import plan_layers
from envstore.packager.artifacts.oci_prefix import PackageFiles
from tests.registry.oci_tools import (
    busybox_base_layout,
    export_layout,
    run,
    run_in_rootfs,
    unpack,
)

NAMESPACE = "images"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class ImageSettings(EnvstoreSettings):
    """The image keys the packager reads (``image_base``, ``image_layer_budget`` …)."""

    image_base: str = ""
    image_layer_budget: int = 100


@dataclass(frozen=True)
class Image:
    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]

    @property
    def layers(self) -> list[str]:
        return [layer["digest"] for layer in self.manifest["layers"]]


@dataclass
class Images:
    """Builds images of specifications into one storage, as the packager does for builds."""

    channel_url: str
    root: Path
    base: str
    storage: LocalStorage = field(init=False)
    next_build_id: int = 1

    def __post_init__(self) -> None:
        self.storage = LocalStorage(self.settings().storage_root)

    def settings(self, **overrides: Any) -> ImageSettings:
        return ImageSettings(data_dir=self.root, image_base=self.base, **overrides)

    def blobs(self) -> set[str]:
        return {f"sha256:{path.name}" for path in (self.storage.root / "blobs" / "sha256").iterdir()}

    async def image(
        self, name: str, dependencies: list[str], variables: dict[str, str] | None = None, **settings: Any
    ) -> Image:
        build_id, self.next_build_id = self.next_build_id, self.next_build_id + 1
        specification = {"name": name, "channels": [self.channel_url], "dependencies": dependencies}
        if variables:
            specification["variables"] = variables
        spec_sha256 = specification_sha256(specification)
        scheduled_on = time.time()
        key = build_key(2, spec_sha256, scheduled_on, build_id, name, NAMESPACE)
        lock = await self._solve(dependencies)
        platform = host_platform()
        built = BuildBuilt(
            build=BuildRef(build_id=build_id, namespace=NAMESPACE, environment=name, build_key=key, spec_sha256=spec_sha256),
            lock=await self.storage.put_bytes(lock.encode()),
            prefix=str(self.root / "not-used"),
            size_bytes=0,
            package_count=len(lock.platforms[platform]),
            install_seconds=0.0,
        )
        submitted = BuildSubmitted(
            namespace=NAMESPACE, environment=name, specification=specification, spec_sha256=spec_sha256,
            platforms=[platform], artifacts=["DOCKER_MANIFEST"], scheduled_on=scheduled_on,
        )
        work = self.root / "work" / str(build_id)
        work.mkdir(parents=True)
        produced = await oci_image.produce(BuildInputs(built, submitted, lock, self.storage, self.settings(**settings), work))
        gc.collect()  # rattler objects (see TOOLING.md)
        assert produced.key == f"docker/manifest/{key}" and produced.content_type == OCI_MANIFEST
        manifest = json.loads(await self.storage.get_bytes(produced.blob))
        config = json.loads(await self.storage.get_bytes(manifest["config"]["digest"]))
        return Image(produced.blob.digest, manifest, config)

    async def _solve(self, dependencies: list[str]) -> Lock:
        platform = host_platform()
        gateway = rattler.Gateway(cache_dir=self.root / "repodata")
        records = await rattler.solve(
            sources=[rattler.Channel(self.channel_url)], specs=dependencies, gateway=gateway, platforms=[platform, "noarch"]
        )
        lock = Lock(channels=[self.channel_url], platforms={platform: [locked_package_from_record(r) for r in records]})
        del records, gateway
        gc.collect()
        return lock

    def layer_members(self, digest: str) -> list[tarfile.TarInfo]:
        data = (self.storage.root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as archive:
            return archive.getmembers()


@pytest.fixture
def busybox_base(tmp_path: Path) -> str:
    (tmp_path / "base").mkdir()
    return busybox_base_layout(tmp_path / "base")


@pytest.fixture
def images(channel_url: str, tmp_path: Path, busybox_base: str) -> Images:
    return Images(channel_url, tmp_path / "data", busybox_base)


async def test_image_read_back_by_skopeo_and_umoci_runs_from_the_rootfs(images: Images, tmp_path: Path) -> None:
    image = await images.image("five", list(FIVE_PACKAGE_SPEC), variables={"GREETING": "hi there"})
    layout = tmp_path / "layout"
    export_layout(images.storage.root, image.digest, layout, "five")

    inspected = json.loads(run(["skopeo", "inspect", f"oci:{layout}:five"]))
    assert (inspected["Architecture"], inspected["Os"]) == ("amd64", "linux")
    assert inspected["Env"] == [
        "PATH=/opt/conda/bin:/usr/local/bin:/usr/bin:/bin",
        "CONDA_PREFIX=/opt/conda",
        "GREETING=hi there",
    ]
    assert inspected["Labels"]["org.envstore.namespace"] == NAMESPACE
    assert inspected["Labels"]["org.envstore.environment"] == "five"
    assert len(inspected["Labels"]["org.envstore.spec-sha256"]) == 64
    assert inspected["Labels"]["base"] == "busybox"  # the base's labels are kept
    # One layer for the base, one per package, one for the environment.
    assert len(image.layers) == 1 + len(FIVE_PACKAGE_SPEC) + 2 + 1

    rootfs = unpack(f"{layout}:five", tmp_path / "bundle")
    assert run_in_rootfs(rootfs, "/opt/conda/bin/hello") == "hello 2.1 prefix=/opt/conda greeting-data=2.0\n"
    activated = run_in_rootfs(
        rootfs, "/bin/sh", "-c", '. /opt/conda/etc/envstore/activate.sh && echo "$CONDA_PREFIX|$GREETING|$PATH"'
    )
    assert activated.startswith("/opt/conda|hi there|/opt/conda/bin:")
    assert json.loads((rootfs / "opt/conda/conda-meta/state").read_text()) == {"env_vars": {"GREETING": "hi there"}}
    records = [json.loads(path.read_text()) for path in (rootfs / "opt/conda/conda-meta").glob("*.json")]
    assert sorted(record["name"] for record in records) == sorted(
        ["greeting-data", "hello", "libhello", "textutils", "tinyjson"]
    )
    # Nothing in the image names the packager's machine; only conda-meta records name the build
    # placeholder (as conda's records do).
    for path in (rootfs / "opt" / "conda").rglob("*"):
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            assert str(images.root).encode() not in content, path
            assert path.parent.name == "conda-meta" or PREFIX_PLACEHOLDER.encode() not in content, path
    # Each layer's diff_id is the sha256 of its uncompressed tar, its digest that of the blob.
    for descriptor, diff_id in zip(image.manifest["layers"], image.config["rootfs"]["diff_ids"]):
        blob = (layout / "blobs" / "sha256" / descriptor["digest"].removeprefix("sha256:")).read_bytes()
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == descriptor["digest"]
        assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == diff_id


async def test_shared_layers_identical_rebuilds_and_a_one_package_change(images: Images) -> None:
    five = await images.image("five", list(FIVE_PACKAGE_SPEC))
    before_rebuild = images.blobs()
    rebuilt = await images.image("five", list(FIVE_PACKAGE_SPEC))  # a new build of the same spec
    assert rebuilt.digest == five.digest
    assert images.blobs() == before_rebuild  # the rebuild wrote nothing new

    before_maths = images.blobs()
    maths = await images.image("five-and-maths", [*FIVE_PACKAGE_SPEC, "libmath"])
    base, *five_packages, five_environment = five.layers
    assert maths.layers[0] == base
    assert set(five_packages) <= set(maths.layers)
    new_layers = set(maths.layers) - set(five.layers)
    assert len(new_layers) == 2 and maths.layers[-1] in new_layers  # libmath's layer, the environment's
    # Written for the second image: its two new layers, its configuration and its manifest.
    written = images.blobs() - before_maths
    assert new_layers | {maths.manifest["config"]["digest"], maths.digest} <= written
    assert len(written - new_layers - {maths.manifest["config"]["digest"], maths.digest}) == 1  # its lock

    older_json = await images.image("five", ["hello 2.1.*", "tinyjson 1.0.*", "textutils"])
    assert len(older_json.layers) == len(five.layers)
    changed = [(old, new) for old, new in zip(five.layers, older_json.layers) if old != new]
    assert len(changed) == 2 and changed[-1] == (five_environment, older_json.layers[-1])
    assert {member.name for member in images.layer_members(changed[0][1]) if member.isfile()} == {
        "opt/conda/share/tinyjson/README.txt",
        "opt/conda/share/tinyjson/version.txt",
    }


async def test_layers_are_normalized_tars_with_the_archives_mtimes(images: Images) -> None:
    image = await images.image("five", list(FIVE_PACKAGE_SPEC))
    for digest in image.layers[1:]:
        blob = (images.storage.root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        assert blob[3] == 0 and blob[4:8] == bytes(4)  # gzip: no file name, mtime 0
        members = images.layer_members(digest)
        assert [m.name.split("/") for m in members] == sorted(m.name.split("/") for m in members)
        for member in members:
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert member.mode in ((0o755,) if member.isdir() else (0o755, 0o644) if member.isfile() else (0o777,))
        directories = [m for m in members if m.isdir()]
        assert directories[:2] == [m for m in members if m.name in ("opt", "opt/conda")]
        assert all(m.mtime == 0 for m in directories)
    hello_layer = next(
        d for d in image.layers if "opt/conda/bin/hello" in {m.name for m in images.layer_members(d)}
    )
    files = {m.name: m for m in images.layer_members(hello_layer) if m.isfile()}
    # Package files keep their archive's mtime (so a python's .pyc files stay valid); files whose
    # prefix was rewritten get one second more, as rattler links them: both follow from the package.
    assert files["opt/conda/bin/hello-binary-prefix"].mtime == BUILD_TIMESTAMP_SECONDS
    assert files["opt/conda/bin/hello"].mtime == files["opt/conda/share/hello/prefix.bin"].mtime == BUILD_TIMESTAMP_SECONDS + 1
    assert files["opt/conda/bin/hello"].mode == 0o755 and files["opt/conda/share/hello/prefix.bin"].mode == 0o644


async def test_past_the_layer_budget_small_packages_share_layers(images: Images, tmp_path: Path) -> None:
    # A budget of 4: the base, the environment layer, and two layers for the five packages.
    image = await images.image("five", list(FIVE_PACKAGE_SPEC), image_layer_budget=4)
    assert len(image.layers) == 4
    assert (await images.image("five", list(FIVE_PACKAGE_SPEC), image_layer_budget=4)).digest == image.digest
    export_layout(images.storage.root, image.digest, tmp_path / "layout", "grouped")
    rootfs = unpack(f"{tmp_path / 'layout'}:grouped", tmp_path / "bundle")
    assert run_in_rootfs(rootfs, "/opt/conda/bin/hello") == "hello 2.1 prefix=/opt/conda greeting-data=2.0\n"
    history = [entry["created_by"] for entry in image.config["history"]]
    assert len(history) == 4 and history[0] == "tests: busybox-static"


def test_layer_plan_keeps_big_packages_alone_and_groups_small_ones_stably() -> None:
    def package(name: str, size: int) -> PackageFiles:
        return PackageFiles(name, f"{name}=1=0", (f"lib/{name}",), size)

    packages = tuple(package(f"small-{i:02}", 1000 + i) for i in range(40)) + tuple(
        package(f"big-{i}", 10**8 + i) for i in range(5)
    )
    plan = plan_layers(packages, 20)
    assert len(plan) <= 20
    assert sorted(p.name for group in plan for p in group) == sorted(p.name for p in packages)
    assert all((p,) in plan for p in packages if p.name.startswith("big-"))
    # One more package, smaller than those kept alone, changes one group; every other layer stays.
    grown = plan_layers((*packages, package("small-new", 10)), 20)

    def names(groups: list[tuple[PackageFiles, ...]]) -> set[tuple[str, ...]]:
        return {tuple(p.name for p in group) for group in groups}

    assert len(names(grown) - names(plan)) == 1 and len(names(plan) - names(grown)) == 1
    assert plan_layers(packages, len(packages)) == [(p,) for p in sorted(packages, key=lambda p: p.name)]


async def test_base_image_of_another_platform_is_refused(images: Images, tmp_path: Path) -> None:
    (tmp_path / "arm").mkdir()
    images.base = busybox_base_layout(tmp_path / "arm", architecture="arm64")
    with pytest.raises(BaseImageError, match="is linux/arm64; this environment needs linux/amd64"):
        await images.image("five", list(FIVE_PACKAGE_SPEC))


async def test_scratch_base_gives_the_environment_alone(images: Images, tmp_path: Path) -> None:
    images.base = "scratch"
    image = await images.image("five", list(FIVE_PACKAGE_SPEC))
    assert len(image.layers) == 5 + 1
    assert image.config["config"]["Env"][0] == "PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert "Cmd" not in image.config["config"]
    export_layout(images.storage.root, image.digest, tmp_path / "layout", "scratch")
    rootfs = unpack(f"{tmp_path / 'layout'}:scratch", tmp_path / "bundle")
    assert sorted(path.name for path in rootfs.iterdir()) == ["opt"]


def test_parallel_gzip_is_gzip_and_does_not_depend_on_threads_or_write_sizes(tmp_path: Path) -> None:
    # Several blocks: random bytes (incompressible) and text (matches across the 1 MiB cuts).
    data = os.urandom(3 * BLOCK_BYTES // 2) + b"conda environments in images\n" * 150_000
    outputs = []
    for threads, piece in ((1, 65_536), (4, BLOCK_BYTES), (2, 1_000_003)):
        target = tmp_path / f"{threads}.gz"
        with GzipOutput(target, threads=threads, hash_uncompressed=True) as output:
            for start in range(0, len(data), piece):
                output.write(data[start : start + piece])
        written = target.read_bytes()
        outputs.append(written)
        assert output.blob is not None
        assert (output.blob.digest, output.blob.size) == ("sha256:" + hashlib.sha256(written).hexdigest(), len(written))
        assert output.uncompressed_digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert outputs[0] == outputs[1] == outputs[2]
    assert gzip.decompress(outputs[0]) == data
    assert len(outputs[0]) < len(data) * 0.6
